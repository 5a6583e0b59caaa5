-- Dead-code candidates: per (service, environment, repository, file) the start of the latest
-- attributed span seen from that code file, so "files at the git head that received no span
-- for N days" has an answer.  A batch writes each file it saw once, with the start of the
-- batch's latest span (exact to within the time the batch covers; see
-- Attributor.drain_files_seen).  Rows of one key merge by max (AggregatingMergeTree): queries
-- must always max(last_seen).  Max makes replays, duplicates and late or reordered batches
-- harmless; the deduplication window also drops a batch retried with the same
-- insert_deduplication_token, as for module_aggregates.  No TTL: a file's last sighting is
-- worth keeping however old it is (one row per key after merges).
CREATE TABLE IF NOT EXISTS file_last_seen
(
    service     LowCardinality(String),
    environment LowCardinality(String),
    repository  LowCardinality(String),
    path        String,
    last_seen   SimpleAggregateFunction(max, DateTime64(9, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (repository, path, service, environment)
SETTINGS non_replicated_deduplication_window = 10000
