-- Tickets opened by alert rules (collector/alerts.py), one row per version of the state of
-- (fingerprint, sink, generation); read with FINAL (the highest version wins).
-- fingerprint = 16 hex digits of SHA-256 over (rule, service, environment, module).
-- generation counts the tickets of one fingerprint on one sink: a new one is opened (linking
-- the previous) when people closed the last one and the breach persisted past the cooldown.
-- state: intent (recorded before the sink is asked to create: a crash after that is
-- resolved by finding the ticket through its fingerprint label) | open | recovered (the
-- recovery comment was posted, the ticket left open) | closed (by prodloop on recovery, or
-- seen closed by people).
CREATE TABLE IF NOT EXISTS tickets
(
    fingerprint       String,
    sink              LowCardinality(String),
    generation        UInt32,
    rule              LowCardinality(String),
    service           LowCardinality(String),
    environment       LowCardinality(String),
    module            String,
    state             LowCardinality(String),
    ticket_key        String,
    ticket_url        String,
    previous_url      String,
    opened_at         DateTime64(3, 'UTC'),
    last_comment_at   DateTime64(3, 'UTC'),
    recovered_at      Nullable(DateTime64(3, 'UTC')),
    closed_at         Nullable(DateTime64(3, 'UTC')),
    closed_by         LowCardinality(String),
    summary           String,
    updated_at        DateTime64(3, 'UTC'),
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (fingerprint, sink, generation);

-- The alert evaluation lease: exactly one replica of `prodloop run` evaluates rules.
-- Every acquisition or renewal is a claim of the next term, inserted with the
-- deduplication token "lease:<name>:<term>": of several replicas claiming one term, the
-- first insert lands and the others are dropped, so reading the term back names the winner.
-- Terms only grow, so a token never recurs; one small row per evaluation interval, no TTL
-- (a TTL could delete the latest term and let a used token come back).
CREATE TABLE IF NOT EXISTS alert_lease
(
    name        LowCardinality(String),
    term        UInt64,
    holder      String,
    acquired_at DateTime64(3, 'UTC'),
    expires_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (name, term)
SETTINGS non_replicated_deduplication_window = 10000
