"""Prometheus metrics of the service (one registry per service instance), its build and
process series, and the INFO summaries of what it did (:class:`ActivityLog`)."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from attribution.aggregate import BatchStats
from attribution.tracebuffer import BufferStats

log = logging.getLogger("prodloop.service")


def service_registry(mode: Literal["stream", "direct"], native: bool) -> CollectorRegistry:
    """The registry ``prodloop run`` serves: process (CPU, RSS, fds), platform and Python GC
    series, and ``prodloop_build_info`` (``native``: whether the native hot path runs).  The
    stream pipeline's :class:`Metrics` go on it in stream mode; no ``*_created`` series
    (prometheus_client's switch is process-wide)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client 0.23
    r = CollectorRegistry()
    ProcessCollector(registry=r)
    PlatformCollector(registry=r)
    GCCollector(registry=r)
    Gauge(
        "prodloop_build_info",
        "Always 1: the version, whether the native hot path runs, the Python version and the mode",
        ["version", "native", "python", "mode"],
        registry=r,
    ).labels(
        version=version("prodloop"),
        native=str(native).lower(),
        python=platform.python_version(),
        mode=mode,
    ).set(1)
    return r


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.records_in = Counter("prodloop_records_in", "Kafka records (OTLP requests) consumed", registry=r)
        self.spans_in = Counter("prodloop_spans_in", "Spans decoded from committed batches", registry=r)
        self.spans_attributed = Counter(
            "prodloop_spans_attributed", "Spans attributed to a module", registry=r
        )
        self.unattributed = Counter(
            "prodloop_spans_unattributed", "Spans not attributed, by reason", ["reason"], registry=r
        )
        self.rejected = Counter(
            "prodloop_rejected", "Rejected records or spans, by reason", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "prodloop_spans_duplicate", "Spans dropped as exporter-retry duplicates", registry=r
        )
        self.overflow = Counter("prodloop_spans_overflow", "Spans past the cardinality cap", registry=r)
        self.dead_lettered = Counter(
            "prodloop_dead_lettered", "Records sent to the dead-letter topic", registry=r
        )
        self.rows_refused = Counter(
            "prodloop_store_rows_refused",
            "Aggregate rows the store refused (never retried; dead-lettered as JSON)",
            registry=r,
        )
        self.batches = Counter("prodloop_batches_written", "Batches written and committed", registry=r)
        self.rows_written = Counter("prodloop_rows_written", "Aggregate rows written", registry=r)
        self.write_seconds = Histogram(
            "prodloop_write_seconds",
            "ClickHouse write latency per batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.store_errors = Counter(
            "prodloop_store_errors", "Failed store or broker operations (retried)", ["operation"], registry=r
        )
        self.commit_failures = Counter("prodloop_commit_failures", "Offset commits that failed", registry=r)
        self.lag = Gauge(
            "prodloop_consumer_lag",
            "Records between the committed offset and the partition end",
            ["partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "prodloop_committed_offset", "Last committed offset", ["partition"], registry=r
        )
        self.last_commit = Gauge(
            "prodloop_last_commit_timestamp_seconds",
            "Unix time of the last offset commit (alert on its age to catch a stalled pipeline)",
            registry=r,
        )
        self.partitions = Gauge(
            "prodloop_partitions_assigned", "Partitions assigned to this replica", registry=r
        )
        self.paused = Gauge("prodloop_fetch_paused", "1 while fetching is paused by backpressure", registry=r)
        self.deploys_in = Counter("prodloop_deploys_in", "Deploy events read", registry=r)
        self.deploys_late = Counter(
            "prodloop_deploys_late",
            "Deploy events that arrived after batches they would have tagged",
            registry=r,
        )
        self.incidents_in = Counter("prodloop_incidents_in", "Incident events read", registry=r)
        self.written_offset = Gauge(
            "prodloop_written_offset",
            "End of the last batch written (the committed offset trails it by the trace buffer's records)",
            ["partition"],
            registry=r,
        )
        self.trace_buffer_spans = Gauge(
            "prodloop_trace_buffer_spans",
            "Spans held in the trace buffer, per partition",
            ["partition"],
            registry=r,
        )
        self.traces_completed = Counter(
            "prodloop_traces_completed",
            "Traces whose self time was computed, by how they completed",
            ["how"],
            registry=r,
        )
        self.spans_orphaned = Counter(
            "prodloop_spans_orphaned",
            "Spans whose parent never arrived (they keep their whole duration)",
            registry=r,
        )
        self.spans_late = Counter(
            "prodloop_spans_late", "Spans that arrived after their trace had completed", registry=r
        )
        self.exceptions_unattributed = Counter(
            "prodloop_exceptions_unattributed",
            "Exceptions whose stack trace led to no module, by reason",
            ["reason"],
            registry=r,
        )
        self.encoding_detected = Counter(
            "prodloop_encoding_detected", "Records whose encoding was auto-detected", ["encoding"], registry=r
        )

    def count_buffer(self, st: BufferStats, outcome_stats: BatchStats) -> None:
        """The trace buffer's and exceptions' counts of one committed batch (or flush)."""
        self.traces_completed.labels(how="wait").inc(st.traces - st.early - st.idle)
        self.traces_completed.labels(how="early").inc(st.early)
        self.traces_completed.labels(how="idle").inc(st.idle)
        self.spans_orphaned.inc(st.orphans)
        self.spans_late.inc(st.late)
        for reason, n in outcome_stats.exceptions_unattributed.items():
            self.exceptions_unattributed.labels(reason=reason).inc(n)

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return float(v) if v is not None else 0.0


class ReceiverStatsCollector(Collector):
    """The OTLP receivers' counters, read at scrape time (nothing added to the request path).

    ``sink`` is the receivers' ingress: the direct pipeline (``stats``: a
    :class:`collector.pipelines.direct.DirectStats`), the write-ahead log's gateway
    (``requests``) or the Kafka gateway (``records_produced``).
    """

    def __init__(self, sink: object) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        s = getattr(self._sink, "stats", None)
        if s is not None:
            counters = (
                (
                    "prodloop_receiver_requests",
                    "OTLP trace requests taken into the direct pipeline",
                    s.requests,
                ),
                (
                    "prodloop_receiver_requests_refused",
                    "OTLP trace requests refused with 429/503 or RESOURCE_EXHAUSTED (queue full, store failing)",
                    s.requests_refused_busy,
                ),
                (
                    "prodloop_receiver_spans_accepted",
                    "Spans accepted into the direct pipeline",
                    s.spans_accepted,
                ),
                (
                    "prodloop_receiver_spans_rejected",
                    "Invalid spans rejected (partial success)",
                    s.spans_rejected,
                ),
                (
                    "prodloop_direct_spans_aggregated",
                    "Spans aggregated by the direct pipeline",
                    s.spans_aggregated,
                ),
                ("prodloop_direct_spans_attributed", "Spans attributed to a module", s.spans_attributed),
                ("prodloop_direct_spans_overflow", "Spans past the cardinality cap", s.overflow_spans),
                ("prodloop_direct_flushes", "Flushes of the aggregates to the store", s.flushes),
                ("prodloop_direct_flush_failures", "Flushes that failed (retried)", s.flush_failures),
                ("prodloop_direct_rows_written", "Aggregate rows written", s.rows_written),
                (
                    "prodloop_direct_spans_lost_at_stop",
                    "Spans not flushed when the grace period ran out at stop",
                    s.spans_lost_at_stop,
                ),
            )
            for name, doc, value in counters:
                yield CounterMetricFamily(name, doc, value=value)
            yield SummaryMetricFamily(
                "prodloop_direct_write_seconds",
                "Store write latency of the flushes",
                count_value=s.flushes,
                sum_value=s.write_seconds,
            )
            unattributed = CounterMetricFamily(
                "prodloop_direct_spans_unattributed", "Spans not attributed, by reason", labels=["reason"]
            )
            for reason, n in sorted(dict(s.unattributed_by_reason).items()):
                unattributed.add_metric([reason], n)
            yield unattributed
            queued = getattr(self._sink, "queued_spans", None)
            if queued is not None:
                yield GaugeMetricFamily(
                    "prodloop_direct_queued_spans", "Spans accepted and not yet aggregated", value=queued
                )
            if s.last_flush_unix_nano:
                yield GaugeMetricFamily(
                    "prodloop_direct_last_flush_timestamp_seconds",
                    "Unix time of the last successful flush (a crash loses what came after it)",
                    value=s.last_flush_unix_nano / 1e9,
                )
        elif getattr(self._sink, "requests", None) is not None:  # the write-ahead log's gateway
            for name, doc, attr in (
                (
                    "prodloop_receiver_requests",
                    "OTLP trace requests written to the write-ahead log",
                    "requests",
                ),
                (
                    "prodloop_receiver_requests_refused",
                    "OTLP trace requests refused with 429 or RESOURCE_EXHAUSTED (the log is full)",
                    "requests_refused_busy",
                ),
                (
                    "prodloop_receiver_spans_accepted",
                    "Spans written to the write-ahead log",
                    "spans_accepted",
                ),
            ):
                yield CounterMetricFamily(name, doc, value=getattr(self._sink, attr))
            traces = self._sink.traces  # type: ignore[attr-defined]
            yield CounterMetricFamily(
                "prodloop_wal_fsyncs", "fsyncs of the traces log, one per group commit", value=traces.fsyncs
            )
            yield GaugeMetricFamily(
                "prodloop_wal_bytes",
                "Bytes in the traces log, acknowledged and not yet removed (at most receiver.wal_max_bytes)",
                value=traces.size_bytes,
            )
            yield CounterMetricFamily(
                "prodloop_wal_torn_tails",
                "Torn or corrupt tails cut from the logs at start (never acknowledged records)",
                value=sum(w.recovered.torn_tails for w in self._sink.wals),  # type: ignore[attr-defined]
            )
        produced = getattr(self._sink, "records_produced", None)
        if produced is not None:
            yield CounterMetricFamily(
                "prodloop_gateway_records_produced",
                "Records the broker acknowledged on the traces, deploys and incidents topics",
                value=produced,
            )


# (key, sample name: summed over its labels) per mode, for ActivityLog; the log line spells the key out
STREAM_TALLIES: tuple[tuple[str, str], ...] = (
    ("batches_committed", "prodloop_batches_written_total"),
    ("spans", "prodloop_spans_in_total"),
    ("rows_written", "prodloop_rows_written_total"),
    ("rejected", "prodloop_rejected_total"),
    ("commit_failures", "prodloop_commit_failures_total"),
    ("store_errors", "prodloop_store_errors_total"),
)
DIRECT_TALLIES: tuple[tuple[str, str], ...] = (
    ("flushes", "prodloop_direct_flushes_total"),
    ("spans_accepted", "prodloop_receiver_spans_accepted_total"),
    ("rows_written", "prodloop_direct_rows_written_total"),
    ("spans_rejected", "prodloop_receiver_spans_rejected_total"),
    ("requests_refused", "prodloop_receiver_requests_refused_total"),
    ("flush_failures", "prodloop_direct_flush_failures_total"),
)


class ActivityLog:
    """INFO summaries read from the registry: what happened since the last line, at most one
    line per ``every_s`` and none while idle (:meth:`tick`), and the totals at :meth:`close`.

    The JSON log line carries the numbers as ``counts`` too.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        tallies: Sequence[tuple[str, str]],
        *,
        every_s: float = 10.0,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._tallies = tuple(tallies)
        self._every_s = every_s
        self._poll_s = poll_s
        self._clock = clock
        self._started = self._last_at = self._next_read = clock()
        self._last = self._read()

    def _read(self) -> tuple[int, ...]:
        wanted = {name: i for i, (_, name) in enumerate(self._tallies)}
        out = [0.0] * len(self._tallies)
        for family in self._registry.collect():
            for s in family.samples:
                i = wanted.get(s.name)
                if i is not None:
                    out[i] += s.value
        return tuple(int(v) for v in out)

    def _counts(self, values: tuple[int, ...]) -> dict[str, int]:
        return {key: v for (key, _), v in zip(self._tallies, values, strict=True)}

    def tick(self) -> None:
        now = self._clock()
        if now < self._next_read:
            return
        values = self._read()
        delta = tuple(v - last for v, last in zip(values, self._last, strict=True))
        if not any(delta):
            self._next_read = now + self._poll_s
            return
        counts = self._counts(delta)
        log.info(
            "in the last %.0fs: %s",
            now - self._last_at,
            ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in counts.items()),
            extra={"counts": counts},
        )
        self._last, self._last_at, self._next_read = values, now, now + self._every_s

    def close(self) -> None:
        uptime = self._clock() - self._started
        counts = self._counts(self._read())
        log.info(
            "shutdown after %.1fs: %s in total",
            uptime,
            ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in counts.items()),
            extra={"counts": {**counts, "uptime_seconds": round(uptime, 3)}},
        )
