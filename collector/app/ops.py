"""The operations endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` (:class:`OpsServer`), and readiness.

``/metrics`` is Prometheus (a bearer token and TLS are optional), ``/healthz`` says the process
is alive, ``/readyz`` (:class:`Readiness`) that it started, the broker answers and the store is
healthy; all on ``service.metrics_port``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.app.settings import ServiceSettings
from collector.errors import ConfigError
from collector.receivers.auth import bearer_matches
from collector.receivers.tls_server import TlsThreadingServer

log = logging.getLogger("prodloop.service")


class _Check(Protocol):
    def problem(self) -> str | None: ...

    def stop(self) -> None: ...


class Readiness:
    """What ``/readyz`` answers, evaluated per request and cached for ``ttl_s``.

    Ready when the service has started (:meth:`set`: the stream pipeline or the receivers
    run), the broker answers (with Kafka, a :class:`collector.exporters.kafka.probe.BrokerProbe`) and the store
    is healthy (the pipeline's ``store_healthy``: False while a store write is failing).  The
    Event-like :meth:`set`, :meth:`clear` and :meth:`is_set` mark the start and the stop.
    """

    def __init__(self, *, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._started = threading.Event()
        self._stopping = False
        self._pipeline: object | None = None
        self._broker: _Check | None = None
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, str | None] | None = None

    def watch(self, *, pipeline: object | None = None, broker: _Check | None = None) -> None:
        """Check ``pipeline.store_healthy`` and ``broker.problem()`` too (``broker`` is stopped
        by :meth:`close`)."""
        with self._lock:
            if pipeline is not None:
                self._pipeline = pipeline
            if broker is not None:
                self._broker = broker
            self._cached = None

    def set(self) -> None:
        with self._lock:
            self._started.set()
            self._cached = None

    def clear(self) -> None:
        with self._lock:
            self._started.clear()
            self._stopping = True
            self._cached = None

    def is_set(self) -> bool:
        return self._started.is_set()

    def problem(self) -> str | None:
        """None when ready, else why not."""
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, self._evaluate())
            return self._cached[1]

    def _evaluate(self) -> str | None:
        if not self._started.is_set():
            return "stopping" if self._stopping else "starting"
        if self._broker is not None:
            why = self._broker.problem()
            if why is not None:
                return f"broker unreachable ({why})"
        # StreamPipeline and DirectPipeline have store_healthy; a sink without it counts as healthy
        if self._pipeline is not None and not getattr(self._pipeline, "store_healthy", True):
            return "store unhealthy (a write is failing and being retried)"
        return None

    def close(self) -> None:
        if self._broker is not None:
            self._broker.stop()


class _OpsHTTPServer(TlsThreadingServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("ops connection from %s failed", client_address, exc_info=True)


class OpsServer:
    """``/metrics``, ``/healthz`` (liveness: the process serves) and ``/readyz`` (:class:`Readiness`).

    With ``bearer_token``, ``/metrics`` needs ``Authorization: Bearer TOKEN``; the probes stay
    open (the kubelet sends no token).  With ``tls``, everything is served over HTTPS only.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Readiness,
        *,
        bearer_token: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        token = bearer_token.encode()

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a client that sends nothing (or no TLS handshake) is dropped after this

            def setup(self) -> None:
                super().setup()
                if isinstance(self.connection, ssl.SSLSocket):
                    try:
                        self.connection.do_handshake()
                    except (ssl.SSLError, OSError) as exc:
                        log.debug("ops TLS handshake with %s failed: %s", self.client_address[0], exc)
                        raise

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    sent = self.headers.get("Authorization")
                    if token and not bearer_matches(sent, token):
                        why = "wrong bearer token" if sent else "no Authorization header"
                        log.warning("refused GET /metrics from %s: %s", self.client_address[0], why)
                        self._send(
                            401,
                            f"unauthorized ({why}): send 'Authorization: Bearer <service.metrics_bearer_token>'\n".encode(),
                            "text/plain",
                            {"WWW-Authenticate": 'Bearer realm="prodloop"'},
                        )
                        return
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    problem = ready.problem()
                    if problem is None:
                        self._send(200, b"ready\n", "text/plain")
                    else:
                        self._send(503, f"not ready: {problem}\n".encode(), "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(
                self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.tls = tls is not None
        self.httpd = _OpsHTTPServer((host, port), Handler, tls)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)
        self.thread.start()

    @classmethod
    def from_settings(
        cls, service: ServiceSettings, registry: CollectorRegistry, ready: Readiness
    ) -> OpsServer:
        """From ``Settings.service``: address, bearer token, TLS files (ConfigError naming them)."""
        token = service.metrics_bearer_token.get_secret_value() if service.metrics_bearer_token else ""
        return cls(
            service.metrics_host,
            service.metrics_port,
            registry,
            ready,
            bearer_token=token,
            tls=_ops_tls(service),
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _ops_tls(service: ServiceSettings) -> ssl.SSLContext | None:
    cert, key = service.metrics_tls_cert_file, service.metrics_tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "service.metrics_tls_key_file" if cert is not None else "service.metrics_tls_cert_file"
        raise ConfigError(
            "service.metrics_tls_cert_file and service.metrics_tls_key_file must be set together "
            f"(PRODLOOP_SERVICE__METRICS_TLS_CERT_FILE / _KEY_FILE): {missing} is missing"
        )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except OSError as exc:  # ssl.SSLError too
        detail = f"cannot read {exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        raise ConfigError(
            f"service.metrics_tls_cert_file {str(cert)!r} / metrics_tls_key_file {str(key)!r}: {detail}"
        ) from None
    return ctx
