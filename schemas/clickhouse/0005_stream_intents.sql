-- The streaming service's write-ahead intents (see collector/pipeline.py).
-- Before a batch of one partition is written, its exact offset range and the deploy-topic
-- positions it was tagged with are recorded here.  After a crash, the replica that gets the
-- partition replays that exact batch, so the aggregates insert carries the same
-- deduplication tokens and ClickHouse drops whatever part of it had already landed.
CREATE TABLE IF NOT EXISTS stream_intents
(
    consumer_group    LowCardinality(String),
    topic             LowCardinality(String),
    partition         UInt32,
    start_offset      UInt64,
    end_offset        UInt64,
    deploy_positions  Map(UInt32, UInt64),
    deploy_bound_ms   Int64,
    chunk_rows        UInt32,
    token             String,
    created_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (consumer_group, topic, partition, start_offset)
TTL toDateTime(created_at) + INTERVAL 30 DAY;

-- Where a deploy or incident event came from on its Kafka topic, so the timeline can be
-- rebuilt from the store on start and each batch uses exactly the events it used before.
ALTER TABLE deploys ADD COLUMN IF NOT EXISTS source_partition Int32 DEFAULT -1;
ALTER TABLE deploys ADD COLUMN IF NOT EXISTS source_offset Int64 DEFAULT -1;
ALTER TABLE deploys ADD COLUMN IF NOT EXISTS source_timestamp_ms Int64 DEFAULT 0;
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS source_partition Int32 DEFAULT -1;
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS source_offset Int64 DEFAULT -1
