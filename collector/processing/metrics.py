"""Prometheus metrics of the streaming service (one registry per service instance)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from attribution.aggregate import BatchStats
from attribution.tracebuffer import BufferStats


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
    :class:`collector.pipelines.direct.DirectStats`) or the gateway (``records_produced``).
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
        produced = getattr(self._sink, "records_produced", None)
        if produced is not None:
            yield CounterMetricFamily(
                "prodloop_gateway_records_produced",
                "Records the broker acknowledged on the traces, deploys and incidents topics",
                value=produced,
            )
