"""prodloop as an OpenTelemetry endpoint: OTLP/gRPC, OTLP/HTTP, events, webhooks, query API.

Endpoints (defaults; see :class:`collector.app.settings.ReceiverSettings`)::

    gRPC :4317  opentelemetry.proto.collector.trace.v1.TraceService/Export
    HTTP :4318  POST /v1/traces             OTLP/HTTP: application/x-protobuf or application/json, gzip
                POST /v1/deploys            deploy events (schemas/events/deploy.schema.json)
                POST /v1/incidents          incident events (schemas/events/incident.schema.json)
                POST /v1/webhooks/github    GitHub deployment_status events, X-Hub-Signature-256
                GET  /api/v1/modules        the JSON of `prodloop query modules --format json`

The receivers never parse OTLP themselves: trace requests go, as raw bytes, to a sink
(:class:`Ingress`) - :class:`collector.pipelines.direct.DirectPipeline` (decode with
:class:`collector.codec.otlp.OtlpDecoder`, aggregate, flush to the store) or
:class:`collector.exporters.kafka.gateway.KafkaGateway` (produce to Kafka).  gRPC hands the bytes over
untouched: the method is registered with no request deserializer.

**Responses follow the OTLP specification.**

* Success: 200 / OK with an ``ExportTraceServiceResponse`` (in the request's encoding);
  spans that were invalid are counted in ``partial_success.rejected_spans`` with an
  ``error_message`` naming the first one.
* Undecodable request: HTTP 400 with a ``google.rpc.Status`` body (in the request's
  encoding); gRPC INVALID_ARGUMENT.  Not retryable.
* Too large (``max_request_bytes``, also after gunzip): HTTP 413; gRPC RESOURCE_EXHAUSTED
  without RetryInfo (not retryable).  Wrong Content-Type or Content-Encoding: 415.
* Overloaded: HTTP 429 with ``Retry-After``; gRPC RESOURCE_EXHAUSTED with a
  ``google.rpc.RetryInfo`` (OTLP clients retry RESOURCE_EXHAUSTED only when it is present).
* Shutting down, or the store / the broker failing: HTTP 503 with ``Retry-After``; gRPC
  UNAVAILABLE with RetryInfo.
* Missing or wrong bearer token: HTTP 401; gRPC UNAUTHENTICATED.

**Auth.**  With ``bearer_token`` set, every endpoint but the GitHub webhook requires
``Authorization: Bearer TOKEN`` (gRPC: the ``authorization`` metadata; the scheme in any
case, RFC 7235); the webhook authenticates by its HMAC signature, and its redeliveries are
acknowledged, not applied twice.  Tokens and signatures are compared in constant time;
refused requests are logged with their origin, never their payload.  With
``tls_cert_file`` and ``tls_key_file`` both servers speak TLS only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from attribution.events import (
    EventValidationError,
    deploy_event_to_json,
    parse_deploy_event,
    parse_incident_event,
)
from attribution.model import DeployEvent, IncidentEvent
from attribution.timeparse import parse_time
from collector.codec.otlp import MAX_NESTING_DEPTH
from collector.errors import BusyError, ConfigError, DecodeError, PayloadError, UnavailableError
from collector.ports import Accepted, ModulesQuery, TraceSink

if TYPE_CHECKING:
    from attribution.attribute import Repository
    from collector.app.settings import Settings
    from collector.exporters.clickhouse.store import ClickHouseStore

log = logging.getLogger("prodloop.receiver")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
SERVICE_FILE_SUFFIX = ".prodloop-service.json"
_MAX_EVENT_ERRORS = 20


# --------------------------------------------------------------------------------------
# What the receivers hand requests to
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------------------

_JSON = "application/json"
_PROTO = "application/x-protobuf"
_GRPC_CODE_FOR_HTTP = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


def export_response(acc: Accepted, content_type: str) -> bytes:
    """``ExportTraceServiceResponse`` for a (partially) successful request."""
    if content_type == _JSON:
        if not acc.rejected and not acc.message:
            return b"{}"
        body = {"partialSuccess": {"rejectedSpans": str(acc.rejected), "errorMessage": acc.message}}
        return json.dumps(body).encode()
    resp = trace_service_pb2.ExportTraceServiceResponse()
    if acc.rejected or acc.message:
        resp.partial_success.rejected_spans = acc.rejected
        resp.partial_success.error_message = acc.message
    data: bytes = resp.SerializeToString()
    return data


def status_body(http_status: int, message: str, content_type: str) -> bytes:
    """A ``google.rpc.Status`` body, as the OTLP/HTTP specification asks for failures."""
    code = _GRPC_CODE_FOR_HTTP.get(http_status, code_pb2.UNKNOWN)
    if content_type == _PROTO:
        data: bytes = status_pb2.Status(code=code, message=message).SerializeToString()
        return data
    return json.dumps({"code": code, "message": message}).encode()


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.close = close
        super().__init__(message)


def bearer_matches(credentials: str | bytes | None, token: bytes) -> bool:
    """Is ``credentials`` (an ``Authorization`` value) ``Bearer <token>``?

    The scheme is case-insensitive (RFC 7235), spaces around the token are tolerated; the
    token is compared case-sensitively and in constant time."""
    if isinstance(credentials, str):
        credentials = credentials.encode("utf-8", "surrogateescape")
    parts = (credentials or b"").split(None, 1)
    scheme = parts[0] if parts else b""
    got = parts[1].strip() if len(parts) == 2 else b""
    same = hmac.compare_digest(got, token)  # always compared: no early exit on the scheme
    return same and scheme.lower() == b"bearer"


# --------------------------------------------------------------------------------------
# GitHub webhook
# --------------------------------------------------------------------------------------


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` check, in constant time."""
    if not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode())


_GITHUB_STATES = {"success": "succeeded", "failure": "failed", "error": "failed"}
GITHUB_DELIVERIES_KEPT = 10_000
_MAX_DELIVERY_ID = 128


class GithubDeliveries:
    """The ids (``X-GitHub-Delivery``) of the deliveries this process applied, so that a
    redelivery is acknowledged as a duplicate and not applied again.

    In memory, per process, the last ``size`` ids.  Another replica, or this one after a
    restart, does not know them; there the deploy events' ``status_order`` makes a replayed
    status harmless: an older status never replaces a newer one, and an equal one is the
    same status again.
    """

    def __init__(self, size: int = GITHUB_DELIVERIES_KEPT) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, delivery: str) -> bool:
        with self._lock:
            return delivery in self._ids

    def add(self, delivery: str) -> None:
        with self._lock:
            self._ids[delivery] = None
            self._ids.move_to_end(delivery)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


def deploy_from_github(payload: Any) -> DeployEvent | None:
    """A ``deployment_status`` webhook payload -> a deploy event (None: a state we ignore).

    * ``success`` -> ``succeeded``; ``failure`` and ``error`` -> ``failed`` (never live);
      other states (queued, pending, in_progress, inactive) -> None.
    * ``deploy_id``: ``github:OWNER/REPO:DEPLOYMENT_ID``, so a later status of the same
      deployment replaces the earlier one.
    * ``service``: the deployment's payload ``service`` (``{"service": "checkout"}`` set by
      the workflow), else the repository name.  ``environment``: the payload's
      ``environment``, else the deployment's environment.
    * ``commit_sha``: the deployment's ``sha``; ``deployed_at``: the status's ``updated_at``
      (or ``created_at``); ``url``: the status's ``log_url`` or ``target_url``.
    * ``status_at`` and ``status_id``: the status's ``updated_at`` (or ``created_at``) and
      ``id``, which order the statuses of one deployment whatever their arrival order.

    Raises :class:`EventValidationError` naming the missing or invalid field.
    """
    if not isinstance(payload, dict):
        raise EventValidationError("(payload)", "must be a JSON object")
    st = payload.get("deployment_status")
    dep = payload.get("deployment")
    if not isinstance(st, dict):
        raise EventValidationError("deployment_status", "is required")
    if not isinstance(dep, dict):
        raise EventValidationError("deployment", "is required")
    status = _GITHUB_STATES.get(str(st.get("state", "")))
    if status is None:
        return None
    repo = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    assert isinstance(repo, dict)
    extra: Any = dep.get("payload")
    if isinstance(extra, str) and extra.strip().startswith("{"):
        with contextlib.suppress(json.JSONDecodeError):
            extra = json.loads(extra)
    if not isinstance(extra, dict):
        extra = {}
    prodloop_extra = extra.get("prodloop")
    if isinstance(prodloop_extra, dict):
        extra = {**extra, **prodloop_extra}
    dep_id = dep.get("id")
    if dep_id is None:
        raise EventValidationError("deployment.id", "is required")
    event = {
        "deploy_id": f"github:{repo.get('full_name', '')}:{dep_id}",
        "service": extra.get("service") or repo.get("name"),
        "environment": extra.get("environment") or st.get("environment") or dep.get("environment") or "",
        "commit_sha": dep.get("sha"),
        "deployed_at": st.get("updated_at") or st.get("created_at"),
        "repository": repo.get("html_url") or "",
        "status": status,
        "url": st.get("log_url") or st.get("target_url") or "",
        "status_at": st.get("updated_at") or st.get("created_at"),
        "status_id": st.get("id"),
    }
    return parse_deploy_event(event)


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise HttpError(413, f"the body is larger than {limit} bytes once decompressed (max_request_bytes)")
    if not d.eof:
        raise HttpError(400, "the gzip body is truncated")
    return out


def _events_from_body(body: bytes) -> list[Any]:
    """One JSON object, a JSON array of objects, or newline-delimited objects."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise HttpError(400, f"the body nests too deeply (at most {MAX_NESTING_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if len(lines) <= 1:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
        docs = []
        for i, line in enumerate(lines, start=1):
            try:
                docs.append(json.loads(line))
            except RecursionError:
                raise HttpError(
                    400, f"line {i} nests too deeply (at most {MAX_NESTING_DEPTH} levels)"
                ) from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise HttpError(400, f"line {i} is not valid JSON: {e}") from None
        return docs
    return doc if isinstance(doc, list) else [doc]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: HttpApp, tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.tls = tls
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:  # the handshake happens in the connection's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "prodloop"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
                self.close_connection = True
                raise

    def do_POST(self) -> None:
        self.server.app.handle(self, "POST")

    def do_GET(self) -> None:
        self.server.app.handle(self, "GET")

    def do_PUT(self) -> None:
        self.server.app.handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.app.handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


_ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/traces": ("POST",),
    "/v1/deploys": ("POST",),
    "/v1/incidents": ("POST",),
    "/v1/webhooks/github": ("POST",),
    "/api/v1/modules": ("GET",),
}


class HttpApp:
    """The HTTP endpoints, over an :class:`Ingress`."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        max_request_bytes: int,
        bearer_token: str = "",
        github_secret: str = "",
        github_deliveries: GithubDeliveries | None = None,
    ) -> None:
        self.sink = sink
        self.max_request_bytes = max_request_bytes
        self._token = bearer_token.encode()
        self._github_secret = github_secret.encode()
        self.github_deliveries = github_deliveries if github_deliveries is not None else GithubDeliveries()

    # -- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _send(
        h: _Handler,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _read_body(self, h: _Handler) -> bytes:
        limit = self.max_request_bytes
        te = (h.headers.get("Transfer-Encoding") or "").lower()
        if te:
            if te != "chunked":
                raise HttpError(501, f"Transfer-Encoding {te!r} is not supported", close=True)
            return self._read_chunked(h, limit)
        length = h.headers.get("Content-Length")
        if length is None:
            raise HttpError(411, "Content-Length is required", close=True)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, f"bad Content-Length {length!r}", close=True) from None
        if n > limit:
            # read a moderately oversized body, so the client sees the 413 and not a reset
            # connection; hang up on a huge one
            drain = n <= 4 * limit
            if drain:
                left = n
                while left > 0:
                    chunk = h.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
                drain = left == 0
            raise HttpError(
                413,
                f"the body is {n} bytes; the limit is {limit} (receiver.max_request_bytes)",
                close=not drain,
            )
        data = h.rfile.read(n)
        if len(data) != n:
            raise HttpError(400, f"the body ended after {len(data)} of {n} bytes", close=True)
        return data

    @staticmethod
    def _read_chunked(h: _Handler, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = h.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError(400, "bad chunk size in a chunked body", close=True) from None
            if size == 0:
                while h.rfile.readline(8192).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise HttpError(
                    413,
                    f"the body exceeds the limit of {limit} bytes (receiver.max_request_bytes)",
                    close=True,
                )
            chunk = h.rfile.read(size)
            if len(chunk) != size:
                raise HttpError(400, "the chunked body is truncated", close=True)
            parts.append(chunk)
            h.rfile.readline(8)

    def _body(self, h: _Handler) -> bytes:
        """The request body, gunzipped; size-limited before and after."""
        encoding = (h.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HttpError(
                415, f"Content-Encoding {encoding!r} is not supported: use gzip or none", close=True
            )
        body = self._read_body(h)
        if encoding == "gzip":
            body = _gunzip(body, self.max_request_bytes)
        return body

    def _check_bearer(self, h: _Handler, path: str) -> None:
        if not self._token:
            return
        got = h.headers.get("Authorization") or ""
        if not bearer_matches(got, self._token):
            why = "no Authorization header" if not got.strip() else "wrong bearer token"
            log.warning("refused %s %s from %s: %s", h.command, path, h.client_address[0], why)
            raise HttpError(
                401,
                f"unauthorized ({why}): send 'Authorization: Bearer <receiver.bearer_token>'",
                headers={"WWW-Authenticate": 'Bearer realm="prodloop"'},
                close=True,
            )

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, h: _Handler, method: str) -> None:
        path = urlsplit(h.path).path.rstrip("/") or "/"
        otlp = path == "/v1/traces"
        ctype = _PROTO if otlp and _media_type(h.headers.get("Content-Type")) == _PROTO else _JSON
        try:
            allowed = _ROUTES.get(path)
            if allowed is None:
                raise HttpError(
                    404,
                    f"no endpoint {path}: prodloop serves POST /v1/traces, /v1/deploys, /v1/incidents, "
                    "/v1/webhooks/github and GET /api/v1/modules",
                    close=h.headers.get("Content-Length") not in (None, "0"),
                )
            if method not in allowed:
                raise HttpError(
                    405,
                    f"{path} takes {', '.join(allowed)}",
                    headers={"Allow": ", ".join(allowed)},
                    close=True,
                )
            if path != "/v1/webhooks/github":
                self._check_bearer(h, path)
            if otlp:
                self._traces(h)
            elif path == "/v1/deploys":
                self._events(h, "deploy")
            elif path == "/v1/incidents":
                self._events(h, "incident")
            elif path == "/v1/webhooks/github":
                self._github(h)
            else:
                self._modules(h)
        except HttpError as exc:
            body = (
                status_body(exc.status, exc.message, ctype)
                if otlp
                else json.dumps({"error": exc.message}).encode()
            )
            self._send(h, exc.status, body, ctype, exc.headers, exc.close)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        except Exception:
            log.exception("%s %s failed", method, path)
            msg = "internal error (see prodloop's log)"
            body = status_body(500, msg, ctype) if otlp else json.dumps({"error": msg}).encode()
            with contextlib.suppress(OSError):
                self._send(h, 500, body, ctype, close=True)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a sink call, mapping its refusals to HTTP errors."""
        try:
            return fn()
        except BusyError as exc:
            raise HttpError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
        except UnavailableError as exc:
            raise HttpError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
        except PayloadError as exc:  # e.g. the store refused an event's values
            raise HttpError(400, str(exc)) from None

    # -- endpoints ---------------------------------------------------------------------

    def _traces(self, h: _Handler) -> None:
        mt = _media_type(h.headers.get("Content-Type"))
        if mt == _PROTO:
            encoding = "otlp_proto"
        elif mt == _JSON:
            encoding = "otlp_json"
        else:
            raise HttpError(
                415,
                f"Content-Type {mt or '(none)'!r} is not supported: send application/x-protobuf or application/json",
                close=True,
            )
        body = self._body(h)
        try:
            acc: Accepted = self._call(lambda: self.sink.export_traces(body, encoding))
        except DecodeError as exc:
            raise HttpError(400, str(exc)) from None
        ctype = _PROTO if encoding == "otlp_proto" else _JSON
        self._send(h, 200, export_response(acc, ctype), ctype)

    def _events(self, h: _Handler, kind: str) -> None:
        mt = _media_type(h.headers.get("Content-Type"))
        if mt not in (_JSON, "application/x-ndjson", "application/jsonl"):
            raise HttpError(
                415, f"Content-Type {mt or '(none)'!r} is not supported: send application/json", close=True
            )
        docs = _events_from_body(self._body(h))
        parse = parse_deploy_event if kind == "deploy" else parse_incident_event
        events: list[Any] = []
        errors: list[str] = []
        for i, doc in enumerate(docs):
            try:
                events.append(parse(doc))
            except EventValidationError as exc:
                errors.append(f"event {i}: {exc}")
        if errors:
            shown = "; ".join(errors[:_MAX_EVENT_ERRORS])
            raise HttpError(400, f"{len(errors)} invalid {kind} event(s), none stored: {shown}")
        raw = [d for d in docs if isinstance(d, dict)]
        if kind == "deploy":
            n = self._call(lambda: self.sink.add_deploys(events, raw))
        else:
            n = self._call(lambda: self.sink.add_incidents(events, raw))
        self._send(h, 200, json.dumps({"accepted": n}).encode(), _JSON)

    def _github(self, h: _Handler) -> None:
        if not self._github_secret:
            raise HttpError(
                404,
                "the GitHub webhook is off: set receiver.github_webhook_secret "
                "(PRODLOOP_RECEIVER__GITHUB_WEBHOOK_SECRET) to the webhook's secret",
                close=True,
            )
        body = self._read_body(h)
        event = h.headers.get("X-GitHub-Event") or ""
        delivery = (h.headers.get("X-GitHub-Delivery") or "").strip()
        if not verify_github_signature(self._github_secret, body, h.headers.get("X-Hub-Signature-256")):
            why = "missing" if not h.headers.get("X-Hub-Signature-256") else "bad"
            log.warning(
                "refused GitHub webhook from %s: %s X-Hub-Signature-256 (event %r, delivery %s, %d bytes)",
                h.client_address[0],
                why,
                event[:64],
                delivery[:64] or "-",
                len(body),
            )
            raise HttpError(401, f"{why} X-Hub-Signature-256: sign with the webhook's secret", close=True)
        if event == "ping":
            self._send(h, 200, b'{"ok":true}', _JSON)
            return
        if event != "deployment_status":
            self._send(h, 202, json.dumps({"ignored": f"event {event!r}"}).encode(), _JSON)
            return
        # a redelivery: applied once (a longer id than GitHub's GUIDs is not remembered)
        known = delivery if 0 < len(delivery) <= _MAX_DELIVERY_ID else ""
        if known and known in self.github_deliveries:
            log.info("GitHub delivery %s was already applied: acknowledged as a duplicate", known)
            self._send(h, 200, json.dumps({"accepted": 0, "duplicate": known}).encode(), _JSON)
            return
        mt = _media_type(h.headers.get("Content-Type"))
        try:
            if mt == "application/x-www-form-urlencoded":
                form = parse_qs(body.decode("ascii"), strict_parsing=True)
                payload = json.loads(form["payload"][0])
            else:
                payload = json.loads(body)
        except RecursionError:
            raise HttpError(
                400, f"the webhook payload nests too deeply (at most {MAX_NESTING_DEPTH} levels)"
            ) from None
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the webhook payload is not valid JSON: {exc}") from None
        try:
            ev = deploy_from_github(payload)
        except EventValidationError as exc:
            raise HttpError(400, f"deployment_status payload: {exc}") from None
        if ev is None:
            state = payload.get("deployment_status", {}).get("state")
            self._send(h, 202, json.dumps({"ignored": f"deployment state {state!r}"}).encode(), _JSON)
            return
        self._call(lambda: self.sink.add_deploys([ev], [deploy_event_to_json(ev)]))
        if known:  # only once the sink took it: a refused delivery may be redelivered
            self.github_deliveries.add(known)
        self._send(
            h,
            200,
            json.dumps({"accepted": 1, "deploy_id": ev.deploy_id, "status": ev.status}).encode(),
            _JSON,
        )

    def _modules(self, h: _Handler) -> None:
        params = parse_qs(urlsplit(h.path).query)

        def one(name: str) -> str | None:
            v = params.get(name)
            return v[-1] if v else None

        now = time.time_ns()
        try:
            frm = parse_time(one("from"), now)
            to = parse_time(one("to"), now)
        except ValueError as exc:
            raise HttpError(400, f"bad time: {exc}") from None
        flag = (one("attributed_only") or "").lower()
        if flag not in ("", "0", "1", "true", "false"):
            raise HttpError(400, f"attributed_only must be true or false, got {flag!r}")
        try:
            limit = int(one("limit") or 0)
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        q = ModulesQuery(frm, to, one("service") or None, one("environment"), flag in ("1", "true"), limit)
        rows: list[dict[str, Any]] = self._call(lambda: self.sink.query_modules(q))
        if q.limit:
            rows = rows[: q.limit]
        self._send(h, 200, json.dumps(rows, indent=2).encode(), _JSON)


# --------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------


def _abort_with_retry(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, delay_s: int
) -> None:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = delay_s
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    context.set_trailing_metadata(
        (
            ("grpc-status-details-bin", status.SerializeToString()),  # how the Collector reads RetryInfo
            ("google.rpc.retryinfo-bin", info.SerializeToString()),  # how opentelemetry-python reads it
        )
    )
    context.abort(code, message)


class GrpcTraceService:
    """``TraceService/Export`` over raw request bytes."""

    def __init__(self, sink: TraceSink, bearer_token: str = "") -> None:
        self.sink = sink
        self._token = bearer_token.encode()

    def export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if self._token:
            got = b""
            for k, v in context.invocation_metadata():
                if k == "authorization":
                    got = v.encode() if isinstance(v, str) else bytes(v)
            if not bearer_matches(got, self._token):
                why = "no authorization metadata" if not got.strip() else "wrong bearer token"
                log.warning("refused gRPC Export from %s: %s", context.peer(), why)
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"unauthorized ({why}): send 'authorization: Bearer <token>'",
                )
        try:
            acc = self.sink.export_traces(request, "otlp_proto")
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BusyError as exc:
            _abort_with_retry(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
        except UnavailableError as exc:
            _abort_with_retry(context, grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after_s)
        except Exception:
            log.exception("gRPC Export failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error (see prodloop's log)")
        return export_response(acc, _PROTO)

    def handler(self) -> grpc.GenericRpcHandler:
        # no request_deserializer: the raw bytes go to the one decoder, once
        method = grpc.unary_unary_rpc_method_handler(self.export)
        return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": method})


# --------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------


def _tls_files(settings: Settings) -> tuple[bytes, bytes] | None:
    r = settings.receiver
    if not r.tls_cert_file and not r.tls_key_file:
        return None
    if not (r.tls_cert_file and r.tls_key_file):
        raise ConfigError("receiver.tls_cert_file and receiver.tls_key_file must be set together")
    try:
        return Path(r.tls_cert_file).read_bytes(), Path(r.tls_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"receiver TLS: cannot read {exc.filename}: {exc.strerror}") from None


def resolve_mode(settings: Settings) -> str:
    mode = settings.receiver.mode
    if mode == "auto":
        return "gateway" if settings.kafka.bootstrap_servers else "direct"
    return mode


class Receivers:
    """Running receivers.  ``stop(grace_seconds)`` stops taking requests, lets in-flight ones
    finish, then closes the sink (direct mode: aggregates the queue and flushes)."""

    def __init__(
        self,
        sink: TraceSink,
        grpc_server: grpc.Server | None,
        grpc_port: int | None,
        http_server: _Server | None,
        host_grpc: str,
        host_http: str,
        tls: bool,
    ) -> None:
        self.sink = sink
        self._grpc = grpc_server
        self.grpc_port = grpc_port
        self._http = http_server
        self._http_thread: threading.Thread | None = None
        self.http_port = http_server.server_address[1] if http_server is not None else None
        self.tls = tls
        self._host_grpc = host_grpc
        self._host_http = host_http
        self._stopped = False
        if http_server is not None:
            self._http_thread = threading.Thread(
                target=http_server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="prodloop-http",
                daemon=True,
            )
            self._http_thread.start()

    @staticmethod
    def _client_host(host: str) -> str:
        if host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_endpoint(self) -> str | None:
        """``host:port`` for gRPC clients (None when gRPC is off)."""
        return None if self.grpc_port is None else f"{self._client_host(self._host_grpc)}:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        """``http(s)://host:port`` (None when HTTP is off)."""
        if self.http_port is None:
            return None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self._client_host(self._host_http)}:{self.http_port}"

    def stop(self, grace_seconds: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + grace_seconds
        done = self._grpc.stop(grace_seconds / 2) if self._grpc is not None else None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if done is not None:
            done.wait(max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            self._http.close_connections()
        self.sink.close(max(1.0, deadline - time.monotonic()))


class _QueryOverride:
    """An TraceSink whose query_modules is a given function (e.g. the service's own store)."""

    def __init__(self, inner: TraceSink, query: Callable[[ModulesQuery], list[dict[str, Any]]]) -> None:
        self._inner = inner
        self._query = query

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        return self._inner.export_traces(payload, encoding)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[dict[str, Any]]) -> int:
        return self._inner.add_deploys(events, raw)

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[dict[str, Any]]) -> int:
        return self._inner.add_incidents(events, raw)

    def query_modules(self, q: ModulesQuery) -> list[dict[str, Any]]:
        return self._query(q)

    def close(self, grace_s: float = 10.0) -> None:
        self._inner.close(grace_s)


def build_sink(
    settings: Settings,
    *,
    store: ClickHouseStore | None = None,
    repositories: Sequence[Repository] | None = None,
) -> TraceSink:
    """The sink for the configured mode: a DirectPipeline (needs ``store``) or a KafkaGateway."""
    r = settings.receiver
    mode = resolve_mode(settings)
    if mode == "direct":
        if store is None:
            raise ConfigError("direct mode needs a store")
        from collector.pipelines.direct import DirectPipeline

        return DirectPipeline(
            store,
            list(repositories or ()),
            window_ns=settings.aggregation.window_seconds * 1_000_000_000,
            max_groups_per_window=settings.aggregation.max_groups_per_window,
            sample_rate_attribute=settings.attribution.sample_rate_attribute,
            flush_interval_s=r.flush_interval_seconds,
            queue_max_spans=r.queue_max_spans,
            retry_after_s=r.retry_after_seconds,
            time_bounds=settings.time_bounds(),
        )
    from collector.exporters.kafka.client import KafkaOptions
    from collector.exporters.kafka.gateway import KafkaGateway, KafkaProducerAdapter

    k = settings.kafka
    if not k.bootstrap_servers:
        raise ConfigError("gateway mode needs kafka.bootstrap_servers (PRODLOOP_KAFKA__BOOTSTRAP_SERVERS)")
    options = KafkaOptions.from_settings(k, client_id="prodloop-gateway")
    producer = KafkaProducerAdapter(
        options.client_config(),
        max_request_size=r.max_request_bytes,
        max_block_s=r.gateway_ack_timeout_seconds,
    )
    return KafkaGateway(
        producer,
        traces_topic=k.traces_topic,
        deploys_topic=k.deploys_topic,
        incidents_topic=k.incidents_topic,
        max_inflight_bytes=r.gateway_max_inflight_bytes,
        ack_timeout_s=r.gateway_ack_timeout_seconds,
        retry_after_s=r.retry_after_seconds,
    )


def start_receivers(
    settings: Settings,
    *,
    store: ClickHouseStore | None = None,
    repositories: Sequence[Repository] | None = None,
    sink: TraceSink | None = None,
    query_modules: Callable[[ModulesQuery], list[dict[str, Any]]] | None = None,
) -> Receivers:
    """Start the gRPC and HTTP receivers (as configured) in background threads.

    * direct mode: pass the open ``store`` and the attribution ``repositories``;
    * gateway mode: nothing more (the producer is built from ``settings.kafka``); pass
      ``query_modules`` to serve ``GET /api/v1/modules`` from a store this process holds;
    * ``sink``: any :class:`Ingress` (tests, or a sink built by the caller).
    """
    r = settings.receiver
    tls_files = _tls_files(settings)
    if sink is None:
        sink = build_sink(settings, store=store, repositories=repositories)
    if query_modules is not None:
        sink = _QueryOverride(sink, query_modules)
    token = r.bearer_token.get_secret_value() if r.bearer_token else ""
    grpc_server: grpc.Server | None = None
    grpc_port: int | None = None
    http_server: _Server | None = None
    try:
        if r.grpc_enabled:
            grpc_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=r.grpc_workers, thread_name_prefix="prodloop-grpc"),
                handlers=[GrpcTraceService(sink, token).handler()],
                options=[
                    ("grpc.max_receive_message_length", r.max_request_bytes),
                    ("grpc.so_reuseport", 0),
                ],
            )
            host = (
                f"[{r.grpc_host}]" if ":" in r.grpc_host and not r.grpc_host.startswith("[") else r.grpc_host
            )
            address = f"{host}:{r.grpc_port}"
            try:
                if tls_files is not None:
                    cert, key = tls_files
                    grpc_port = grpc_server.add_secure_port(
                        address, grpc.ssl_server_credentials([(key, cert)])
                    )
                else:
                    grpc_port = grpc_server.add_insecure_port(address)
            except RuntimeError as exc:
                raise ConfigError(
                    f"cannot listen for OTLP/gRPC on {address}: {exc} "
                    "(receiver.grpc_port, PRODLOOP_RECEIVER__GRPC_PORT; receiver.grpc_enabled false turns it off)"
                ) from None
            grpc_server.start()
        if r.http_enabled:
            ctx: ssl.SSLContext | None = None
            if tls_files is not None:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                assert r.tls_cert_file is not None and r.tls_key_file is not None
                try:
                    ctx.load_cert_chain(str(r.tls_cert_file), str(r.tls_key_file))
                except (ssl.SSLError, OSError) as exc:
                    raise ConfigError(f"receiver TLS: cannot load the certificate and key: {exc}") from None
            app = HttpApp(
                sink,
                max_request_bytes=r.max_request_bytes,
                bearer_token=token,
                github_secret=r.github_webhook_secret.get_secret_value() if r.github_webhook_secret else "",
            )
            try:
                http_server = _Server((r.http_host, r.http_port), app, ctx)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen for HTTP on {r.http_host}:{r.http_port}: {exc.strerror} "
                    "(receiver.http_port, PRODLOOP_RECEIVER__HTTP_PORT; receiver.http_enabled false turns it off)"
                ) from None
    except BaseException:
        if grpc_server is not None:
            grpc_server.stop(0)
        sink.close(1.0)
        raise
    return Receivers(
        sink, grpc_server, grpc_port, http_server, r.grpc_host, r.http_host, tls_files is not None
    )


# --------------------------------------------------------------------------------------
# `prodloop run` without Kafka; service discovery for `prodloop query`
# --------------------------------------------------------------------------------------


def service_file_for(store_dsn: str) -> Path | None:
    """Where a service holding the embedded store at ``store_dsn`` writes its address."""
    parts = urlsplit(store_dsn)
    if parts.scheme != "chdb" or not parts.path:
        return None
    d = Path(parts.path)
    return d.parent / f"{d.name}{SERVICE_FILE_SUFFIX}"


@contextlib.contextmanager
def advertise(store_dsn: str, database: str, receivers: Receivers) -> Iterator[Path | None]:
    """Write the service file next to the store while the receivers run; remove it after."""
    path = service_file_for(store_dsn)
    if path is None or receivers.http_url is None:
        yield None
        return
    doc = {
        "url": receivers.http_url,
        "grpc": receivers.grpc_endpoint,
        "pid": os.getpid(),
        "store": store_dsn,
        "database": database,
        "started_at_unix_nano": time.time_ns(),
    }
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def run_receivers_forever(
    settings: Settings,
    stop_event: threading.Event,
    *,
    on_ready: Callable[[Receivers], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """`prodloop run` with no Kafka: receivers in direct mode on the store (embedded chDB by
    default) until ``stop_event`` is set, then a graceful stop within
    ``service.grace_seconds`` (the queue is aggregated and flushed).

    Also works in gateway mode (Kafka configured, ``receiver.mode`` gateway or auto), for a
    process that only receives: then no store is opened.  (`prodloop run` with Kafka starts
    the receivers beside its stream pipeline instead: :func:`collector.app.service.run_stream`.)
    """
    from collector.exporters.clickhouse.store import ClickHouseStore, default_dsn

    mode = resolve_mode(settings)
    grace = float(getattr(getattr(settings, "service", None), "grace_seconds", 10.0))
    store: ClickHouseStore | None = None
    repositories: list[Repository] = []
    dsn = settings.store.dsn or default_dsn()
    if mode == "direct":
        from collector.app.attribution_files import load_attribution_from

        loaded = load_attribution_from(settings)
        for p in loaded.codeowners_problems:
            log.warning("%s:%s: %s: %s", p.source, p.line, p.severity, p.message)
        for m in loaded.module_problems:
            log.warning("%s", m)
        repositories = loaded.repositories
        store = ClickHouseStore(dsn, settings.store.database, password=_password(settings))
        store.apply_migrations()
    try:
        receivers = start_receivers(settings, store=store, repositories=repositories)
        try:
            with (
                advertise(dsn, settings.store.database, receivers)
                if store is not None
                else contextlib.nullcontext()
            ):
                log.info(
                    "prodloop receivers (%s mode): OTLP/gRPC %s, HTTP %s%s",
                    mode,
                    receivers.grpc_endpoint or "off",
                    receivers.http_url or "off",
                    f", store {dsn}" if store is not None else "",
                )
                if on_ready is not None:
                    on_ready(receivers)
                while not stop_event.wait(1.0):
                    if on_tick is not None:
                        on_tick()
        finally:
            receivers.stop(grace)
    finally:
        if store is not None:
            store.close()


def _password(settings: Any) -> str | None:
    pw = settings.store.password
    return pw.get_secret_value() if pw is not None else None
