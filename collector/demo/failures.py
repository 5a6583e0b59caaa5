"""Real exceptions for the demo shop's failing spans, raised by real code at the shop's paths.

A failing span records an exception built here: small stand-ins for the shop's source files
(and for the libraries it calls: requests, psycopg, grpc; json is the real one) are compiled
with their repository paths as file names, registered with :mod:`linecache` so tracebacks
show their lines, and called into.  So an exception's stack trace holds real frames with
real line numbers, a ``def`` sits at its span's ``code.line.number``, and a caller that
wraps its callee's error (``raise ... from exc``) makes a real chain.

A chain is a list of :class:`Link`, outermost first: the span that records the exception,
the failing callees its error came from, and last the callee that threw.  Each generated
function opens ``with tracer.start_as_current_span(...)`` as instrumented code does; the
outermost scope keeps the exception leaving it, so the recorded traceback starts at the
recording function, as the OpenTelemetry SDK would record it.

Nothing here draws random numbers: the same chain gives the same exception text (frames
inside the real ``json`` package carry this interpreter's paths).
"""

from __future__ import annotations

import functools
import http
import json
import linecache
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from attribution.model import AttrValue

__all__ = ["SITE_PACKAGES", "TYPES", "Link", "Site", "raise_chain"]

SITE_PACKAGES: Final = "/usr/lib/python3/site-packages"

Role = Literal["pass", "wrap", "raise", "json", "lookup", "http", "http_wrap", "db", "grpc"]


@dataclass(frozen=True)
class Site:
    """A function of the shop: its absolute file, qualified name and ``def`` line."""

    file: str
    function: str  # e.g. shop.payments.retry.circuit.CircuitBreaker.check
    line: int
    span: str  # the span name its tracing scope opens


@dataclass(frozen=True)
class Link:
    """One failing span of a chain: where it runs, the exception it raises (a key of
    :data:`TYPES`; empty: the error only passes through), its message and the attributes
    of its failure (HTTP status, URL, query)."""

    site: Site
    exc: str
    message: str = ""
    detail: Mapping[str, AttrValue] | None = None


@dataclass(frozen=True)
class _Type:
    cls: str  # class name
    module: str  # the module defining it (no frame of it shows in a traceback)
    base: str
    role: Role  # how a function raising it fails
    raise_expr: str = "{cls}(message)"  # for role "wrap"

    @property
    def file(self) -> str:
        """``shop.a.b.errors`` lives in ``/srv/shop/services/a/b/errors.py``; libraries in site-packages."""
        parts = self.module.split(".")
        if parts[0] == "shop":
            return "/srv/shop/services/" + "/".join(parts[1:]) + ".py"
        return f"{SITE_PACKAGES}/" + "/".join(parts) + ".py"


def _t(cls: str, module: str, base: str, role: Role, raise_expr: str = "{cls}(message)") -> _Type:
    return _Type(cls, module, base, role, raise_expr)


# The exceptions the shop raises, by the name its planner uses.
TYPES: Final[Mapping[str, _Type]] = {
    "IdempotencyStoreTimeout": _t(
        "IdempotencyStoreTimeout", "shop.payments.retry.errors", "TimeoutError", "raise"
    ),
    "CircuitStateUnavailable": _t(
        "CircuitStateUnavailable", "shop.payments.retry.errors", "RuntimeError", "json"
    ),
    "RetryPolicyError": _t("RetryPolicyError", "shop.payments.retry.errors", "LookupError", "lookup"),
    "BackoffInterrupted": _t("BackoffInterrupted", "shop.payments.retry.errors", "RuntimeError", "raise"),
    "GatewayError": _t("GatewayError", "shop.payments.gateway.errors", "Exception", "raise"),
    "ModelUnavailable": _t("ModelUnavailable", "shop.payments.fraud.errors", "Exception", "json"),
    "PaymentError": _t("PaymentError", "shop.payments.api.errors", "Exception", "wrap"),
    "LedgerError": _t("LedgerError", "shop.payments.ledger.errors", "Exception", "wrap"),
    "UpstreamError": _t("UpstreamError", "shop.frontend.web.errors", "Exception", "wrap"),
    "SearchUnavailable": _t("SearchUnavailable", "shop.frontend.search.errors", "Exception", "http_wrap"),
    "CartStoreError": _t("CartStoreError", "shop.checkout.cart.errors", "Exception", "wrap"),
    "CheckoutError": _t("CheckoutError", "shop.checkout.api.errors", "Exception", "wrap"),
    "OrderStoreError": _t("OrderStoreError", "shop.checkout.orders.errors", "Exception", "wrap"),
    "StockUpdateError": _t("StockUpdateError", "shop.inventory.stock.errors", "Exception", "wrap"),
    "ReleaseError": _t("ReleaseError", "shop.inventory.reservations.errors", "Exception", "wrap"),
    "ErpTimeout": _t("ErpTimeout", "shop.inventory.legacy.errors", "TimeoutError", "raise"),
    "HTTPException": _t(
        "HTTPException",
        "fastapi.exceptions",
        "Exception",
        "wrap",
        "HTTPException(status_code=500, detail=message)",
    ),
    "psycopg.errors.DeadlockDetected": _t("DeadlockDetected", "psycopg.errors", "Exception", "db"),
    "requests.exceptions.HTTPError": _t("HTTPError", "requests.exceptions", "OSError", "http"),
    "grpc.RpcError": _t("_InactiveRpcError", "grpc._channel", "Exception", "grpc"),  # what grpc raises
}

# What the json and lookup failures read.
_BODIES: Final = {
    "CircuitStateUnavailable": '{"state": "half_open", "failures": 3, "opened_at": 1767',  # a torn write
    "ModelUnavailable": "<html><body><h1>503 Service Unavailable</h1></body></html>",
}
_POLICIES: Final = {"stripe": (3, 40), "adyen": (3, 40)}
_POLICY_KEY: Final = "adyen-eu"


# --------------------------------------------------------------------------------------
# Library stand-ins: class bodies of the exception types, and the library code that raises.

_CLASS_BODY: Final[Mapping[str, str]] = {
    "HTTPException": (
        "    def __init__(self, status_code, detail=None):\n"
        "        super().__init__(status_code, detail)\n"
        "        self.status_code = status_code\n"
        "        self.detail = detail\n"
        "\n"
        "    def __str__(self):\n"
        '        return f"{self.status_code}: {self.detail}"\n'
    ),
    "HTTPError": (
        "    def __init__(self, *args, response=None):\n"
        "        super().__init__(*args)\n"
        "        self.response = response\n"
    ),
    "_InactiveRpcError": (
        "    def __init__(self, state):\n"
        "        super().__init__()\n"
        "        self._state = state\n"
        "\n"
        "    def __str__(self):\n"
        "        return (\n"
        '            f"<{self.__class__.__name__} of RPC that terminated with:\\n"\n'
        '            f"\\tstatus = {self._state.code}\\n"\n'
        "            f'\\tdetails = \"{self._state.details}\"\\n>'\n"
        "        )\n"
    ),
}

_REQUESTS_MODELS: Final = (
    (
        999,
        '''    def raise_for_status(self):
        """Raises :class:`HTTPError`, if one occurred."""
        http_error_msg = ""
        if 400 <= self.status_code < 500:
            http_error_msg = f"{self.status_code} Client Error: {self.reason} for url: {self.url}"
        elif 500 <= self.status_code < 600:
            http_error_msg = f"{self.status_code} Server Error: {self.reason} for url: {self.url}"
        if http_error_msg:
            raise HTTPError(http_error_msg, response=self)

    def json(self, **kwargs):
        return complexjson.loads(self.text, **kwargs)
''',
    ),
)
_PSYCOPG_CURSOR: Final = (
    (
        92,
        '''    def execute(self, query, params=None, *, prepare=None, binary=None):
        """Execute a query or command to the database."""
        sqlstate, message = self._pgconn.result(query, params)
        if sqlstate != "00000":
            raise e.lookup(sqlstate)(message)
        return self
''',
    ),
)
_GRPC_CHANNEL: Final = (
    (
        1003,
        """def _end_unary_response_blocking(state, call, with_call, deadline):
    if state.code is StatusCode.OK:
        return (state.response, call) if with_call else state.response
    raise _InactiveRpcError(state)
""",
    ),
    (
        1160,
        """    def __call__(self, request, timeout=None, metadata=None, credentials=None,
                 wait_for_ready=None, compression=None):
        state, call = self._blocking(request, timeout, metadata, credentials, wait_for_ready, compression)
        return _end_unary_response_blocking(state, call, False, None)
""",
    ),
)


def _layout(header: str, blocks: Sequence[tuple[int, str]]) -> str:
    """``header``, then each block starting at its line; blocks must not overlap."""
    lines = header.splitlines()
    for line, block in sorted(blocks):
        if len(lines) >= line:
            raise ValueError(f"line {line} is taken: {block.splitlines()[0]!r}")
        lines.extend([""] * (line - 1 - len(lines)))
        lines.extend(block.splitlines())
    return "\n".join(lines) + "\n"


def _exec(file: str, module: str, source: str, names: Mapping[str, object]) -> dict[str, Any]:
    """Compile ``source`` as ``file``, run it as module ``module``, and let tracebacks show it."""
    namespace: dict[str, Any] = {"__name__": module, "__file__": file, **names}
    exec(compile(source, file, "exec"), namespace)
    _LINES[file] = (len(source), None, source.splitlines(keepends=True), file)
    linecache.cache[file] = _LINES[file]
    return namespace


_LINES: dict[str, tuple[int, None, list[str], str]] = {}


class _Lib:
    """The library stand-ins and the shop's exception classes, compiled once."""

    def __init__(self) -> None:
        self.classes: dict[str, type[BaseException]] = {}
        by_module: dict[tuple[str, str], list[_Type]] = {}
        for t in TYPES.values():
            by_module.setdefault((t.module, t.file), []).append(t)
        for (module, file), types in sorted(by_module.items()):
            header = f'"""{module}."""\n'
            if module == "grpc._channel":
                continue  # below, with its functions
            body = "".join(
                f"\n\nclass {t.cls}({t.base}):\n" + _CLASS_BODY.get(t.cls, f"    {t.cls!r}\n") for t in types
            )
            ns = _exec(file, module, header + body, {})
            for t in types:
                self.classes[t.cls] = ns[t.cls]
        http_error = self.classes["HTTPError"]
        ns = _exec(
            f"{SITE_PACKAGES}/requests/models.py",
            "requests.models",
            _layout('"""requests.models."""\n\n\nclass Response:', _REQUESTS_MODELS),
            {"HTTPError": http_error, "complexjson": json},
        )
        self.response: type = ns["Response"]
        errors = type(
            "errors", (), {"lookup": staticmethod(lambda sqlstate: self.classes["DeadlockDetected"])}
        )
        ns = _exec(
            f"{SITE_PACKAGES}/psycopg/cursor.py",
            "psycopg.cursor",
            _layout('"""psycopg.cursor."""\n\n\nclass Cursor:', _PSYCOPG_CURSOR),
            {"e": errors},
        )
        self.cursor: type = ns["Cursor"]
        channel = _layout(
            '"""grpc._channel."""\n\n\nclass _InactiveRpcError(RpcError):\n'
            + _CLASS_BODY["_InactiveRpcError"],
            _GRPC_CHANNEL[:1],
        )
        channel = _layout(channel + "\n\nclass _UnaryUnaryMultiCallable:", _GRPC_CHANNEL[1:])
        ns = _exec(
            f"{SITE_PACKAGES}/grpc/_channel.py",
            "grpc._channel",
            channel,
            {"RpcError": _rpc_error(), "StatusCode": _StatusCode},
        )
        self.classes["_InactiveRpcError"] = ns["_InactiveRpcError"]
        self.stub: type = ns["_UnaryUnaryMultiCallable"]


def _rpc_error() -> type[BaseException]:
    ns = _exec(
        f"{SITE_PACKAGES}/grpc/__init__.py",
        "grpc",
        '"""grpc."""\n\n\nclass RpcError(Exception):\n    """Raised by the gRPC library."""\n',
        {},
    )
    cls: type[BaseException] = ns["RpcError"]
    return cls


class _StatusCode:
    """``grpc.StatusCode``: shows as ``StatusCode.NAME``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StatusCode.{self.name}"

    __str__ = __repr__


_StatusCode.OK = _StatusCode("OK")  # type: ignore[attr-defined]


class _Reply:
    """What a throwing function reads: the failure's message and its library objects."""

    __slots__ = ("body", "cursor", "error", "key", "query", "request", "response", "stub", "table")

    def __init__(self, error: str, **values: Any) -> None:
        self.error = error
        self.body = values.get("body", "")
        self.table = values.get("table", {})
        self.key = values.get("key", "")
        self.response = values.get("response")
        self.cursor = values.get("cursor")
        self.query = values.get("query", "")
        self.stub = values.get("stub")
        self.request = values.get("request")


class _Scopes:
    """``tracer`` inside the generated functions: the outermost scope keeps what leaves it."""

    def __init__(self) -> None:
        self.depth = 0
        self.caught: BaseException | None = None

    def start_as_current_span(self, name: str) -> _Scopes:
        return self

    def __enter__(self) -> _Scopes:
        self.depth += 1
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.depth -= 1
        if self.depth == 0 and ev is not None:
            self.caught = ev
            return True
        return False


# --------------------------------------------------------------------------------------
# The shop's files: generated from the functions chains run through, each at its line.

_BODY: Final[Mapping[Role, str]] = {
    "pass": "{sig}(step):\n    with tracer.start_as_current_span({span!r}):\n        return step()\n",
    "wrap": (
        "{sig}(step, message):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        try:\n"
        "            return step()\n"
        "        except Exception as exc:\n"
        "            raise {raise_expr} from exc\n"
    ),
    "raise": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        if reply.error:\n"
        "            raise {cls}(reply.error)\n"
        "        return reply.body\n"
    ),
    "json": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        try:\n"
        "            return json.loads(reply.body)\n"
        "        except ValueError as exc:\n"
        "            raise {cls}(reply.error) from exc\n"
    ),
    "lookup": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        try:\n"
        "            return reply.table[reply.key]\n"
        "        except KeyError as exc:\n"
        "            raise {cls}(reply.error) from exc\n"
    ),
    "http": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        response = reply.response\n"
        "        response.raise_for_status()\n"
        "        return response.json()\n"
    ),
    "http_wrap": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        try:\n"
        "            reply.response.raise_for_status()\n"
        "        except HTTPError as exc:\n"
        "            raise {cls}(reply.error) from exc\n"
        "        return reply.response.json()\n"
    ),
    "db": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        return reply.cursor.execute(reply.query)\n"
    ),
    "grpc": (
        "{sig}(reply):\n"
        "    with tracer.start_as_current_span({span!r}):\n"
        "        return reply.stub(reply.request, timeout=5.0)\n"
    ),
}


def _split(function: str) -> tuple[str, str, str]:
    """``a.b.mod.Class.fn`` -> (``a.b.mod``, ``Class``, ``fn``); no class: ``""``."""
    parts = function.split(".")
    for i, part in enumerate(parts[:-1]):
        if part[:1].isupper():
            return ".".join(parts[:i]), ".".join(parts[i:-1]), parts[-1]
    return ".".join(parts[:-1]), "", parts[-1]


class _Files:
    """The shop's generated files, rebuilt when a chain first runs through a new function
    (every ``def`` keeps its line, so what a traceback shows does not change)."""

    def __init__(self, lib: _Lib, scopes: _Scopes) -> None:
        self.lib = lib
        self.scopes = scopes
        self.functions: dict[str, dict[str, tuple[Site, Role, str]]] = {}
        self.namespaces: dict[str, dict[str, Any]] = {}

    def function(self, site: Site, role: Role, exc: str) -> Callable[..., Any]:
        known = self.functions.setdefault(site.file, {})
        entry = (site, role, exc)
        if site.function not in known:
            known[site.function] = entry
            self.namespaces.pop(site.file, None)
        elif known[site.function][1:] != entry[1:]:
            raise ValueError(f"{site.function} fails as {known[site.function][1:]} and as {entry[1:]}")
        ns = self.namespaces.get(site.file)
        if ns is None:
            ns = self.namespaces[site.file] = self._build(site.file)
        _, cls, name = _split(site.function)
        if cls:
            return getattr(ns[cls](), name)  # type: ignore[no-any-return]
        return ns[name]  # type: ignore[no-any-return]

    def _build(self, file: str) -> dict[str, Any]:
        entries = sorted(self.functions[file].values(), key=lambda e: e[0].line)
        module = _split(entries[0][0].function)[0]
        blocks: list[tuple[int, str]] = []
        last_class = ""
        for site, role, exc in entries:
            _, cls, name = _split(site.function)
            t = TYPES.get(exc)
            text = _BODY[role].format(
                sig=f"def {name}",
                span=site.span,
                cls=t.cls if t else "",
                raise_expr=(t.raise_expr if t else "").format(cls=t.cls if t else ""),
            )
            if cls:
                text = "".join("    " + ln if ln.strip() else ln for ln in text.splitlines(keepends=True))
                text = text.replace("(step", "(self, step", 1).replace("(reply", "(self, reply", 1)
                if cls != last_class:
                    text = f"class {cls}:\n" + text
                    blocks.append((site.line - 1, text))
                else:
                    blocks.append((site.line, text))
            else:
                blocks.append((site.line, text))
            last_class = cls
        names: dict[str, object] = {
            "tracer": self.scopes,
            "json": json,
            "HTTPError": self.lib.classes["HTTPError"],
        }
        names.update({t.cls: self.lib.classes[t.cls] for t in TYPES.values()})
        return _exec(file, module, _layout(f'"""{module}."""\n', blocks), names)


@functools.cache
def _files() -> _Files:
    return _Files(_Lib(), _Scopes())


def _reply(lib: _Lib, link: Link) -> _Reply:
    detail = link.detail or {}
    role = TYPES[link.exc].role
    if role in ("http", "http_wrap"):
        status = int(str(detail.get("http.response.status_code", detail.get("http.status_code", 500))))
        response = lib.response()
        response.status_code = status
        response.reason = http.HTTPStatus(status).phrase
        response.url = str(detail.get("url.full", detail.get("http.url", "")))
        response.text = ""
        return _Reply(link.message, response=response)
    if role == "db":
        cursor = lib.cursor()
        table = detail.get("db.collection.name", "")
        cursor._pgconn = _PgConn(
            "40P01",
            "deadlock detected\nDETAIL:  Process 2817 waits for ShareLock on transaction 90211; "
            f'blocked by process 2794.\nCONTEXT:  while locking tuple (0,7) in relation "{table}"',
        )
        return _Reply(link.message, cursor=cursor, query=str(detail.get("db.query.text", "")))
    if role == "grpc":
        stub = lib.stub()
        method = f"/{detail.get('rpc.service', '')}/{detail.get('rpc.method', '')}"
        stub._blocking = functools.partial(_unavailable, f"{method}: {link.message or 'unavailable'}")
        return _Reply(link.message, stub=stub, request=b"")
    if role == "lookup":
        return _Reply(link.message, table=_POLICIES, key=_POLICY_KEY)
    return _Reply(link.message, body=_BODIES.get(link.exc, ""))


class _PgConn:
    def __init__(self, sqlstate: str, message: str) -> None:
        self._result = (sqlstate, message)

    def result(self, query: str, params: object) -> tuple[str, str]:
        return self._result


class _RpcState:
    def __init__(self, details: str) -> None:
        self.code = _StatusCode("UNAVAILABLE")
        self.details = details
        self.response = None


def _unavailable(details: str, *args: object) -> tuple[_RpcState, None]:
    return _RpcState(details), None


def raise_chain(chain: Sequence[Link]) -> BaseException:
    """The exception the first link's span records: the last link throws, every link before
    it runs its callee and, if it names an exception, wraps the error in it."""
    if not chain:
        raise ValueError("an empty chain")
    files = _files()
    for file, entry in _LINES.items():  # someone may have cleared linecache
        linecache.cache.setdefault(file, entry)
    *callers, thrower = chain
    role = TYPES[thrower.exc].role if thrower.exc else "pass"
    if role in ("pass", "wrap"):
        raise ValueError(f"{thrower.site.function} is last in the chain but throws nothing of its own")
    step: Callable[[], Any] = functools.partial(
        files.function(thrower.site, role, thrower.exc), _reply(files.lib, thrower)
    )
    for link in reversed(callers):
        if not link.exc:
            step = functools.partial(files.function(link.site, "pass", ""), step)
            continue
        if TYPES[link.exc].role != "wrap":
            raise ValueError(f"{link.site.function} throws {link.exc} but has a failing callee")
        step = functools.partial(files.function(link.site, "wrap", link.exc), step, link.message)
    scopes = files.scopes
    scopes.caught = None
    step()
    caught, scopes.caught = scopes.caught, None
    if caught is None:
        raise RuntimeError(f"{chain[0].site.function} did not raise")
    return caught
