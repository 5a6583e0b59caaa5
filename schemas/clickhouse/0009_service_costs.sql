-- What each service cost (issue 12): entries imported from billing files (`prodloop costs
-- import`, FOCUS 1.x columns), one row per (service, environment, charge period, source),
-- the file's rows for that key summed.  Money is integer micro-USD (1 USD = 1000000), in USD
-- only: non-USD bills are refused at import.  Configured rates (cost.rates) are not stored;
-- they are applied at query time on the days no billing entry covers (docs/cost.md).
--
-- Re-importing a file does not double count: its insert carries a deduplication token (a hash
-- of its entries), and a corrected file under the same source replaces the previous values
-- key by key (the highest version, the import time in ns, wins).  Read with FINAL.
-- period_end is exclusive.
CREATE TABLE IF NOT EXISTS service_costs
(
    service         LowCardinality(String),
    environment     LowCardinality(String),
    period_start    DateTime64(9, 'UTC'),
    period_end      DateTime64(9, 'UTC'),
    source          String,
    cost_micro_usd  Int64,
    currency        LowCardinality(String) DEFAULT 'USD',
    billing_rows    UInt32,
    imported_at     DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (service, environment, period_start, period_end, source)
SETTINGS non_replicated_deduplication_window = 10000
