-- Deploy events, deduplicated by deploy_id (the latest received version wins).
-- Read with FINAL or argMax; the timeline is rebuilt from here on start.
CREATE TABLE IF NOT EXISTS deploys
(
    deploy_id     String,
    service       LowCardinality(String),
    environment   LowCardinality(String),
    commit_sha    String,
    previous_sha  String,
    deployed_at   DateTime64(9, 'UTC'),
    repository    LowCardinality(String),
    status        LowCardinality(String),
    url           String,
    received_at   DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY deploy_id
SETTINGS non_replicated_deduplication_window = 10000
