"""``prodloop run``: the long-running service.

With Kafka configured (``kafka.bootstrap_servers``) it runs the streaming pipeline
(:mod:`collector.pipelines.stream`) over the traces, deploys and incidents topics, and beside it the
OTLP receivers in gateway mode (:mod:`collector.exporters.kafka.gateway`: traces, deploys and incidents are
produced to those topics; ``GET /api/v1/modules`` reads the pipeline's store).  Without Kafka
it runs the OTLP receivers in direct mode on the embedded store (:mod:`collector.app.receivers`).

It starts the operations endpoints (:mod:`collector.app.ops`), logs JSON (what it did at
most every 10 s, the totals at shutdown, a fatal error as one line too), and on SIGTERM
flushes, commits and exits 0 within ``service.grace_seconds``.  Every object comes from the
composition root, :mod:`collector.app.build`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from attribution.attribute import Attributor
from attribution.repository import Repository
from collector.app import build
from collector.app.alerting import build_alert_engine
from collector.app.discovery import advertise
from collector.app.history import HistoryRescans
from collector.app.ops import OpsServer, Readiness
from collector.app.receivers import Receivers, run_receivers_forever, start_receivers
from collector.app.settings import ENV_PREFIX, ServiceSettings, Settings
from collector.app.shared_store import SharedStore, StoreModulesQuery
from collector.errors import ConfigError, ProdloopError, exit_code
from collector.processing import native
from collector.processing.metrics import (
    DIRECT_TALLIES,
    STREAM_TALLIES,
    ActivityLog,
    Metrics,
    ReceiverStatsCollector,
    service_registry,
)
from collector.processing.runtime import catch_stop_signals, tune_gc

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from collector.exporters.clickhouse.alert_state import StateStore
    from collector.exporters.wal.gateway import WalGateway
    from collector.ports import TraceSink

log = logging.getLogger("prodloop.service")

_GC_INTERVAL_S = 1.0
_LOGS_POLL_MS = 10  # the traces topic's poll paces the loop; the logs topic's must not stall it


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        counts = getattr(record, "counts", None)  # ActivityLog's numbers
        if counts is not None:
            out["counts"] = counts
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

    def __init__(self, settings: Settings, store: StateStore, repositories: list[Repository]) -> None:
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


def run_stream(
    settings: Settings, stop: threading.Event, metrics: Metrics, ready: Readiness, activity: ActivityLog
) -> int:
    """The stream pipeline over Kafka, or in direct mode over the write-ahead log
    (``receiver.durability: wal``); returns the exit code."""
    wal = not settings.kafka.bootstrap_servers
    r = settings.receiver
    with_receivers = (r.grpc_enabled or r.http_enabled) if wal else receivers_beside_stream(settings)
    loaded = build.load_attribution(settings, log_problems=True)
    store = build.open_store(settings)
    if not wal and not build.wait_for_kafka(settings, stop):
        log.info("stopped while waiting for Kafka, before consuming anything")
        store.close()
        return 0
    k = settings.kafka
    shared = SharedStore(store)  # the receivers' threads query it too
    make_parts = build.wal_pipeline if wal else build.stream_pipeline
    parts = make_parts(settings, shared, loaded.repositories, metrics=metrics, stop=stop)
    pipeline = parts.pipeline
    # exceptions recorded as log records: the logs topic, beside the traces topic
    logs = build.logs_pipeline(settings, shared, loaded.repositories, stop=stop, wal=parts.sink)
    ready.watch(pipeline=pipeline, broker=parts.broker)
    if wal:
        log.info(
            "direct mode: the write-ahead log %s into %s database %s",
            build.wal_dir(settings),
            store.display_dsn,
            store.database,
        )
    else:
        log.info(
            "consuming %s (%s) as group %s from %s into %s database %s",
            k.traces_topic,
            k.traces_encoding,
            k.group_id,
            ",".join(k.bootstrap_servers),
            store.display_dsn,
            store.database,
        )
    alerts = AlertLoop(settings, shared, loaded.repositories)
    rescans = _history_rescans(settings, loaded.repositories)
    rescans.start()  # open_store above migrated the store
    grace = settings.service.grace_seconds
    receivers: Receivers | None = None
    with contextlib.ExitStack() as advertised:
        try:
            if with_receivers:
                receivers = _start_gateway(settings, shared, metrics.registry, parts.sink)
                advertised.enter_context(advertise(store.dsn, store.database, receivers))
            ready.set()
            collected_at = time.monotonic()
            while not stop.is_set():
                pipeline.step()
                if logs is not None:
                    logs.pipeline.step(_LOGS_POLL_MS)
                alerts.tick()
                activity.tick()
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
            if logs is not None:
                logs.pipeline.flush_all(max(0.0, deadline - time.monotonic()))
            activity.close()
        finally:
            ready.clear()
            if receivers is not None:
                receivers.stop(1.0)  # no-op after a clean stop
            alerts.close()
            rescans.stop()
            if logs is not None:
                logs.close()  # before the logs it reads
            parts.close()
            store.close()
    log.info("stopped")
    return 0


def _start_gateway(
    settings: Settings, shared: SharedStore, registry: CollectorRegistry, wal: WalGateway | None
) -> Receivers:
    """The receivers beside the pipeline: traces, deploys and incidents go to their topics (so
    every replica sees the events), or to the write-ahead logs ``wal``; /api/v1/modules reads
    ``shared``."""
    sink: TraceSink = wal if wal is not None else build.kafka_gateway(settings)
    receivers = start_receivers(
        settings,
        sink=sink,
        query_modules=StoreModulesQuery(shared, settings.receiver.retry_after_seconds),
    )
    registry.register(ReceiverStatsCollector(sink))
    log.info(
        "prodloop receivers (%s): OTLP/gRPC %s, HTTP %s",
        f"direct mode, write-ahead log {build.wal_dir(settings)}"
        if wal is not None
        else f"gateway mode, to {settings.kafka.traces_topic}",
        receivers.grpc_endpoint or "off",
        receivers.http_url or "off",
    )
    return receivers


def _history_rescans(settings: Settings, repositories: list[Repository]) -> HistoryRescans:
    """The periodic git re-scans (history.repositories), not started: start them once the
    store is migrated (they open their own client without migrating)."""
    return HistoryRescans(
        lambda: build.open_store(settings, migrate=False), Attributor(repositories), settings.history
    )


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``, when the caller caught them already); returns
    the exit code.  A fatal error is logged (in ``service.log_format``), not raised."""
    if stop is None:
        stop = catch_stop_signals()
    setup_logging(settings.service.log_format, settings.service.log_level)
    try:
        return _run(settings, stop)
    except Exception as exc:
        return log_fatal(exc)


def fail_before_settings(exc: ConfigError) -> int:
    """The settings did not load, so neither did ``service.log_format``: log ``exc`` in the
    format its environment variable names, or its default; returns the exit code."""
    fmt = os.environ.get(
        f"{ENV_PREFIX}SERVICE__LOG_FORMAT", ServiceSettings.model_fields["log_format"].default
    )
    setup_logging("text" if fmt == "text" else "json", "INFO")
    return log_fatal(exc)


def log_fatal(exc: Exception) -> int:
    """One CRITICAL line for the error that stops the service; returns its exit code.  Our own
    errors name what and where (a traceback would add nothing); anything else is a bug."""
    if isinstance(exc, ProdloopError):
        log.critical("fatal: %s", exc)
        return exit_code(exc)
    log.critical("fatal: unexpected %s: %s", type(exc).__name__, exc, exc_info=exc)
    return 1


def _run(settings: Settings, stop: threading.Event) -> int:
    if stop.is_set():
        log.info("stopped during start-up, before consuming anything")
        return 0
    tune_gc()
    ready = Readiness()
    stream = bool(settings.kafka.bootstrap_servers or settings.receiver.durability == "wal")
    hot = native.resolve(settings.aggregation.hot_path)
    log.info("%s", native.describe(hot))
    registry = service_registry("stream" if settings.kafka.bootstrap_servers else "direct", hot)
    ops = OpsServer.from_settings(settings.service, registry, ready)
    log.info(
        "metrics and health on %s://%s:%d%s",
        "https" if ops.tls else "http",
        settings.service.metrics_host,
        ops.port,
        " (/metrics needs the bearer token)" if settings.service.metrics_bearer_token else "",
    )
    activity = ActivityLog(registry, STREAM_TALLIES if stream else DIRECT_TALLIES)
    try:
        if stream:  # the stream pipeline, over Kafka or the write-ahead log
            return run_stream(settings, stop, Metrics(registry), ready, activity)
        alert_loop: list[AlertLoop] = []
        # loaded once, for the direct pipeline and the alert rules
        repositories = build.load_attribution(settings, log_problems=True).repositories
        rescans = _history_rescans(settings, repositories)

        def on_tick() -> None:
            activity.tick()
            # the direct pipeline flushes on its own thread: alerts get their own client
            if not alert_loop:
                if settings.alerts.rules is None:
                    return
                store = build.open_store(settings, migrate=False)
                alert_loop.append(AlertLoop(settings, store, repositories))
            alert_loop[0].tick()

        try:

            def on_ready(receivers: Receivers) -> None:
                registry.register(ReceiverStatsCollector(receivers.sink))
                ready.watch(pipeline=receivers.sink)
                ready.set()
                rescans.start()  # the direct pipeline migrated the store

            run_receivers_forever(
                settings, stop, on_ready=on_ready, on_tick=on_tick, repositories=repositories
            )
        finally:
            rescans.stop()
            for loop in alert_loop:
                loop.close()
        activity.close()  # after the final flush
        return 0
    finally:
        ops.stop()
        ready.close()
