"""``prodloop run``: the long-running service.

With Kafka configured (``kafka.bootstrap_servers``) it runs the streaming pipeline
(:mod:`collector.pipelines.stream`) over the traces, deploys and incidents topics, and beside it the
OTLP receivers in gateway mode (:mod:`collector.exporters.kafka.gateway`: traces, deploys and incidents are
produced to those topics; ``GET /api/v1/modules`` reads the pipeline's store).  Without Kafka
it runs the OTLP receivers in direct mode on the embedded store (:mod:`collector.receivers.http`).

Operations (:class:`OpsServer`): ``/metrics`` (Prometheus; a bearer token and TLS are
optional), ``/healthz`` (the process is alive) and ``/readyz`` (:class:`Readiness`: started,
the broker answers, the store is healthy) on ``service.metrics_port``; JSON logs; SIGTERM
flushes, commits and exits 0 within ``service.grace_seconds``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.app.attribution_files import load_attribution_from
from collector.app.settings import ServiceSettings, Settings
from collector.errors import ConfigError, StoreError, UnavailableError
from collector.exporters.clickhouse.store import ClickHouseStore, default_dsn
from collector.ports import ModulesQuery
from collector.processing.metrics import Metrics, ReceiverStatsCollector
from collector.processing.runtime import catch_stop_signals, tune_gc
from collector.receivers.http import Receivers, advertise, bearer_matches, build_sink, start_receivers

log = logging.getLogger("prodloop.service")

_GC_INTERVAL_S = 1.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)


class _Check(Protocol):
    def problem(self) -> str | None: ...

    def stop(self) -> None: ...


class Readiness:
    """What ``/readyz`` answers, evaluated per request and cached for ``ttl_s``.

    Ready when the service has started (:meth:`set`: the stream pipeline or the receivers
    run), the broker answers (with Kafka, a :class:`collector.exporters.kafka.client.BrokerProbe`) and the store
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


class _OpsHTTPServer(ThreadingHTTPServer):
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
        metrics: Metrics,
        ready: Readiness,
        *,
        bearer_token: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        registry = metrics.registry
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
    def from_settings(cls, service: ServiceSettings, metrics: Metrics, ready: Readiness) -> OpsServer:
        """From ``Settings.service``: address, bearer token, TLS files (ConfigError naming them)."""
        token = service.metrics_bearer_token.get_secret_value() if service.metrics_bearer_token else ""
        return cls(
            service.metrics_host,
            service.metrics_port,
            metrics,
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


def _kafka_options(settings: Settings) -> Any:
    from collector.exporters.kafka.client import KafkaOptions

    return KafkaOptions.from_settings(settings.kafka)


class SharedStore:
    """A store used from several threads: each method call holds ``lock``.

    The pipeline and the alert loop write from the service's thread while the HTTP receiver's
    threads answer ``GET /api/v1/modules``.  One process opens an embedded (chDB) store once,
    so they share its client, one call at a time.
    """

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        lock = self.lock

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return locked


class StoreModulesQuery:
    """``GET /api/v1/modules`` from the service's :class:`SharedStore`.

    Waits at most ``wait_s`` for the store (a write in progress), then answers 503.
    """

    def __init__(self, shared: SharedStore, retry_after_s: int, wait_s: float = 10.0) -> None:
        self.shared = shared
        self.retry_after_s = retry_after_s
        self.wait_s = wait_s

    def __call__(self, q: ModulesQuery) -> list[dict[str, Any]]:
        if not self.shared.lock.acquire(timeout=self.wait_s):
            raise UnavailableError(
                f"the store stayed busy with writes for {self.wait_s:g}s", self.retry_after_s
            )
        try:
            rows: list[dict[str, Any]] = self.shared.store.query_modules(
                from_unix_nano=q.from_unix_nano,
                to_unix_nano=q.to_unix_nano,
                service=q.service,
                environment=q.environment,
                attributed_only=q.attributed_only,
            )
        except StoreError as exc:
            raise UnavailableError(f"the store failed: {exc}", self.retry_after_s) from exc
        finally:
            self.shared.lock.release()
        return rows


def receivers_beside_stream(settings: Settings) -> bool:
    """Whether ``prodloop run`` with Kafka starts the receivers (gateway mode) too.

    Raises ConfigError for ``receiver.mode: direct`` with Kafka: aggregating received spans
    here beside the pipeline would bypass the topic (no replay, no exactly-once).
    """
    r = settings.receiver
    if not (r.grpc_enabled or r.http_enabled):
        return False
    if r.mode == "direct":
        raise ConfigError(
            "receiver.mode is direct (PRODLOOP_RECEIVER__MODE, --receiver-mode) but kafka.bootstrap_servers "
            "is set (PRODLOOP_KAFKA__BOOTSTRAP_SERVERS): with Kafka the receivers run in gateway mode and "
            "produce to kafka.traces_topic. Set receiver.mode to gateway or auto, switch the receivers off "
            "(receiver.grpc_enabled and receiver.http_enabled false), or unset kafka.bootstrap_servers"
        )
    return True


class AlertLoop:
    """Evaluates the alert rules every ``alerts.interval_seconds`` (one replica at a time: a lease)."""

    def __init__(self, settings: Settings, store: Any, repositories: list[Any]) -> None:
        from collector.pipelines.alerts import build_alert_engine

        self.engine = build_alert_engine(settings, store, repositories=repositories)
        self.interval = float(settings.alerts.interval_seconds)
        self.next_at = time.monotonic() + min(self.interval, 5.0)
        if self.engine is not None:
            log.info("alert rules from %s, every %.0fs", settings.alerts.rules, self.interval)

    def tick(self) -> None:
        if self.engine is None or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.interval
        try:
            report = self.engine.evaluate_once(time.time_ns())
        except Exception:  # an alerting failure must never stop the ingestion
            log.exception("alert evaluation failed")
            return
        if getattr(report, "leader", True):
            log.info(
                "alerts evaluated: %d findings, %d ticket actions, %d errors",
                len(getattr(report, "findings", ())),
                len(getattr(report, "actions", ())),
                len(getattr(report, "errors", ())),
            )

    def close(self) -> None:
        if self.engine is None:
            return
        try:
            if self.engine.lease is not None:
                self.engine.lease.release(time.time_ns())
            for sink in self.engine.sinks.values():
                close = getattr(sink, "close", None)
                if close is not None:
                    close()
        except Exception:  # best effort on shutdown
            log.warning("releasing the alert lease failed", exc_info=True)


def run_stream(settings: Settings, stop: threading.Event, metrics: Metrics, ready: Readiness) -> int:
    """The Kafka streaming service; returns the exit code."""
    from collector.exporters.kafka.client import (
        BrokerProbe,
        DeadLetters,
        EventReader,
        TraceConsumer,
        wait_for_brokers,
    )
    from collector.pipelines.stream import StreamConfig, StreamPipeline
    from collector.processing.workers import resolve_workers

    with_receivers = receivers_beside_stream(settings)
    loaded = load_attribution_from(settings)
    for p in loaded.codeowners_problems:
        log.warning("%s:%d: %s", p.source, p.line, p.message)
    store = ClickHouseStore(
        settings.store.dsn or default_dsn(), settings.store.database, password=_password(settings)
    )
    store.apply_migrations()
    options = _kafka_options(settings)
    k = settings.kafka
    if not wait_for_brokers(k.bootstrap_servers, stop, k.startup_timeout_seconds):
        log.info("stopped while waiting for Kafka, before consuming anything")
        store.close()
        return 0
    dead = DeadLetters(options, k.dead_letter_topic)
    deploys = EventReader(options, k.deploys_topic)
    incidents = EventReader(options, k.incidents_topic)
    s = settings.stream
    cfg = StreamConfig(
        group_id=k.group_id,
        encoding=k.traces_encoding,
        batch_records=s.batch_records,
        linger_ms=s.linger_ms,
        max_buffered_records=s.max_buffered_records,
        max_buffered_bytes=s.max_buffered_bytes,
        dedup_horizon=s.dedup_horizon,
        deploy_skew_ms=s.deploy_skew_ms,
        window_ns=settings.aggregation.window_seconds * 1_000_000_000,
        max_groups_per_window=settings.aggregation.max_groups_per_window,
        sample_rate_attribute=settings.attribution.sample_rate_attribute,
        time_bounds=settings.time_bounds(),
        write_chunk_rows=s.write_chunk_rows,
        workers=resolve_workers(s.workers),
        backoff_max_s=s.backoff_max_seconds,
        grace_s=settings.service.grace_seconds,
        crash_at=settings.testing.crash_at,
        idempotent=not settings.testing.disable_idempotence,
    )

    def factory(on_assigned: Any, on_revoked: Any) -> Any:
        return TraceConsumer(
            options, k.traces_topic, k.group_id, on_assigned=on_assigned, on_revoked=on_revoked
        )

    shared = SharedStore(store)  # the receivers' threads query it too
    pipeline = StreamPipeline(
        cfg,
        factory,
        shared,
        loaded.repositories,
        deploys=deploys,
        incidents=incidents,
        dead_letters=dead,
        metrics=metrics,
        stop=stop,
    )
    ready.watch(pipeline=pipeline, broker=BrokerProbe(options).start())
    log.info(
        "consuming %s (%s) as group %s from %s into %s database %s",
        k.traces_topic,
        k.traces_encoding,
        k.group_id,
        ",".join(k.bootstrap_servers),
        store.dsn,
        store.database,
    )
    alerts = AlertLoop(settings, shared, loaded.repositories)
    grace = settings.service.grace_seconds
    receivers: Receivers | None = None
    with contextlib.ExitStack() as advertised:
        try:
            if with_receivers:
                receivers = _start_gateway(settings, shared, metrics)
                advertised.enter_context(advertise(store.dsn, store.database, receivers))
            ready.set()
            collected_at = time.monotonic()
            while not stop.is_set():
                pipeline.step()
                alerts.tick()
                if time.monotonic() - collected_at >= _GC_INTERVAL_S:
                    # kafka-python's fetched-partition objects form reference cycles (a PartitionRecords
                    # and its record generator) that hold whole fetch responses, megabytes each; with
                    # tune_gc's thresholds they waited for a rare full collection.  Start-up objects
                    # are frozen, so this is cheap.  Measured in bench/kafka_e2e.py: peak RSS of the
                    # consumer process about 750-800 -> 590 MB.
                    gc.collect()
                    collected_at = time.monotonic()
            deadline = time.monotonic() + grace
            if receivers is not None:
                # first take nothing new; a request is answered only once the broker acked it
                log.info("stopping: the receivers (grace %.0fs)", grace / 2)
                receivers.stop(grace / 2)
            left = max(0.0, deadline - time.monotonic())
            log.info("stopping: flushing buffered batches (grace %.0fs)", left)
            pipeline.flush_all(left)
        finally:
            ready.clear()
            if receivers is not None:
                receivers.stop(1.0)  # no-op after a clean stop
            alerts.close()
            pipeline.close()
            deploys.close()
            incidents.close()
            dead.close()
            store.close()
    log.info("stopped")
    return 0


def _start_gateway(settings: Settings, shared: SharedStore, metrics: Metrics) -> Receivers:
    """The receivers in gateway mode, beside the pipeline: traces, deploys and incidents go to
    their topics (so every replica sees the events); /api/v1/modules reads ``shared``."""
    sink = build_sink(settings)
    receivers = start_receivers(
        settings,
        sink=sink,
        query_modules=StoreModulesQuery(shared, settings.receiver.retry_after_seconds),
    )
    metrics.registry.register(ReceiverStatsCollector(sink))
    log.info(
        "prodloop receivers (gateway mode, to %s): OTLP/gRPC %s, HTTP %s",
        settings.kafka.traces_topic,
        receivers.grpc_endpoint or "off",
        receivers.http_url or "off",
    )
    return receivers


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``, when the caller caught them already)."""
    if stop is None:
        stop = catch_stop_signals()
    setup_logging(settings.service.log_format, settings.service.log_level)
    if stop.is_set():
        log.info("stopped during start-up, before consuming anything")
        return 0
    tune_gc()
    ready = Readiness()
    metrics = Metrics()
    ops = OpsServer.from_settings(settings.service, metrics, ready)
    log.info(
        "metrics and health on %s://%s:%d%s",
        "https" if ops.tls else "http",
        settings.service.metrics_host,
        ops.port,
        " (/metrics needs the bearer token)" if settings.service.metrics_bearer_token else "",
    )
    try:
        if settings.kafka.bootstrap_servers:
            return run_stream(settings, stop, metrics, ready)
        try:
            run_receivers_forever = importlib.import_module("collector.receivers.http").run_receivers_forever
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                "no Kafka configured (kafka.bootstrap_servers / PRODLOOP_KAFKA__BOOTSTRAP_SERVERS) and the "
                f"OTLP receivers are unavailable: {exc}"
            ) from exc
        alert_loop: list[AlertLoop] = []

        def on_tick() -> None:
            # the direct pipeline flushes on its own thread: alerts get their own client
            if not alert_loop:
                if settings.alerts.rules is None:
                    return
                store = ClickHouseStore(
                    settings.store.dsn or default_dsn(), settings.store.database, password=_password(settings)
                )
                loaded = load_attribution_from(settings)
                alert_loop.append(AlertLoop(settings, store, loaded.repositories))
            alert_loop[0].tick()

        try:

            def on_ready(receivers: Any) -> None:
                metrics.registry.register(ReceiverStatsCollector(receivers.sink))
                ready.watch(pipeline=receivers.sink)
                ready.set()

            run_receivers_forever(settings, stop, on_ready=on_ready, on_tick=on_tick)
        finally:
            for loop in alert_loop:
                loop.close()
        return 0
    finally:
        ops.stop()
        ready.close()


def _password(settings: Any) -> str | None:
    pw = settings.store.password
    return pw.get_secret_value() if pw is not None else None
