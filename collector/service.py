"""``prodloop run``: the long-running service.

With Kafka configured (``kafka.bootstrap_servers``) it runs the streaming pipeline
(:mod:`collector.pipeline`) over the traces, deploys and incidents topics.  Without Kafka
it runs the OTLP receivers in direct mode on the embedded store (:mod:`collector.receiver`).

Operations: ``/metrics`` (Prometheus), ``/healthz`` (the process is alive) and ``/readyz``
(the store answered and, with Kafka, partitions are assigned) on ``service.metrics_port``;
JSON logs; SIGTERM flushes, commits and exits 0 within ``service.grace_seconds``.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.clickhouse import ClickHouseStore, default_dsn
from collector.config import load_attribution_from
from collector.errors import ConfigError
from collector.metrics import Metrics, ReceiverStatsCollector
from collector.runtime import catch_stop_signals, tune_gc
from collector.settings import Settings

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


class OpsServer:
    """/metrics, /healthz, /readyz."""

    def __init__(self, host: str, port: int, metrics: Metrics, ready: threading.Event) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = generate_latest(registry)
                    self._send(200, body, CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    ok = ready.is_set()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _kafka_options(settings: Settings) -> Any:
    from collector.kafka import KafkaOptions

    return KafkaOptions.from_settings(settings.kafka)


class AlertLoop:
    """Evaluates the alert rules every ``alerts.interval_seconds`` (one replica at a time: a lease)."""

    def __init__(self, settings: Settings, store: Any, repositories: list[Any]) -> None:
        from collector.alerts import build_alert_engine

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


def run_stream(settings: Settings, stop: threading.Event, metrics: Metrics, ready: threading.Event) -> int:
    """The Kafka streaming service; returns the exit code."""
    from collector.kafka import DeadLetters, EventReader, TraceConsumer, wait_for_brokers
    from collector.pipeline import StreamConfig, StreamPipeline
    from collector.workers import resolve_workers

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
        write_chunk_rows=s.write_chunk_rows,
        workers=resolve_workers(s.workers),
        backoff_max_s=s.backoff_max_seconds,
        crash_at=settings.testing.crash_at,
        idempotent=not settings.testing.disable_idempotence,
    )

    def factory(on_assigned: Any, on_revoked: Any) -> Any:
        return TraceConsumer(
            options, k.traces_topic, k.group_id, on_assigned=on_assigned, on_revoked=on_revoked
        )

    pipeline = StreamPipeline(
        cfg,
        factory,
        store,
        loaded.repositories,
        deploys=deploys,
        incidents=incidents,
        dead_letters=dead,
        metrics=metrics,
    )
    log.info(
        "consuming %s (%s) as group %s from %s into %s database %s",
        k.traces_topic,
        k.traces_encoding,
        k.group_id,
        ",".join(k.bootstrap_servers),
        store.dsn,
        store.database,
    )
    alerts = AlertLoop(settings, store, loaded.repositories)
    ready.set()
    collected_at = time.monotonic()
    try:
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
        log.info("stopping: flushing buffered batches (grace %.0fs)", settings.service.grace_seconds)
        pipeline.flush_all(settings.service.grace_seconds)
    finally:
        ready.clear()
        alerts.close()
        pipeline.close()
        deploys.close()
        incidents.close()
        dead.close()
        store.close()
    log.info("stopped")
    return 0


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``, when the caller caught them already)."""
    if stop is None:
        stop = catch_stop_signals()
    setup_logging(settings.service.log_format, settings.service.log_level)
    if stop.is_set():
        log.info("stopped during start-up, before consuming anything")
        return 0
    tune_gc()
    ready = threading.Event()
    metrics = Metrics()
    ops = OpsServer(settings.service.metrics_host, settings.service.metrics_port, metrics, ready)
    log.info("metrics and health on http://%s:%d", settings.service.metrics_host, ops.port)
    try:
        if settings.kafka.bootstrap_servers:
            return run_stream(settings, stop, metrics, ready)
        try:
            run_receivers_forever = importlib.import_module("collector.receiver").run_receivers_forever
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
                ready.set()

            run_receivers_forever(settings, stop, on_ready=on_ready, on_tick=on_tick)
        finally:
            for loop in alert_loop:
                loop.close()
        return 0
    finally:
        ops.stop()


def _password(settings: Any) -> str | None:
    pw = settings.store.password
    return pw.get_secret_value() if pw is not None else None
