-- Self time, own errors, CPU time and exceptions per module (issue 12), and the stream's
-- trace-buffer rebuild state.
--
-- Self time is a span's duration minus the union of its children's intervals, clipped to the
-- span (attribution/selftime.py).  It is known only once the span's trace is complete, so a
-- span's counts and durations land in one partial row and its self time, often in a later
-- batch, in another row of the same key with spans = 0: every column still merges by sum.
-- self_spans counts the spans whose self time was computed; self_bins is the sketch of their
-- self times (as latency_bins is of durations), so self-time quantiles use self_spans and
-- self_time_min_ns/self_time_max_ns the way duration quantiles use spans and duration_min/max.
-- Rows without self data carry self_time_min_ns = 2^64-1 and self_time_max_ns = 0.
-- self_time_sum_ns and self_time_adjusted_sum_ns are Nullable: rows written before this
-- migration read as NULL (unknown), never as 0.
--
-- own_errors: errored spans none of whose children errored (the code that failed, not the
-- callers the error propagated through).  exceptions / exception_types: exceptions whose stack
-- trace threw in this row's module (the row's group is the throwing code's module and owners),
-- with at most the configured number of types per row (the rest under "(other)");
-- exception_events: exception events recorded on this row's spans, whoever threw them.
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_spans SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_spans_adjusted_milli SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_time_sum_ns SimpleAggregateFunction(sum, Nullable(UInt64));
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_time_adjusted_sum_ns SimpleAggregateFunction(sum, Nullable(UInt64));
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_time_min_ns SimpleAggregateFunction(min, UInt64) DEFAULT 18446744073709551615;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_time_max_ns SimpleAggregateFunction(max, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS self_bins SimpleAggregateFunction(sumMap, Map(UInt16, UInt64));
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS own_errors SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS own_errors_adjusted_milli SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS cpu_time_sum_ns SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS exception_events SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS exceptions SimpleAggregateFunction(sum, UInt64) DEFAULT 0;
ALTER TABLE module_aggregates ADD COLUMN IF NOT EXISTS exception_types SimpleAggregateFunction(sumMap, Map(String, UInt64));

-- The trace buffer's rebuild state (docs/architecture.md, "Exactly once with a trace
-- buffer").  A batch's commit is at low_offset, the oldest record still buffered, with the
-- batch's end in the commit metadata; on assignment the records [low_offset, end) only rebuild
-- the buffer, from rebuild (JSON: the watermark before low_offset and the traces that were
-- alive across it).  tick = 1: a batch of no records that completed every buffered trace of an
-- idle partition by wall clock (start_offset = end_offset).
ALTER TABLE stream_intents ADD COLUMN IF NOT EXISTS low_offset UInt64 DEFAULT 0;
ALTER TABLE stream_intents ADD COLUMN IF NOT EXISTS rebuild String DEFAULT '';
ALTER TABLE stream_intents ADD COLUMN IF NOT EXISTS tick UInt8 DEFAULT 0
