"""Prometheus metrics of the streaming service (one registry per service instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.encoding_detected = Counter(
            "prodloop_encoding_detected", "Records whose encoding was auto-detected", ["encoding"], registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return float(v) if v is not None else 0.0
