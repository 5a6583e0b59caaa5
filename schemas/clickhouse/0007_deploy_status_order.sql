-- The statuses of one deploy are ordered by their own time and id (status_at, status_id:
-- GitHub's deployment_status.updated_at and id), not by arrival, so a replayed or late older
-- status never replaces a newer one: the version becomes
--   status_at (ns) * 2^128 + status_id * 2^64 + the arrival version (received_at ns + i),
-- so FINAL and merges keep the newest status.  Rows written before have status_at = 0 and
-- status_id = 0: they keep their arrival order.  Widening the version column is an ALTER
-- ClickHouse allows (a ReplacingMergeTree version may only grow in size).
ALTER TABLE deploys ADD COLUMN IF NOT EXISTS status_at DateTime64(9, 'UTC') DEFAULT 0;
ALTER TABLE deploys ADD COLUMN IF NOT EXISTS status_id UInt64 DEFAULT 0;
ALTER TABLE deploys MODIFY COLUMN version UInt256
