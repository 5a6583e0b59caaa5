"""OTLP/HTTP and the JSON endpoints: an ASGI app over a trace sink, and uvicorn serving it.

Endpoints (defaults; see :class:`collector.app.settings.ReceiverSettings`)::

    HTTP :4318  POST /v1/traces             OTLP/HTTP: application/x-protobuf or application/json
                POST /v1/logs               OTLP/HTTP logs, the same (when the sink is a LogSink)
                POST /v1/deploys            deploy events (schemas/events/deploy.schema.json)
                POST /v1/incidents          incident events (schemas/events/incident.schema.json)
                POST /v1/webhooks/github    GitHub deployment_status events (collector.receivers.github)
                GET  /api/v1/modules        the JSON of `prodloop query modules --format json`
                GET  /openapi.json          the OpenAPI description of all these (collector.receivers.openapi)

Bodies may be gzip, deflate or zstd (:mod:`collector.receivers.bodies`).  The receiver never
parses OTLP itself: trace requests go, as raw bytes, to a :class:`collector.ports.TraceSink`,
log requests to a :class:`collector.ports.LogSink`.  Answers follow the OTLP specification,
through the one error -> status map of :mod:`collector.receivers.status`.  With a bearer token
set, every endpoint but the GitHub webhook requires ``Authorization: Bearer TOKEN``; refused
requests are logged with their origin, never their payload.

The server is uvicorn (HTTP/1.1 parsed by httptools, i.e. llhttp) on its own event loop in
a background thread, serving a plain ASGI app rather than Starlette: seven fixed routes need no
router, and the app must own the body (read incrementally against the limit, drained or cut on a
413) and answer errors in the OTLP encodings, which a framework's request and error handling
would stand between.  Sink calls block (a WAL fsync, broker acks), so they run in worker threads
bounded by a capacity limiter; the event loop only reads and writes.  docs/receiver.md has more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import anyio
import uvicorn
from anyio import to_thread
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from attribution.model import DeployEvent, IncidentEvent
from attribution.timeparse import parse_time
from collector.codec.events import decode_deploy, decode_incident
from collector.errors import ConfigError, EventError, RequestError
from collector.ports import Accepted, JsonObject, LogSink, ModulesQuery, TraceSink, parse_splits
from collector.receivers.auth import bearer_matches
from collector.receivers.bodies import (
    EVENT_MEDIA_TYPES,
    JSON,
    PROTOBUF,
    content_encoding,
    decompress,
    events_from_body,
    media_type,
)
from collector.receivers.github import GithubDeliveries, GithubWebhook
from collector.receivers.openapi import openapi_document
from collector.receivers.status import Refusal, export_logs_response, export_response, refusal, status_body

log = logging.getLogger("prodloop.receiver")

_MAX_EVENT_ERRORS = 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/traces": ("POST",),
    "/v1/logs": ("POST",),
    "/v1/deploys": ("POST",),
    "/v1/incidents": ("POST",),
    "/v1/webhooks/github": ("POST",),
    "/api/v1/modules": ("GET",),
    "/openapi.json": ("GET",),
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How much of the server clients may hold (the receiver.http_* settings)."""

    max_connections: int
    max_header_bytes: int
    header_timeout_s: float
    idle_timeout_s: int


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    peer: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False


class _Disconnected(Exception):
    """The client went away before its request was read."""


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server side of TLS from a PEM certificate chain and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"receiver TLS: cannot load the certificate and key: {exc}") from None
    return ctx


class HttpApp:
    """The HTTP endpoints as an ASGI app, over a :class:`~collector.ports.TraceSink` (and a
    :class:`~collector.ports.LogSink` for ``/v1/logs``: without one, that endpoint answers 404).
    At most ``workers`` sink calls run at once, each in a worker thread."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        max_request_bytes: int,
        logs: LogSink | None = None,
        bearer_token: str = "",
        github_secret: str = "",
        github_deliveries: GithubDeliveries | None = None,
        workers: int,
        body_timeout_s: float,
        max_header_bytes: int,
    ) -> None:
        self.sink = sink
        self.logs = logs
        self.max_request_bytes = max_request_bytes
        self.body_timeout_s = body_timeout_s
        self.max_header_bytes = max_header_bytes
        self._workers = workers
        self._limiter: anyio.CapacityLimiter | None = None  # made on the server's loop
        self._token = bearer_token.encode()
        self.github = GithubWebhook(sink, github_secret, github_deliveries)
        self._openapi = json.dumps(openapi_document()).encode()

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # the first of repeated headers, as http.server had it
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        client = scope.get("client")
        req = _Request(
            scope["method"],
            scope["path"].rstrip("/") or "/",
            scope["query_string"].decode("latin-1"),
            headers,
            client[0] if client else "",
        )
        otlp = req.path in ("/v1/traces", "/v1/logs")
        ctype = PROTOBUF if otlp and media_type(headers.get("content-type")) == PROTOBUF else JSON
        try:
            resp = await self._dispatch(req, receive)
        except _Disconnected:
            return
        except Exception as exc:
            r = refusal(exc)
            if r.internal:
                log.error("%s %s failed", req.method, req.path, exc_info=exc)
            resp = self._refusal(r, otlp, ctype)
        await _send(send, resp)

    @staticmethod
    def _refusal(r: Refusal, otlp: bool, ctype: str) -> _Response:
        body = (
            status_body(r.http_status, r.message, ctype)
            if otlp
            else json.dumps({"error": r.message}).encode()
        )
        return _Response(r.http_status, body, ctype, r.headers, r.close)

    async def _dispatch(self, req: _Request, receive: Receive) -> _Response:
        head = len(req.path) + len(req.query) + sum(len(k) + len(v) + 4 for k, v in req.headers.items())
        if head > self.max_header_bytes:  # _HttpTools bounds a head that arrives in pieces
            raise RequestError(
                431,
                f"the request head is {head} bytes; the limit is {self.max_header_bytes} "
                "(receiver.http_max_header_bytes)",
                close=True,
            )
        allowed = ROUTES.get(req.path)
        if allowed is None:
            raise RequestError(
                404,
                f"no endpoint {req.path}: prodloop serves POST /v1/traces, /v1/logs, /v1/deploys, /v1/incidents, "
                "/v1/webhooks/github and GET /api/v1/modules, /openapi.json",
                close=req.headers.get("content-length") not in (None, "0"),
            )
        if req.method not in allowed:
            raise RequestError(
                405,
                f"{req.path} takes {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
                close=True,
            )
        if req.path != "/v1/webhooks/github":
            self._check_bearer(req)
        if req.path == "/openapi.json":
            return _Response(200, self._openapi)
        handler: Callable[[_Request], _Response]
        if req.path == "/v1/traces":
            handler = self._traces
        elif req.path == "/v1/logs":
            handler = self._logs
        elif req.path == "/v1/deploys":
            handler = partial(self._events, kind="deploy")
        elif req.path == "/v1/incidents":
            handler = partial(self._events, kind="incident")
        elif req.path == "/v1/webhooks/github":
            handler = self._github
        else:
            handler = self._modules
        if req.method == "POST":
            self._precheck(req)
            req = replace(req, body=await self._read_body(req, receive))
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._workers)
        return await to_thread.run_sync(handler, req, limiter=self._limiter)

    def _precheck(self, req: _Request) -> None:
        """Refuse what needs no body to refuse (before reading it)."""
        if req.path == "/v1/logs" and self.logs is None:
            raise RequestError(
                404,
                "no endpoint /v1/logs: this receiver takes no logs (they are taken in direct mode)",
                close=req.headers.get("content-length") not in (None, "0"),
            )
        if req.path in ("/v1/traces", "/v1/logs"):
            _otlp_encoding(req)
        elif req.path in ("/v1/deploys", "/v1/incidents"):
            mt = media_type(req.headers.get("content-type"))
            if mt not in EVENT_MEDIA_TYPES:
                raise RequestError(
                    415,
                    f"Content-Type {mt or '(none)'!r} is not supported: send application/json",
                    close=True,
                )
        elif req.path == "/v1/webhooks/github":
            self.github.require_enabled()
        if req.path != "/v1/webhooks/github":
            content_encoding(req.headers.get("content-encoding"))

    async def _read_body(self, req: _Request, receive: Receive) -> bytes:
        """The body as sent (still compressed), read incrementally: 413 past max_request_bytes.

        A moderately oversized body (up to 4x the limit) is read to its end, so that the client
        sees the 413 rather than a reset connection; past that the connection is cut."""
        limit = self.max_request_bytes
        declared = req.headers.get("content-length", "")
        too_large = RequestError(
            413,
            f"the body is {declared or 'more than ' + str(limit)} bytes; the limit is {limit} (receiver.max_request_bytes)",
        )
        if declared.isdigit() and int(declared) > 4 * limit:
            raise RequestError(too_large.status, too_large.message, close=True)
        parts: list[bytes] = []
        total = 0
        more = True
        while more:
            try:
                with anyio.fail_after(self.body_timeout_s):
                    msg = await receive()
            except TimeoutError:
                raise RequestError(
                    408,
                    f"no part of the body arrived for {self.body_timeout_s:g} s (receiver.http_body_timeout_seconds)",
                    close=True,
                ) from None
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = msg.get("body", b"")
            more = bool(msg.get("more_body", False))
            total += len(chunk)
            if total > 4 * limit:
                raise RequestError(too_large.status, too_large.message, close=True)
            if total <= limit:
                parts.append(chunk)
        if total > limit:
            raise too_large
        return b"".join(parts)

    def _body(self, req: _Request) -> bytes:
        """The request body, decompressed; size-limited before and after."""
        return decompress(
            content_encoding(req.headers.get("content-encoding")), req.body, self.max_request_bytes
        )

    def _check_bearer(self, req: _Request) -> None:
        if not self._token:
            return
        got = req.headers.get("authorization") or ""
        if not bearer_matches(got, self._token):
            why = "no Authorization header" if not got.strip() else "wrong bearer token"
            log.warning("refused %s %s from %s: %s", req.method, req.path, req.peer, why)
            raise RequestError(
                401,
                f"unauthorized ({why}): send 'Authorization: Bearer <receiver.bearer_token>'",
                headers={"WWW-Authenticate": 'Bearer realm="prodloop"'},
                close=True,
            )

    # -- endpoints (in a worker thread) ------------------------------------------------

    def _traces(self, req: _Request) -> _Response:
        encoding = _otlp_encoding(req)
        acc: Accepted = self.sink.export_traces(self._body(req), encoding)
        ctype = PROTOBUF if encoding == "otlp_proto" else JSON
        return _Response(200, export_response(acc, ctype), ctype)

    def _logs(self, req: _Request) -> _Response:
        assert self.logs is not None  # _precheck answered 404
        encoding = _otlp_encoding(req)
        received = time.time_ns()
        acc: Accepted = self.logs.accept_logs(self._body(req), encoding, received_unix_nano=received)
        ctype = PROTOBUF if encoding == "otlp_proto" else JSON
        return _Response(200, export_logs_response(acc, ctype), ctype)

    def _events(self, req: _Request, kind: str) -> _Response:
        docs = events_from_body(self._body(req))
        deploys: list[DeployEvent] = []
        incidents: list[IncidentEvent] = []
        errors: list[str] = []
        for i, doc in enumerate(docs):
            try:
                if kind == "deploy":
                    deploys.append(decode_deploy(doc, where=f"event {i}"))
                else:
                    incidents.append(decode_incident(doc, where=f"event {i}"))
            except EventError as exc:
                errors.append(str(exc))
        if errors:
            shown = "; ".join(errors[:_MAX_EVENT_ERRORS])
            raise RequestError(400, f"{len(errors)} invalid {kind} event(s), none stored: {shown}")
        raw: list[JsonObject] = [d for d in docs if isinstance(d, dict)]
        if kind == "deploy":
            n = self.sink.add_deploys(deploys, raw)
        else:
            n = self.sink.add_incidents(incidents, raw)
        return _Response(200, json.dumps({"accepted": n}).encode())

    def _github(self, req: _Request) -> _Response:
        status, answer = self.github.receive(
            req.body,
            event=req.headers.get("x-github-event") or "",
            delivery=(req.headers.get("x-github-delivery") or "").strip(),
            signature=req.headers.get("x-hub-signature-256"),
            content_type=media_type(req.headers.get("content-type")),
            peer=req.peer,
        )
        return _Response(status, answer)

    def _modules(self, req: _Request) -> _Response:
        params = parse_qs(req.query)

        def one(name: str) -> str | None:
            v = params.get(name)
            return v[-1] if v else None

        now = time.time_ns()
        try:
            frm = parse_time(one("from"), now)
            to = parse_time(one("to"), now)
        except ValueError as exc:
            raise RequestError(400, f"bad time: {exc}") from None
        flag = (one("attributed_only") or "").lower()
        if flag not in ("", "0", "1", "true", "false"):
            raise RequestError(400, f"attributed_only must be true or false, got {flag!r}")
        try:
            limit, min_spans = int(one("limit") or 0), int(one("min_spans") or 0)
        except ValueError:
            raise RequestError(400, "limit and min_spans must be integers") from None
        try:
            by = parse_splits(one("by"))
        except ValueError as exc:
            raise RequestError(400, f"by: {exc}") from None
        q = ModulesQuery(
            frm, to, one("service") or None, one("environment"), flag in ("1", "true"), limit, by, min_spans
        )
        rows = self.sink.query_modules(q)
        if q.limit:
            rows = rows[: q.limit]
        return _Response(200, json.dumps(rows, indent=2).encode())


def _otlp_encoding(req: _Request) -> str:
    mt = media_type(req.headers.get("content-type"))
    if mt == PROTOBUF:
        return "otlp_proto"
    if mt == JSON:
        return "otlp_json"
    raise RequestError(
        415,
        f"Content-Type {mt or '(none)'!r} is not supported: send application/x-protobuf or application/json",
        close=True,
    )


async def _send(send: Send, resp: _Response) -> None:
    headers = [
        (b"content-type", resp.content_type.encode()),
        (b"content-length", str(len(resp.body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in resp.headers.items()),
    ]
    if resp.close:
        headers.append((b"connection", b"close"))
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})


# -- the server ----------------------------------------------------------------------------


class _Config(uvicorn.Config):
    header_timeout_s: float
    max_header_bytes: int


class _HttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp), plus what it lacks: a deadline for each request's
    line and headers (a client that sends a head slowly, or nothing, would hold its connection),
    a bound on a head that arrives in pieces (llhttp buffers an unfinished header without limit;
    the app checks only a complete head), and a 400 for a client that half-closes mid-body."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        assert isinstance(config, _Config)
        self._head_timeout = config.header_timeout_s
        self._head_limit = config.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes being fed belong to a request head not yet complete
        self._head_bytes = 0
        self._boundary = False  # a head or a message ended within the chunk being fed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._idle() and self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)
        self._boundary = False
        super().data_received(data)
        if self.parser is None or self.transport.is_closing():
            return
        if self._in_head and not self._boundary:
            # a chunk in which a message ended is not counted: part of it was that message's
            # body, and an undercount of one chunk still bounds what is buffered
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse(
                    431,
                    f"the request head exceeds {self._head_limit} bytes (receiver.http_max_header_bytes)",
                )
                return
        if self._head_timer is not None and not self._idle():
            self._head_timer.cancel()
            self._head_timer = None

    def on_headers_complete(self) -> None:
        self._in_head, self._boundary = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._boundary = True, 0, True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def eof_received(self) -> None:
        """A client that half-closes mid-body gets a 400 (uvicorn would close without one)."""
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and cycle.more_body
            and not cycle.response_started
        ):
            cycle.disconnected = True  # the app stops reading and answers nothing
            cycle.message_event.set()
            self._refuse(400, "The request body ended early.")

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _refuse(self, status: int, message: str) -> None:
        body = message.encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._idle():
            log.info(
                "closed a connection from %s: no request head within %g s", self.client, self._head_timeout
            )
            self.transport.close()


class HttpServer:
    """uvicorn serving an :class:`HttpApp` on its own event loop in a background thread (TLS
    when given a context).  ``stop(grace)`` drains: no new connections, in-flight requests finish
    within the grace, idle keep-alive connections are closed, then the server is."""

    def __init__(
        self, sock: socket.socket, app: HttpApp, tls: ssl.SSLContext | None, limits: HttpLimits
    ) -> None:
        self.app = app
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self._sock = sock
        config = _Config(
            app,
            http=_HttpTools,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            headers=[("server", "prodloop")],
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.idle_timeout_s,
            backlog=512,
            proxy_headers=False,  # the peer is the client: log it, not what a header claims
        )
        config.header_timeout_s = limits.header_timeout_s
        config.max_header_bytes = limits.max_header_bytes
        config.load()
        config.ssl = tls  # our context, not one uvicorn builds from file names
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="prodloop-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop(0)
            raise ConfigError("the HTTP server did not start (see the log)")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        finally:  # connections still open past the grace
            for conn in list(self._server.server_state.connections):
                conn.transport.close()
            await asyncio.sleep(0)

    def stop(self, grace_s: float) -> None:
        """Stop taking connections, let in-flight requests finish (up to ``grace_s``), close."""
        self._server.config.timeout_graceful_shutdown = grace_s  # type: ignore[assignment]
        self._server.should_exit = True
        self._thread.join(grace_s + 5)


def start_http_server(
    app: HttpApp, host: str, port: int, tls: ssl.SSLContext | None, limits: HttpLimits
) -> HttpServer:
    """Bind and serve (in a background thread); ConfigError when it cannot listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen for HTTP on {host}:{port}: {exc.strerror} "
            "(receiver.http_port, PRODLOOP_RECEIVER__HTTP_PORT; receiver.http_enabled false turns it off)"
        ) from None
    return HttpServer(sock, app, tls, limits)
