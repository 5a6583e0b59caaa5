"""The receivers' wiring: from Settings to a sink and running OTLP/gRPC and HTTP servers.

* :func:`build_sink`: the configured mode's sink, a :class:`~collector.pipelines.direct.DirectPipeline`
  on a store or a :class:`~collector.exporters.kafka.gateway.KafkaGateway` on a producer;
* :func:`start_receivers`: the servers of :mod:`collector.receivers` over that sink, as
  :class:`Receivers` (addresses, graceful stop);
* :func:`run_receivers_forever`: `prodloop run` without Kafka (direct mode on the store).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from attribution.model import DeployEvent, IncidentEvent
from attribution.repository import Repository
from collector.app import build
from collector.app.discovery import advertise
from collector.app.settings import Settings
from collector.errors import ConfigError
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.ports import Accepted, JsonObject, LogSink, ModulesQuery, TraceSink
from collector.receivers.grpc import start_grpc_server
from collector.receivers.http import HttpApp, HttpLimits, HttpServer, server_tls_context, start_http_server

log = logging.getLogger("prodloop.receiver")

ModulesQueryFn = Callable[[ModulesQuery], list[JsonObject]]


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
        http_server: HttpServer | None,
        host_grpc: str,
        host_http: str,
        tls: bool,
    ) -> None:
        self.sink = sink
        self._grpc = grpc_server
        self.grpc_port = grpc_port
        self._http = http_server
        self.http_port = http_server.server_address[1] if http_server is not None else None
        self.tls = tls
        self._host_grpc = host_grpc
        self._host_http = host_http
        self._stopped = False

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
        if self._http is not None:  # drains: in-flight requests finish within the grace
            self._http.stop(grace_seconds / 2)
        if done is not None:
            done.wait(max(0.0, deadline - time.monotonic()))
        self.sink.close(max(1.0, deadline - time.monotonic()))


class _QueryOverride:
    """A TraceSink whose query_modules is a given function (e.g. the service's own store)."""

    def __init__(self, inner: TraceSink, query: ModulesQueryFn) -> None:
        self._inner = inner
        self._query = query

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        return self._inner.export_traces(payload, encoding)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int:
        return self._inner.add_deploys(events, raw)

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int:
        return self._inner.add_incidents(events, raw)

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]:
        return self._query(q)

    def close(self, grace_s: float = 10.0) -> None:
        self._inner.close(grace_s)


def build_sink(
    settings: Settings,
    *,
    store: ClickHouseStore | None = None,
    repositories: Sequence[Repository] | None = None,
) -> TraceSink:
    """The sink for the configured mode (built by :mod:`collector.app.build`): a DirectPipeline
    (needs ``store``) or a KafkaGateway."""
    if resolve_mode(settings) == "direct":
        if store is None:
            raise ConfigError("direct mode needs a store")
        return build.direct_pipeline(settings, store, repositories or ())
    if not settings.kafka.bootstrap_servers:
        raise ConfigError("gateway mode needs kafka.bootstrap_servers (PRODLOOP_KAFKA__BOOTSTRAP_SERVERS)")
    return build.kafka_gateway(settings)


def start_receivers(
    settings: Settings,
    *,
    store: ClickHouseStore | None = None,
    repositories: Sequence[Repository] | None = None,
    sink: TraceSink | None = None,
    query_modules: ModulesQueryFn | None = None,
) -> Receivers:
    """Start the gRPC and HTTP receivers (as configured) in background threads.

    * direct mode: pass the open ``store`` and the attribution ``repositories``;
    * gateway mode: nothing more (the producer is built from ``settings.kafka``); pass
      ``query_modules`` to serve ``GET /api/v1/modules`` from a store this process holds;
    * ``sink``: any :class:`~collector.ports.TraceSink` (tests, or a sink built by the caller).

    OTLP logs (``/v1/logs``, ``LogsService``) are served when the sink is also a
    :class:`~collector.ports.LogSink` (the direct pipeline, the Kafka gateway).
    """
    r = settings.receiver
    tls_files = _tls_files(settings)
    if sink is None:
        sink = build_sink(settings, store=store, repositories=repositories)
    logs = sink if isinstance(sink, LogSink) else None
    if query_modules is not None:
        sink = _QueryOverride(sink, query_modules)
    token = r.bearer_token.get_secret_value() if r.bearer_token else ""
    grpc_server: grpc.Server | None = None
    grpc_port: int | None = None
    http_server: HttpServer | None = None
    try:
        if r.grpc_enabled:
            grpc_server, grpc_port = start_grpc_server(
                sink,
                host=r.grpc_host,
                port=r.grpc_port,
                workers=r.grpc_workers,
                max_request_bytes=r.max_request_bytes,
                bearer_token=token,
                tls=tls_files,
                logs=logs,
            )
        if r.http_enabled:
            ctx: ssl.SSLContext | None = None
            if tls_files is not None:
                assert r.tls_cert_file is not None and r.tls_key_file is not None
                ctx = server_tls_context(str(r.tls_cert_file), str(r.tls_key_file))
            app = HttpApp(
                sink,
                max_request_bytes=r.max_request_bytes,
                logs=logs,
                bearer_token=token,
                github_secret=r.github_webhook_secret.get_secret_value() if r.github_webhook_secret else "",
                workers=r.http_workers,
                body_timeout_s=r.http_body_timeout_seconds,
                max_header_bytes=r.http_max_header_bytes,
            )
            limits = HttpLimits(
                max_connections=r.http_max_connections,
                max_header_bytes=r.http_max_header_bytes,
                header_timeout_s=r.http_header_timeout_seconds,
                idle_timeout_s=r.http_idle_timeout_seconds,
            )
            http_server = start_http_server(app, r.http_host, r.http_port, ctx, limits)
    except BaseException:
        if grpc_server is not None:
            grpc_server.stop(0)
        sink.close(1.0)
        raise
    return Receivers(
        sink, grpc_server, grpc_port, http_server, r.grpc_host, r.http_host, tls_files is not None
    )


def run_receivers_forever(
    settings: Settings,
    stop_event: threading.Event,
    *,
    on_ready: Callable[[Receivers], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    repositories: Sequence[Repository] | None = None,
) -> None:
    """`prodloop run` with no Kafka: receivers in direct mode on the store (embedded chDB by
    default) until ``stop_event`` is set, then a graceful stop within
    ``service.grace_seconds`` (the queue is aggregated and flushed).

    Also works in gateway mode (Kafka configured, ``receiver.mode`` gateway or auto), for a
    process that only receives: then no store is opened.  (`prodloop run` with Kafka starts
    the receivers beside its stream pipeline instead: :func:`collector.app.service.run_stream`.)
    Direct mode attributes with ``repositories`` when given (the caller loaded them once),
    else loads them from the settings.
    """
    mode = resolve_mode(settings)
    grace = settings.service.grace_seconds
    store: ClickHouseStore | None = None
    dsn = build.store_dsn(settings)
    if mode == "direct":
        if repositories is None:
            repositories = build.load_attribution(settings, log_problems=True).repositories
        store = build.open_store(settings)
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
                    f", store {store.display_dsn}" if store is not None else "",
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
