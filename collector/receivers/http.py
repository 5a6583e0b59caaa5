"""OTLP/HTTP and the JSON endpoints: the HTTP server and the routes over a trace sink.

Endpoints (defaults; see :class:`collector.app.settings.ReceiverSettings`)::

    HTTP :4318  POST /v1/traces             OTLP/HTTP: application/x-protobuf or application/json, gzip
                POST /v1/logs               OTLP/HTTP logs, the same (when the sink is a LogSink)
                POST /v1/deploys            deploy events (schemas/events/deploy.schema.json)
                POST /v1/incidents          incident events (schemas/events/incident.schema.json)
                POST /v1/webhooks/github    GitHub deployment_status events (collector.receivers.github)
                GET  /api/v1/modules        the JSON of `prodloop query modules --format json`

The receiver never parses OTLP itself: trace requests go, as raw bytes, to a
:class:`collector.ports.TraceSink`, log requests to a :class:`collector.ports.LogSink`.  Answers follow the OTLP specification, through the one
error -> status map of :mod:`collector.receivers.status`.  With a bearer token set, every
endpoint but the GitHub webhook requires ``Authorization: Bearer TOKEN``; refused requests
are logged with their origin, never their payload.  Kept thin: another server replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from attribution.model import DeployEvent, IncidentEvent
from attribution.timeparse import parse_time
from collector.codec.events import decode_deploy, decode_incident
from collector.errors import ConfigError, EventError, RequestError
from collector.ports import Accepted, JsonObject, LogSink, ModulesQuery, TraceSink
from collector.receivers.auth import bearer_matches
from collector.receivers.bodies import EVENT_MEDIA_TYPES, JSON, PROTOBUF, events_from_body, gunzip, media_type
from collector.receivers.github import GithubDeliveries, GithubWebhook
from collector.receivers.status import Refusal, export_logs_response, export_response, refusal, status_body

log = logging.getLogger("prodloop.receiver")

_MAX_EVENT_ERRORS = 20


class TlsThreadingServer(ThreadingHTTPServer):
    """A threading HTTP server on IPv4 or IPv6, speaking TLS only when given a context; the
    receivers' server and the ops server (``/metrics``, ``/healthz``, ``/readyz``) both are one."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None
    ) -> None:
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:  # the handshake happens in the connection's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class HttpServer(TlsThreadingServer):
    """A threading HTTP/1.1 server over an :class:`HttpApp` (TLS when given a context)."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: HttpApp, tls: ssl.SSLContext | None) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler, tls)

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


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server side of TLS from a PEM certificate chain and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"receiver TLS: cannot load the certificate and key: {exc}") from None
    return ctx


def start_http_server(app: HttpApp, host: str, port: int, tls: ssl.SSLContext | None) -> HttpServer:
    """Bind the HTTP server (serve it with ``serve_forever``); ConfigError when it cannot listen."""
    try:
        return HttpServer((host, port), app, tls)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for HTTP on {host}:{port}: {exc.strerror} "
            "(receiver.http_port, PRODLOOP_RECEIVER__HTTP_PORT; receiver.http_enabled false turns it off)"
        ) from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "prodloop"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this
    server: HttpServer

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
    "/v1/logs": ("POST",),
    "/v1/deploys": ("POST",),
    "/v1/incidents": ("POST",),
    "/v1/webhooks/github": ("POST",),
    "/api/v1/modules": ("GET",),
}


class HttpApp:
    """The HTTP endpoints, over a :class:`~collector.ports.TraceSink` (and a
    :class:`~collector.ports.LogSink` for ``/v1/logs``: without one, that endpoint answers 404)."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        max_request_bytes: int,
        logs: LogSink | None = None,
        bearer_token: str = "",
        github_secret: str = "",
        github_deliveries: GithubDeliveries | None = None,
    ) -> None:
        self.sink = sink
        self.logs = logs
        self.max_request_bytes = max_request_bytes
        self._token = bearer_token.encode()
        self.github = GithubWebhook(sink, github_secret, github_deliveries)

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
                raise RequestError(501, f"Transfer-Encoding {te!r} is not supported", close=True)
            return self._read_chunked(h, limit)
        length = h.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length is required", close=True)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length!r}", close=True) from None
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
            raise RequestError(
                413,
                f"the body is {n} bytes; the limit is {limit} (receiver.max_request_bytes)",
                close=not drain,
            )
        data = h.rfile.read(n)
        if len(data) != n:
            raise RequestError(400, f"the body ended after {len(data)} of {n} bytes", close=True)
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
                raise RequestError(400, "bad chunk size in a chunked body", close=True) from None
            if size == 0:
                while h.rfile.readline(8192).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise RequestError(
                    413,
                    f"the body exceeds the limit of {limit} bytes (receiver.max_request_bytes)",
                    close=True,
                )
            chunk = h.rfile.read(size)
            if len(chunk) != size:
                raise RequestError(400, "the chunked body is truncated", close=True)
            parts.append(chunk)
            h.rfile.readline(8)

    def _body(self, h: _Handler) -> bytes:
        """The request body, gunzipped; size-limited before and after."""
        encoding = (h.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise RequestError(
                415, f"Content-Encoding {encoding!r} is not supported: use gzip or none", close=True
            )
        body = self._read_body(h)
        if encoding == "gzip":
            body = gunzip(body, self.max_request_bytes)
        return body

    def _check_bearer(self, h: _Handler, path: str) -> None:
        if not self._token:
            return
        got = h.headers.get("Authorization") or ""
        if not bearer_matches(got, self._token):
            why = "no Authorization header" if not got.strip() else "wrong bearer token"
            log.warning("refused %s %s from %s: %s", h.command, path, h.client_address[0], why)
            raise RequestError(
                401,
                f"unauthorized ({why}): send 'Authorization: Bearer <receiver.bearer_token>'",
                headers={"WWW-Authenticate": 'Bearer realm="prodloop"'},
                close=True,
            )

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, h: _Handler, method: str) -> None:
        path = urlsplit(h.path).path.rstrip("/") or "/"
        otlp = path in ("/v1/traces", "/v1/logs")
        ctype = PROTOBUF if otlp and media_type(h.headers.get("Content-Type")) == PROTOBUF else JSON
        try:
            allowed = _ROUTES.get(path)
            if allowed is None:
                raise RequestError(
                    404,
                    f"no endpoint {path}: prodloop serves POST /v1/traces, /v1/logs, /v1/deploys, /v1/incidents, "
                    "/v1/webhooks/github and GET /api/v1/modules",
                    close=h.headers.get("Content-Length") not in (None, "0"),
                )
            if method not in allowed:
                raise RequestError(
                    405,
                    f"{path} takes {', '.join(allowed)}",
                    headers={"Allow": ", ".join(allowed)},
                    close=True,
                )
            if path != "/v1/webhooks/github":
                self._check_bearer(h, path)
            if path == "/v1/traces":
                self._traces(h)
            elif path == "/v1/logs":
                self._logs(h)
            elif path == "/v1/deploys":
                self._events(h, "deploy")
            elif path == "/v1/incidents":
                self._events(h, "incident")
            elif path == "/v1/webhooks/github":
                self._github(h)
            else:
                self._modules(h)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        except Exception as exc:
            r = refusal(exc)
            if r.internal:
                log.exception("%s %s failed", method, path)
            self._refuse(h, r, otlp, ctype)

    def _refuse(self, h: _Handler, r: Refusal, otlp: bool, ctype: str) -> None:
        body = (
            status_body(r.http_status, r.message, ctype)
            if otlp
            else json.dumps({"error": r.message}).encode()
        )
        if not r.internal:
            self._send(h, r.http_status, body, ctype, r.headers, r.close)
            return
        with contextlib.suppress(OSError):
            self._send(h, r.http_status, body, ctype, close=True)

    # -- endpoints ---------------------------------------------------------------------

    @staticmethod
    def _otlp_encoding(h: _Handler) -> str:
        mt = media_type(h.headers.get("Content-Type"))
        if mt == PROTOBUF:
            return "otlp_proto"
        if mt == JSON:
            return "otlp_json"
        raise RequestError(
            415,
            f"Content-Type {mt or '(none)'!r} is not supported: send application/x-protobuf or application/json",
            close=True,
        )

    def _traces(self, h: _Handler) -> None:
        encoding = self._otlp_encoding(h)
        body = self._body(h)
        acc: Accepted = self.sink.export_traces(body, encoding)
        ctype = PROTOBUF if encoding == "otlp_proto" else JSON
        self._send(h, 200, export_response(acc, ctype), ctype)

    def _logs(self, h: _Handler) -> None:
        if self.logs is None:
            raise RequestError(
                404,
                "no endpoint /v1/logs: this receiver takes no logs (they are taken in direct mode)",
                close=h.headers.get("Content-Length") not in (None, "0"),
            )
        encoding = self._otlp_encoding(h)
        received = time.time_ns()
        body = self._body(h)
        acc: Accepted = self.logs.accept_logs(body, encoding, received_unix_nano=received)
        ctype = PROTOBUF if encoding == "otlp_proto" else JSON
        self._send(h, 200, export_logs_response(acc, ctype), ctype)

    def _events(self, h: _Handler, kind: str) -> None:
        mt = media_type(h.headers.get("Content-Type"))
        if mt not in EVENT_MEDIA_TYPES:
            raise RequestError(
                415, f"Content-Type {mt or '(none)'!r} is not supported: send application/json", close=True
            )
        docs = events_from_body(self._body(h))
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
        self._send(h, 200, json.dumps({"accepted": n}).encode(), JSON)

    def _github(self, h: _Handler) -> None:
        self.github.require_enabled()
        body = self._read_body(h)
        status, answer = self.github.receive(
            body,
            event=h.headers.get("X-GitHub-Event") or "",
            delivery=(h.headers.get("X-GitHub-Delivery") or "").strip(),
            signature=h.headers.get("X-Hub-Signature-256"),
            content_type=media_type(h.headers.get("Content-Type")),
            peer=h.client_address[0],
        )
        self._send(h, status, answer, JSON)

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
            raise RequestError(400, f"bad time: {exc}") from None
        flag = (one("attributed_only") or "").lower()
        if flag not in ("", "0", "1", "true", "false"):
            raise RequestError(400, f"attributed_only must be true or false, got {flag!r}")
        try:
            limit = int(one("limit") or 0)
        except ValueError:
            raise RequestError(400, "limit must be an integer") from None
        q = ModulesQuery(frm, to, one("service") or None, one("environment"), flag in ("1", "true"), limit)
        rows = self.sink.query_modules(q)
        if q.limit:
            rows = rows[: q.limit]
        self._send(h, 200, json.dumps(rows, indent=2).encode(), JSON)
