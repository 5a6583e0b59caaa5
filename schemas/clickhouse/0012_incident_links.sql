-- The long loop (issue 13): which deploy and which modules each incident is linked to, and
-- why (explicit in the event, or inferred and by which rule).  Re-linking (new history, new
-- aggregates) writes a newer version; read with FINAL.
CREATE TABLE IF NOT EXISTS incident_links
(
    incident_id       String,
    deploy_id         String,
    deploy_evidence   String,
    modules           Array(String),
    modules_evidence  String,
    linked_at         DateTime64(3, 'UTC'),
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY incident_id;

-- Tickets carry their rule's kind and, for regression_after_deploy, the deploy they blame:
-- change failure rate counts such a ticket as a failure of that deploy.  Rows from before
-- this migration read as '' (no deploy).
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT '';
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS deploy_id String DEFAULT ''
