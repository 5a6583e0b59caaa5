"""Writing one finished stream batch: dead letters, the write-ahead intent, the aggregates, the commit.

The order is the exactly-once argument's (docs/architecture.md, "Exactly once"): the intent
first, then the aggregates under the batch's insert-deduplication token, and only after the
store acknowledged them the commit of the batch's end offset.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
import uuid
from collections.abc import Callable

from attribution.aggregate import AggregateRow
from attribution.tracebuffer import RebuildState
from collector.errors import BrokerError
from collector.pipelines.stream_retry import ABORTED, StoreRetry
from collector.pipelines.stream_state import CommitMeta, PartitionState, Pending
from collector.ports import DeadLetterSink, Record, StreamStore, TraceSource
from collector.processing.metrics import Metrics
from collector.processing.tokens import StreamBatch, dedup_token

log = logging.getLogger("prodloop.pipeline")


class CrashPoints:
    """Testing aid (``crash_at`` of ``PRODLOOP_TESTING_HOOKS``): "before_write:N", "mid_write:N", "after_write:N" or
    "after_commit:N" kills the process (exit 137) at that point of the N-th batch written."""

    def __init__(self, spec: str) -> None:
        point, _, n = spec.partition(":")
        self.point = point
        self.n = int(n or "1")
        self.batches = 0

    def hit(self, point: str) -> None:
        if point == self.point and self.batches == self.n:
            log.error("crash injected at %s of batch %d", point, self.batches)
            logging.shutdown()
            os._exit(137)


class DeadLetters:
    """Records that cannot be processed, sent to the dead-letter sink (retried, counted, logged)."""

    def __init__(self, sink: DeadLetterSink | None, metrics: Metrics, retry: StoreRetry) -> None:
        self.sink = sink
        self._metrics = metrics
        self._retry = retry

    def send(self, r: Record, reason: str, error: str) -> bool:
        """Send ``r`` to the dead-letter topic; False if stopping cut the retry short."""
        self._metrics.dead_lettered.inc()
        log.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, error[:500])
        sink = self.sink
        if sink is None:
            return True
        return self._retry.run(lambda: sink.send(r, reason, error), "dead-letter") is not ABORTED

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()


class Written(enum.Enum):
    COMMITTED = "committed"  # written and committed
    LATER = "later"  # not written (or not committed) now: try again later
    COMMIT_FAILED = "commit_failed"  # written, but the commit failed: the partition starts over


class BatchWriter:
    """Writes and commits the finished batches of the stream pipeline, one at a time."""

    def __init__(
        self,
        *,
        group_id: str,
        topic: str,
        window_ns: int,
        write_chunk_rows: int,
        idempotent: bool,
        crash_at: str,
        store: StreamStore,
        consumer: TraceSource,
        retry: StoreRetry,
        dead_letters: DeadLetters,
        metrics: Metrics,
        clock_ns: Callable[[], int],
    ) -> None:
        self.group_id = group_id
        self.topic = topic
        self.window_ns = window_ns
        self.write_chunk_rows = write_chunk_rows
        self.idempotent = idempotent
        self._crash = CrashPoints(crash_at) if crash_at else None
        self.store = store
        self.consumer = consumer
        self._retry = retry
        self._dead = dead_letters
        self.metrics = metrics
        self.clock_ns = clock_ns

    def token(self, partition: int, start: int, end: int) -> str:
        if not self.idempotent:  # the negative control: a fresh token per write
            return f"prodloop-unsafe-{uuid.uuid4().hex}"
        return dedup_token(StreamBatch(self.group_id, self.topic, partition, start, end))

    def write(self, st: PartitionState, pend: Pending) -> Written:
        """Write one batch's aggregates and commit its end."""
        out = pend.outcome
        assert out is not None
        m = self.metrics
        retry = self._retry
        if out.errors or out.partial:
            by_offset = {r.offset: r for r in pend.batch}
            for offset, reason, message in out.errors:
                m.rejected.labels(reason=reason).inc()
                if not self._dead.send(by_offset[offset], reason, message):
                    return Written.LATER  # stopping: not sent, so not committed either
            for offset, reason, message in out.partial:  # its spans are counted after the commit
                if not self._dead.send(by_offset[offset], reason, message):
                    return Written.LATER
        rows = out.rows
        start, end, bound, positions = st.start, pend.end, pend.bound, pend.positions
        assert start == pend.start, (start, pend.start)
        token = self.token(st.partition, start, end)
        state = out.rebuild if out.rebuild is not None else RebuildState(end, None, ())
        low = state.low_offset
        crash = self._crash
        if crash is not None:
            crash.batches += 1
            crash.hit("before_write")
        if pend.replay is None:
            ok = retry.run(
                lambda: self.store.write_intent(
                    self.group_id,
                    self.topic,
                    st.partition,
                    start,
                    end,
                    positions,
                    bound,
                    token,
                    self.clock_ns(),
                    chunk_rows=self.write_chunk_rows,
                    low_offset=low,
                    rebuild=json.dumps(state.to_json(), separators=(",", ":")),
                    tick=pend.tick,
                ),
                "write intent",
                partition=st.partition,
            )
            if ok is ABORTED:
                return Written.LATER
        t0 = time.monotonic()

        # the chunking is part of the tokens: a replay must chunk as the original write did
        chunk = pend.replay["chunk_rows"] if pend.replay is not None else self.write_chunk_rows

        def on_chunk(i: int) -> None:
            if crash is not None and i == 0 and chunk and len(rows) > chunk:
                crash.hit("mid_write")  # between two inserts of one batch

        refused: list[tuple[AggregateRow, str]] = []

        def write() -> int:
            refused.clear()  # a retried write refuses the same rows again
            return int(
                self.store.write_aggregates(
                    rows,
                    self.window_ns,
                    dedup_token=token,
                    chunk_rows=chunk,
                    on_chunk=on_chunk,
                    on_refused=lambda row, message: refused.append((row, message)),
                )
            )

        if retry.run(write, "write aggregates", partition=st.partition) is ABORTED:
            return Written.LATER
        if out.names and (
            retry.run(
                lambda: self.store.write_names(out.names, self.window_ns, dedup_token=f"{token}.names"),
                "write span names",
                partition=st.partition,
            )
            is ABORTED
        ):
            return Written.LATER
        if out.files_seen and (
            retry.run(
                lambda: self.store.write_files_seen(out.files_seen, dedup_token=f"{token}.files"),
                "write files seen",
                partition=st.partition,
            )
            is ABORTED
        ):
            return Written.LATER
        m.write_seconds.observe(time.monotonic() - t0)
        for row, message in refused:
            if not self._dead_letter_row(st.partition, start, end, row, message):
                return Written.LATER
        if crash is not None:
            crash.hit("after_write")
        self._dead.flush()
        try:
            self.consumer.commit({st.partition: low}, {st.partition: CommitMeta(end, start, state).dump()})
        except BrokerError as exc:
            # typically a rebalance: the next owner replays this batch from its intent
            log.warning("commit of %s[%d]@%d failed: %s", self.topic, st.partition, end, exc)
            m.commit_failures.inc()
            return Written.COMMIT_FAILED
        if crash is not None:
            crash.hit("after_commit")
        for reason, n in out.rejected.items():
            m.rejected.labels(reason=reason).inc(n)
        for enc, n in out.detected.items():
            m.encoding_detected.labels(encoding=enc).inc(n)
        stats = out.stats
        m.spans_in.inc(out.spans_in)
        m.spans_attributed.inc(stats.attributed)
        m.duplicates.inc(out.duplicates)
        m.overflow.inc(stats.overflow)
        for reason, n in stats.unattributed_by_reason.items():
            m.unattributed.labels(reason=reason).inc(n)
        m.count_buffer(out.buffer, stats)
        m.trace_buffer_spans.labels(partition=str(st.partition)).set(out.buffer.buffered)
        m.batches.inc()
        m.rows_written.inc(len(rows))
        m.committed_offset.labels(partition=str(st.partition)).set(low)
        m.written_offset.labels(partition=str(st.partition)).set(end)
        m.last_commit.set(self.clock_ns() / 1e9)
        return Written.COMMITTED

    def _dead_letter_row(self, partition: int, start: int, end: int, row: AggregateRow, message: str) -> bool:
        """An aggregate row the store refused: its spans are dead-lettered as the row's JSON."""
        self.metrics.rows_refused.inc()
        self.metrics.rejected.labels(reason="store_refused").inc(row.spans)
        doc = row._asdict()
        doc["owners"] = list(row.owners)
        doc["latency_bins"] = {str(k): v for k, v in row.latency_bins.items()}
        doc["self_bins"] = {str(k): v for k, v in row.self_bins.items()}
        doc["exception_types"] = dict(row.exception_types)
        value = json.dumps({"aggregate_row": doc}, sort_keys=True).encode()
        return self._dead.send(
            Record(self.topic, partition, start, -1, None, value),
            "store_refused",
            f"the store refused an aggregate row of {row.spans} span(s) from {self.topic}[{partition}] "
            f"offsets [{start}, {end}): {message}",
        )
