-- Coverage (issue 12): the names of unattributed spans, per window, service, environment and
-- reason, so "why is 7% of checkout unattributed" has an answer ('GET /healthz', no_location).
-- The aggregator keeps at most a configured number of names per window and service; the
-- module_aggregates rows with unattributed_reason != '' hold the full counts.
-- Rows of one key merge by sum (AggregatingMergeTree): queries must always sum(spans).
-- The deduplication window makes a batch retried with the same insert_deduplication_token
-- harmless, as for module_aggregates.  The TTL is the store's ttl_days (SchemaMigrations.set_ttl).
CREATE TABLE IF NOT EXISTS unattributed_names
(
    window_start        DateTime('UTC') CODEC(Delta, ZSTD),
    window_seconds      UInt32,
    service             LowCardinality(String),
    environment         LowCardinality(String),
    unattributed_reason LowCardinality(String),
    span_name           String,
    spans               SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(window_start)
ORDER BY (service, environment, unattributed_reason, span_name, window_start, window_seconds)
SETTINGS non_replicated_deduplication_window = 10000
