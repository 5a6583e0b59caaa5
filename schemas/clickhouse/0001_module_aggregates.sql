-- Per-module partial aggregates, one row per (window, group) per written batch.
-- Rows with the same key merge in the background (AggregatingMergeTree); queries must
-- always aggregate (sum/min/max/sumMap), never read rows as final.
-- Counts and sums are integers so merges are exact; *_adjusted_milli are sampling-adjusted
-- counts in thousandths; latency_bins is prodloop's log-bucket sketch (bucket -> count,
-- gamma = 1.01/0.99, bucket 0 = zero-length spans).
-- non_replicated_deduplication_window makes retried inserts with the same
-- insert_deduplication_token harmless on a plain (non-replicated) MergeTree.
CREATE TABLE IF NOT EXISTS module_aggregates
(
    window_start             DateTime('UTC') CODEC(Delta, ZSTD),
    window_seconds           UInt32,
    service                  LowCardinality(String),
    environment              LowCardinality(String),
    repository               LowCardinality(String),
    module                   LowCardinality(String),
    owners                   Array(LowCardinality(String)),
    commit_sha               LowCardinality(String),
    deploy_id                LowCardinality(String),
    unattributed_reason      LowCardinality(String),
    spans                    SimpleAggregateFunction(sum, UInt64),
    spans_adjusted_milli     SimpleAggregateFunction(sum, UInt64),
    errors                   SimpleAggregateFunction(sum, UInt64),
    errors_adjusted_milli    SimpleAggregateFunction(sum, UInt64),
    duration_sum_ns          SimpleAggregateFunction(sum, UInt64),
    duration_adjusted_sum_ns SimpleAggregateFunction(sum, UInt64),
    duration_min_ns          SimpleAggregateFunction(min, UInt64),
    duration_max_ns          SimpleAggregateFunction(max, UInt64),
    latency_bins             SimpleAggregateFunction(sumMap, Map(UInt16, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(window_start)
ORDER BY (service, environment, module, window_start, window_seconds, repository, owners, commit_sha, deploy_id, unattributed_reason)
SETTINGS non_replicated_deduplication_window = 10000
