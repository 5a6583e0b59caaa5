"""The one composition root: every store, pipeline config, sink and client built from :class:`Settings`.

Defaults live in the settings (``collector/app/settings.py``); this module only maps settings
onto the constructors of the exporters and pipelines, in one place.  The CLI, the service and
the demo call it; nothing else restates a setting.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from attribution.repository import Repository
from collector.app.attribution_files import LoadedAttribution, load_attribution_from
from collector.app.longloop import StoreSuspects
from collector.app.rules_file import load_rules
from collector.app.settings import Settings
from collector.app.shared_store import SharedStore
from collector.errors import ConfigError
from collector.exporters.clickhouse.alert_state import ClickHouseAlertState
from collector.exporters.clickhouse.client import default_dsn, redact_dsn
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.kafka.consumer import EventReader, TraceConsumer, topic_exists
from collector.exporters.kafka.gateway import KafkaGateway
from collector.exporters.kafka.options import KafkaOptions
from collector.exporters.kafka.probe import BrokerProbe, wait_for_brokers
from collector.exporters.kafka.producer import DeadLetters, KafkaProducerAdapter
from collector.exporters.tickets.file import FileSink
from collector.exporters.tickets.http import redact_url
from collector.exporters.wal.gateway import WalGateway
from collector.exporters.wal.log import WriteAheadLog
from collector.exporters.wal.source import WalEvents, WalSource
from collector.pipelines.alerts import AlertEngine, declared_modules
from collector.pipelines.direct import DirectPipeline
from collector.pipelines.files import IngestSummary, ingest
from collector.pipelines.stream import StreamConfig, StreamPipeline
from collector.processing import native
from collector.processing.batch import ProcessorConfig
from collector.processing.metrics import Metrics
from collector.processing.workers import resolve_workers

log = logging.getLogger("prodloop.build")

_NS_PER_S = 1_000_000_000

Store: TypeAlias = ClickHouseStore  # what open_store returns, for callers that may not import exporters


# -- the store ---------------------------------------------------------------------------------


def store_dsn(settings: Settings) -> str:
    """``store.dsn``, or the embedded store under the working directory when unset."""
    return settings.store.dsn or default_dsn()


def store_password(settings: Settings) -> str | None:
    """``store.password`` in clear, for the client only (never printed)."""
    pw = settings.store.password
    return pw.get_secret_value() if pw is not None else None


def open_store(settings: Settings, *, migrate: bool = True, create: bool = True) -> ClickHouseStore:
    """The ClickHouse store of ``settings.store``, its migrations applied unless ``migrate`` is False.

    Read commands pass ``create=False``: a missing store directory or database is then a
    :class:`StoreError` naming it, and nothing is created."""
    store = ClickHouseStore(
        store_dsn(settings), settings.store.database, password=store_password(settings), create=create
    )
    store.configure_costs(settings.cost_rates())
    if migrate:
        try:
            store.apply_migrations()
        except BaseException:
            store.close()
            raise
    return store


def wal_dir(settings: Settings) -> Path:
    """``receiver.wal_dir``, or beside the embedded store (a log replayed into another store
    would count its records there), or ``.prodloop/wal`` with a server store."""
    if settings.receiver.wal_dir is not None:
        return settings.receiver.wal_dir
    parts = urlsplit(store_dsn(settings))
    if parts.scheme == "chdb":
        store = Path(parts.path)
        return store.with_name(store.name + ".wal")
    return Path(".prodloop/wal")


# -- attribution -------------------------------------------------------------------------------


def load_attribution(settings: Settings, *, log_problems: bool = False) -> LoadedAttribution:
    """The repositories of ``settings.attribution``; load it once per process and pass it on.

    ``log_problems``: log the CODEOWNERS and modules problems as warnings (the service; the CLI
    prints them itself).
    """
    loaded = load_attribution_from(settings)
    if log_problems:
        for p in loaded.codeowners_problems:
            log.warning("%s:%s: %s: %s", p.source, p.line, p.severity, p.message)
        for m in loaded.module_problems:
            log.warning("%s", m)
    return loaded


# -- Kafka -------------------------------------------------------------------------------------


def kafka_options(settings: Settings, *, client_id: str = "prodloop") -> KafkaOptions:
    """The Kafka clients' connection, security and group-membership options (``settings.kafka``)."""
    k = settings.kafka
    return KafkaOptions(
        bootstrap_servers=tuple(k.bootstrap_servers),
        security_protocol=k.security_protocol,
        sasl_mechanism=k.sasl_mechanism,
        sasl_username=k.sasl_username,
        sasl_password=k.sasl_password.get_secret_value() if k.sasl_password else "",
        ssl_cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
        ssl_certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
        ssl_keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
        ssl_check_hostname=k.ssl_check_hostname,
        client_id=client_id,
        group_instance_id=k.group_instance_id,
        leave_group_on_stop=k.leave_group_on_stop,
        session_timeout_ms=k.session_timeout_ms,
    )


# -- the three ingest paths --------------------------------------------------------------------


def processor_config(settings: Settings) -> ProcessorConfig:
    """The batch processing every ingest path shares (``aggregation``, ``attribution``; the
    stream's encoding and dedup horizon)."""
    a = settings.aggregation
    return ProcessorConfig(
        encoding=settings.kafka.traces_encoding,
        dedup_horizon=settings.stream.dedup_horizon,
        window_ns=a.window_seconds * _NS_PER_S,
        max_groups_per_window=a.max_groups_per_window,
        sample_rate_attribute=settings.attribution.sample_rate_attribute,
        time_bounds=settings.time_bounds(),
        trace_wait_ms=a.trace_wait_ms,
        max_buffered_spans=a.max_buffered_spans,
        max_exception_types=a.max_exception_types,
        cpu_time_attribute=settings.cost.cpu_time_attribute,
        cpu_time_unit_ns=settings.cost.cpu_time_unit_ns,
        native=native.resolve(a.hot_path),
    )


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The settings as ``prodloop config`` shows them: secrets redacted, and the URLs that may
    carry credentials (the store DSN, the webhook) as their exporters show them."""
    data = settings.redacted_dump()
    data["store"]["dsn"] = redact_dsn(settings.store.dsn)
    data["alerts"]["webhook"]["url"] = redact_url(settings.alerts.webhook.url)
    return data


TESTING_HOOKS_ENV = "PRODLOOP_TESTING_HOOKS"


def testing_hooks(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The crash tests' hooks, not settings: ``PRODLOOP_TESTING_HOOKS='{"crash_at": "after_write:3",
    "disable_idempotence": true}'`` -> (crash_at, idempotent)."""
    raw = environ.get(TESTING_HOOKS_ENV, "")
    if not raw:
        return "", True
    try:
        hooks = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{TESTING_HOOKS_ENV}: not JSON: {exc}") from None
    if not isinstance(hooks, dict) or set(hooks) - {"crash_at", "disable_idempotence"}:
        raise ConfigError(f"{TESTING_HOOKS_ENV}: expected an object with crash_at, disable_idempotence")
    crash_at, disable = hooks.get("crash_at", ""), hooks.get("disable_idempotence", False)
    if not isinstance(crash_at, str) or not isinstance(disable, bool):
        raise ConfigError(f"{TESTING_HOOKS_ENV}: crash_at is a string, disable_idempotence a boolean")
    return crash_at, not disable


def stream_config(settings: Settings) -> StreamConfig:
    """The stream pipeline's config (``kafka``, ``stream``, ``aggregation``; the testing hooks)."""
    k, s = settings.kafka, settings.stream
    crash_at, idempotent = testing_hooks(os.environ)
    return StreamConfig(
        group_id=k.group_id,
        processing=processor_config(settings),
        batch_records=s.batch_records,
        linger_ms=s.linger_ms,
        max_buffered_records=s.max_buffered_records,
        max_buffered_bytes=s.max_buffered_bytes,
        deploy_skew_ms=s.deploy_skew_ms,
        write_chunk_rows=s.write_chunk_rows,
        workers=resolve_workers(s.workers),
        backoff_max_s=s.backoff_max_seconds,
        grace_s=settings.service.grace_seconds,
        crash_at=crash_at,
        idempotent=idempotent,
    )


def wait_for_kafka(settings: Settings, stop: threading.Event) -> bool:
    """Wait up to ``kafka.startup_timeout_seconds`` for a reachable broker; False when ``stop`` came first."""
    k = settings.kafka
    return wait_for_brokers(k.bootstrap_servers, stop, k.startup_timeout_seconds)


@dataclass
class StreamParts:
    """The stream pipeline and the clients or logs it reads; :meth:`close` closes them in order."""

    pipeline: StreamPipeline
    closers: list[Callable[[], None]]  # after the pipeline, in order
    broker: BrokerProbe | None = None  # Kafka: started; the readiness check stops it
    sink: WalGateway | None = None  # the write-ahead log: the receivers' sink

    def close(self) -> None:
        self.pipeline.close()
        for close in self.closers:
            close()


def stream_pipeline(
    settings: Settings,
    store: SharedStore,
    repositories: list[Repository],
    *,
    metrics: Metrics,
    stop: threading.Event,
) -> StreamParts:
    """The stream pipeline over the traces topic, with the deploys, incidents and dead-letter topics."""
    options = kafka_options(settings)
    k = settings.kafka
    dead = DeadLetters(options, k.dead_letter_topic)
    deploys = EventReader(options, k.deploys_topic)
    incidents = EventReader(options, k.incidents_topic)

    def consumer(
        on_assigned: Callable[[list[int]], None], on_revoked: Callable[[list[int]], None]
    ) -> TraceConsumer:
        return TraceConsumer(
            options, k.traces_topic, k.group_id, on_assigned=on_assigned, on_revoked=on_revoked
        )

    pipeline = StreamPipeline(
        stream_config(settings),
        consumer,
        store,
        repositories,
        deploys=deploys,
        incidents=incidents,
        dead_letters=dead,
        metrics=metrics,
        stop=stop,
    )
    return StreamParts(
        pipeline, [deploys.close, incidents.close, dead.close], broker=BrokerProbe(options).start()
    )


def logs_group_id(settings: Settings) -> str:
    """The consumer group of the logs topic (see :func:`logs_pipeline`)."""
    return f"{settings.kafka.group_id}-logs"


def logs_pipeline(
    settings: Settings,
    store: SharedStore,
    repositories: list[Repository],
    *,
    stop: threading.Event,
    wal: WalGateway | None = None,
) -> StreamParts | None:
    """The stream pipeline over the logs topic (or, in direct mode, over ``wal``'s log of log
    records), for the exceptions its records carry: the same intents, tokens and commits as the
    traces', with its own deploys reader, inline processing and no trace buffer.  On Kafka its
    consumer group is :func:`logs_group_id`: in the traces' group, a rebalance for one topic
    would stall the other's consumer in the same loop.  Its metrics are its own (the service's
    are per partition of the traces topic).  None when the Kafka topic does not exist (logged):
    it is looked for at start only."""
    k = settings.kafka
    cfg = stream_config(settings)
    processing = replace(
        cfg.processing, signal="logs", encoding="otlp_proto" if wal is not None else k.logs_encoding
    )
    if wal is not None:
        topic = f"wal-{wal.log_records.identity}"
        cfg = replace(cfg, workers=0, processing=processing)
        pipeline = StreamPipeline(
            cfg,
            lambda on_assigned, _on_revoked: WalSource(wal.log_records, topic, on_assigned),
            store,
            repositories,
            deploys=WalEvents(wal.deploys, f"{topic}-deploys"),
            metrics=Metrics(),
            stop=stop,
        )
        return StreamParts(pipeline, [])
    options = kafka_options(settings, client_id="prodloop-logs")
    if not topic_exists(options, k.logs_topic):
        log.info(
            "no logs topic %s (kafka.logs_topic): exceptions in OTLP logs are not consumed", k.logs_topic
        )
        return None
    dead = DeadLetters(options, k.dead_letter_topic)
    deploys = EventReader(options, k.deploys_topic)
    group = logs_group_id(settings)
    cfg = replace(cfg, group_id=group, workers=0, processing=processing)

    def consumer(
        on_assigned: Callable[[list[int]], None], on_revoked: Callable[[list[int]], None]
    ) -> TraceConsumer:
        return TraceConsumer(options, k.logs_topic, group, on_assigned=on_assigned, on_revoked=on_revoked)

    pipeline = StreamPipeline(
        cfg, consumer, store, repositories, deploys=deploys, dead_letters=dead, metrics=Metrics(), stop=stop
    )
    return StreamParts(pipeline, [deploys.close, dead.close])


def wal_pipeline(
    settings: Settings,
    store: SharedStore,
    repositories: list[Repository],
    *,
    metrics: Metrics,
    stop: threading.Event,
) -> StreamParts:
    """Direct mode with ``receiver.durability: wal``: the receivers append to write-ahead logs
    (traces, log records, deploys, incidents) and answer after the fsync; the stream pipeline
    reads the traces' as a topic of one partition, with the same intents, tokens and commits as
    a Kafka topic (:func:`logs_pipeline` reads the log records')."""
    r = settings.receiver
    directory = wal_dir(settings)
    logs: list[WriteAheadLog] = []
    try:
        for name, bound in (
            ("traces", r.wal_max_bytes),
            ("logs", r.wal_max_bytes),
            ("deploys", 64 << 20),
            ("incidents", 64 << 20),
        ):
            logs.append(WriteAheadLog(directory / name, max_bytes=bound))
    except BaseException:
        for wal in logs:
            wal.close()
        raise
    traces, log_records, deploys, incidents = logs
    topic = f"wal-{traces.identity}"  # intents and dedup tokens are this log's own
    cfg = stream_config(settings)
    cfg = replace(cfg, processing=replace(cfg.processing, encoding="otlp_proto"))
    pipeline = StreamPipeline(
        cfg,
        lambda on_assigned, _on_revoked: WalSource(
            traces, topic, on_assigned, retain_records=cfg.processing.dedup_horizon
        ),
        store,
        repositories,
        deploys=WalEvents(deploys, f"{topic}-deploys"),
        incidents=WalEvents(incidents, f"{topic}-incidents"),
        metrics=metrics,
        stop=stop,
    )
    gateway = WalGateway(traces, log_records, deploys, incidents, retry_after_s=r.retry_after_seconds)
    return StreamParts(pipeline, [w.close for w in logs], sink=gateway)


def direct_pipeline(
    settings: Settings, store: ClickHouseStore, repositories: Sequence[Repository]
) -> DirectPipeline:
    """The receivers' sink in direct mode: aggregate here, flush to ``store`` every interval."""
    r = settings.receiver
    return DirectPipeline(
        store,
        list(repositories),
        processing=processor_config(settings),
        flush_interval_s=r.flush_interval_seconds,
        queue_max_spans=r.queue_max_spans,
        retry_after_s=r.retry_after_seconds,
    )


def kafka_gateway(settings: Settings) -> KafkaGateway:
    """The receivers' sink in gateway mode: produce to the traces, logs, deploys and incidents topics."""
    r, k = settings.receiver, settings.kafka
    producer = KafkaProducerAdapter(
        kafka_options(settings, client_id="prodloop-gateway").client_config(),
        max_request_size=r.max_request_bytes,
        max_block_s=r.gateway_ack_timeout_seconds,
    )
    return KafkaGateway(
        producer,
        traces_topic=k.traces_topic,
        logs_topic=k.logs_topic,
        deploys_topic=k.deploys_topic,
        incidents_topic=k.incidents_topic,
        max_inflight_bytes=r.gateway_max_inflight_bytes,
        ack_timeout_s=r.gateway_ack_timeout_seconds,
        retry_after_s=r.retry_after_seconds,
    )


def ingest_files(
    settings: Settings,
    store: ClickHouseStore,
    repositories: list[Repository],
    trace_files: list[Path],
    deploy_files: list[Path],
    *,
    now_unix_nano: int,
    progress: Callable[[int], None] | None = None,
    incident_files: Sequence[Path] = (),
) -> IngestSummary:
    """``prodloop ingest``: the file pipeline with ``aggregation`` and ``attribution`` settings."""
    return ingest(
        store,
        repositories,
        trace_files,
        deploy_files,
        now_unix_nano=now_unix_nano,
        processing=processor_config(settings),
        progress=progress,
        incident_files=incident_files,
    )


# -- alerts ------------------------------------------------------------------------------------


def file_alert_engine(
    store: ClickHouseStore,
    rules_file: Path,
    tickets_file: Path,
    repositories: Sequence[Repository],
    *,
    dashboard_url: str = "",
) -> tuple[AlertEngine, FileSink]:
    """An alert engine without a lease whose only sink appends to ``tickets_file`` (the demo)."""
    sink = FileSink(tickets_file)
    engine = AlertEngine(
        ClickHouseAlertState(store),
        load_rules(rules_file),
        [sink],
        declared=declared_modules(repositories),
        dashboard_url=dashboard_url,
        suspects=StoreSuspects(store),
    )
    return engine, sink
