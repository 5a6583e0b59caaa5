-- Incident events, deduplicated by incident_id (the latest received version wins,
-- e.g. the update that sets resolved_at).
CREATE TABLE IF NOT EXISTS incidents
(
    incident_id     String,
    title           String,
    services        Array(LowCardinality(String)),
    environment     LowCardinality(String),
    started_at      DateTime64(9, 'UTC'),
    resolved_at     Nullable(DateTime64(9, 'UTC')),
    severity        LowCardinality(String),
    deploy_id       String,
    commit_sha      String,
    modules         Array(String),
    postmortem_url  String,
    received_at     DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY incident_id
SETTINGS non_replicated_deduplication_window = 10000
