"""The streaming pipeline's loop: poll -> batch -> workers (decode .. aggregate) -> write -> commit.

Delivery is exactly-once-effective; the argument (per-partition batches, write-ahead intents,
deterministic dedup and deploy tagging) is in docs/architecture.md, "Exactly once".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from attribution.model import DeployEvent
from attribution.repository import Repository
from attribution.tracebuffer import RebuildState
from collector.errors import BrokerError
from collector.pipelines.events import StreamEvents
from collector.pipelines.stream_retry import StopDeadline, StoreRetry
from collector.pipelines.stream_state import CommitMeta, PartitionState, Pending, RebuildJob
from collector.pipelines.stream_write import BatchWriter, DeadLetters, Written
from collector.ports import DeadLetterSink, EventSource, Record, StreamIntent, StreamStore, TraceSource
from collector.processing.batch import ProcessorConfig, RawRecord
from collector.processing.deploy_sets import TopicDeploy
from collector.processing.metrics import Metrics
from collector.processing.partitions import Job
from collector.processing.workers import InlineWorkers, ProcessWorkers

log = logging.getLogger("prodloop.pipeline")

_LAG_INTERVAL_S = 5.0
_EVENTS_POLL_INTERVAL_S = 0.05
_WORKER_WAIT_S = 0.01

ConsumerFactory = Callable[[Callable[[list[int]], None], Callable[[list[int]], None]], TraceSource]


@dataclass
class StreamConfig:
    group_id: str = "prodloop"
    processing: ProcessorConfig = field(default_factory=ProcessorConfig)  # decode .. aggregate, trace buffer
    # at most: the byte budget (max_buffered_bytes) makes batches of large records smaller
    batch_records: int = 1000
    linger_ms: int = 1000
    max_buffered_records: int = 2000  # per partition; a full partition is paused
    max_buffered_bytes: int = 64 * 1024 * 1024  # all partitions; past it every partition is paused
    deploy_skew_ms: int = 10_000
    write_chunk_rows: int = 5000
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    grace_s: float = 20.0  # once ``stop`` is set, retries give up after this
    workers: int = 0  # worker processes for decode..aggregate; 0 = in this process
    max_inflight_batches: int = 2  # per partition, handed to the workers and not yet committed
    crash_at: str = ""  # testing aid: "before_write:N", "mid_write:N", "after_write:N", "after_commit:N"
    idempotent: bool = True  # testing aid: False disables intents and tokens (the negative control)


class StreamPipeline:
    """One replica's loop over its partitions of the traces topic, or of the logs topic
    (``processing.signal``: its batches build no trace buffer, so none is rebuilt or ticked)."""

    def __init__(
        self,
        cfg: StreamConfig,
        consumer_factory: ConsumerFactory,
        store: StreamStore,
        repositories: list[Repository],
        *,
        deploys: EventSource | None = None,
        incidents: EventSource | None = None,
        dead_letters: DeadLetterSink | None = None,
        metrics: Metrics | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: the service's stop request; a store retry in progress honours it (it gives
        up after ``cfg.grace_s``, committing nothing it has not written)."""
        self.cfg = cfg
        self.store = store
        self.deploys = deploys
        self.incidents = incidents
        self.dead_letters = dead_letters
        self.metrics = metrics = metrics or Metrics()
        self.clock_ns = clock_ns
        self.partitions: dict[int, PartitionState] = {}
        self._stop = StopDeadline(stop, cfg.grace_s)
        self._retry = StoreRetry(
            self,
            metrics,
            self._stop,
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
        )
        self._dead = DeadLetters(dead_letters, metrics, self._retry)
        pcfg = cfg.processing
        self.workers: InlineWorkers | ProcessWorkers = (
            ProcessWorkers(cfg.workers, pcfg, repositories)
            if cfg.workers > 0
            else InlineWorkers(pcfg, repositories)
        )
        # ticket of a batch handed to the workers -> its partition's state and the batch
        self._tickets: dict[int, tuple[PartitionState, Pending]] = {}
        self.events = StreamEvents(
            store,
            deploys,
            incidents,
            retry=self._retry,
            dead_letters=self._dead,
            metrics=metrics,
            clock_ns=clock_ns,
            on_deploys=self._mirror_deploys,
        )
        self._events_polled_at = -float("inf")
        self.events.load_from_store()
        # kafka-python calls rebalance listeners on its IO thread, where blocking calls are not
        # allowed: queue the events and handle them on the loop's thread after each poll
        self._rebalance_events: deque[tuple[str, list[int]]] = deque()
        self.consumer = consumer_factory(
            lambda parts: self._rebalance_events.append(("assigned", parts)),
            lambda parts: self._rebalance_events.append(("revoked", parts)),
        )
        self.topic = self.consumer.topic
        self._writer = BatchWriter(
            group_id=cfg.group_id,
            topic=self.topic,
            window_ns=pcfg.window_ns,
            write_chunk_rows=cfg.write_chunk_rows,
            idempotent=cfg.idempotent,
            crash_at=cfg.crash_at,
            store=store,
            consumer=self.consumer,
            retry=self._retry,
            dead_letters=self._dead,
            metrics=metrics,
            clock_ns=clock_ns,
        )
        self._last_lag = 0.0
        self._buffered_bytes = 0
        self._avg_record_bytes = 16 * 1024  # moving average of the records' sizes

    @property
    def store_healthy(self) -> bool:
        """False from a failed store call until one succeeds (readiness)."""
        return self._retry.store_healthy

    @store_healthy.setter
    def store_healthy(self, value: bool) -> None:
        self._retry.store_healthy = value

    @property
    def stopping(self) -> bool:
        return self._stop.stopping

    def _mirror_deploys(self, static: Sequence[DeployEvent], topic: Sequence[TopicDeploy]) -> None:
        self.workers.add_deploys(static, topic)  # ahead of every batch cut from now on

    def poll_events(self) -> None:
        """Read new deploy and incident events (non-blocking) and persist them."""
        self.events.poll()

    # -- assignment --------------------------------------------------------------------

    def _on_assigned(self, partitions: list[int]) -> None:
        for p in partitions:
            self._drop_partition(p)  # reassigned without a revocation: start over
            st = self._resume(p)
            self.partitions[p] = st
            self.workers.reset(p)
            self.consumer.seek(p, st.history_from)
            self.consumer.resume([p])  # a partition set up again (a failed commit) may be paused
            log.info(
                "assigned %s[%d]: committed %d, written to %d, dedup history from %d%s%s",
                self.topic,
                p,
                st.low,
                st.start,
                st.history_from,
                f", rebuilding the trace buffer from {st.low}" if st.low < st.start else "",
                f", replaying batch to {st.replay['end_offset']}" if st.replay else "",
            )
        self.metrics.partitions.set(len(self.partitions))

    def _resume(self, p: int) -> PartitionState:
        """Where partition ``p`` resumes: its commit (the trace buffer's oldest record), the end of
        the last batch written (the commit's metadata), what rebuilds the buffer in between, and
        the batch to replay after it (docs/architecture.md, "Exactly once with a trace buffer")."""
        got = self.consumer.committed_with_metadata(p)
        begin = self.consumer.beginning(p)
        low = got[0] if got is not None else begin
        meta = CommitMeta.parse(got[1] if got is not None else "", low)
        end = meta.end
        if low < begin:  # the log was truncated past the commit: what is gone cannot be rebuilt
            log.warning(
                "%s[%d]: records [%d, %d) are gone from the log; starting at %d with an empty trace buffer",
                self.topic,
                p,
                low,
                begin,
                max(begin, end),
            )
            low = end = max(begin, end)
            meta = CommitMeta(end, -1, RebuildState(end, None, ()))
        st = PartitionState(p, end, low, low=low)
        st.history_from = max(begin, low - self.cfg.processing.dedup_horizon)
        st.restore = meta.state if meta.state is not None else self._state_from_intent(p, meta)
        if low < end:
            st.rebuild = deque(
                self._rebuild_jobs(p, low, end) if self.cfg.idempotent else [RebuildJob(end, None, 0)]
            )
        if self.cfg.idempotent:
            replay = self._read_intent(p, end)
            if replay is not None and replay["tick"] and low == end:
                replay = None  # a tick empties the buffer: this one is committed
            st.replay = replay
        st.live_traces = low < end
        return st

    def _state_from_intent(self, p: int, meta: CommitMeta) -> RebuildState | None:
        """The rebuild state too large for the commit metadata, from the intent of the batch it ends."""
        if meta.batch_start < 0 or meta.end == meta.batch_start:
            return None
        intent = self._read_intent(p, meta.batch_start)
        if intent is None or intent["end_offset"] != meta.end or not intent["rebuild"]:
            log.warning(
                "%s[%d]: no rebuild state for the batch ending at %d; the trace buffer restarts empty",
                self.topic,
                p,
                meta.end,
            )
            return None
        return RebuildState.from_json(json.loads(intent["rebuild"]))

    def _rebuild_jobs(self, p: int, low: int, end: int) -> list[RebuildJob]:
        """The batches that wrote ``[low, end)``, to feed again with their deploy selections."""
        intents: list[StreamIntent] = self._retry.read(
            lambda: self.store.intents_between(self.cfg.group_id, self.topic, p, low, end),
            "read intents",
            f"before the intents of {self.topic}[{p}] [{low}, {end}) could be read",
        )
        intents = [i for i in intents if not i["tick"] and i["end_offset"] > low]
        # the batch holding ``low`` started before it: find it too
        covering: list[StreamIntent] = []
        at = low
        for i in sorted(intents, key=lambda i: i["start_offset"]):
            if i["start_offset"] > at:
                break
            if i["end_offset"] > at:
                covering.append(i)
                at = i["end_offset"]
        if at != end:
            log.warning(
                "%s[%d]: the intents of [%d, %d) are incomplete; rebuilding the trace buffer with the "
                "current deploys",
                self.topic,
                p,
                low,
                end,
            )
            return [RebuildJob(end, None, 0)]
        return [RebuildJob(i["end_offset"], i["deploy_positions"], i["deploy_bound_ms"]) for i in covering]

    def _read_intent(self, partition: int, start: int) -> StreamIntent | None:
        """The intent of the batch starting at ``start``; not knowing is unsafe, so retry.  A stop
        meanwhile leaves the partition not set up: nothing of it is consumed, and the next owner
        starts from its commit."""
        intent: StreamIntent | None = self._retry.read(
            lambda: self.store.intent_at(self.cfg.group_id, self.topic, partition, start),
            "read intents",
            f"before the intent of {self.topic}[{partition}]@{start} could be read",
        )
        return intent

    def _on_revoked(self, partitions: list[int]) -> None:
        for p in partitions:
            st = self._drop_partition(p)
            if st is not None and (st.buffer or st.inflight):
                log.info(
                    "revoked %s[%d] with %d uncommitted records (the next owner replays them)",
                    self.topic,
                    p,
                    st.uncommitted(),
                )

    def _drop_partition(self, p: int) -> PartitionState | None:
        """Forget a partition: its buffers, its batches at the workers, its dedup window."""
        st = self.partitions.pop(p, None)
        if st is not None:
            self._buffered_bytes -= sum(len(r.value) for r in st.buffer) + sum(x.nbytes for x in st.inflight)
            for t in [t for t, (owner, _) in self._tickets.items() if owner is st]:
                del self._tickets[t]
            self.workers.drop(p)
            self.metrics.partitions.set(len(self.partitions))
        return st

    # -- the loop ------------------------------------------------------------------------

    def _apply_rebalance(self) -> set[int]:
        """Handle queued rebalance events; returns the partitions (re)initialised now."""
        fresh: set[int] = set()
        while self._rebalance_events:
            kind, parts = self._rebalance_events.popleft()
            if kind == "revoked":
                self._on_revoked(parts)
                fresh -= set(parts)
            else:
                if kind == "reinit":
                    owned = set(self.consumer.assignment())
                    parts = [p for p in parts if p in owned and p not in self.partitions]
                try:
                    self._on_assigned(parts)
                except BrokerError:
                    # not initialised (a committed offset could not be read): set the partitions up
                    # again on the next step, after step()'s pause, rather than lose the assignment
                    self._rebalance_events.appendleft((kind, parts))
                    raise
                fresh |= set(parts)
        return fresh

    def step(self, poll_timeout_ms: int = 200) -> None:
        """One iteration.  Broker trouble (a restart, a network blip) is waited out, not fatal:
        nothing uncommitted is lost, the partitions are re-read from their committed offsets."""
        try:
            self._step(poll_timeout_ms)
        except BrokerError as exc:
            self.metrics.store_errors.labels(operation="broker").inc()
            log.warning("broker unavailable (%s); retrying", str(exc)[:300])
            time.sleep(min(self.cfg.backoff_max_s, 1.0))

    def _step(self, poll_timeout_ms: int) -> None:
        # each poll of the event readers is a round trip to kafka-python's IO thread: not on
        # every step of a busy loop (a batch waiting for deploys waits at most this much longer)
        mono = time.monotonic()
        if mono - self._events_polled_at >= _EVENTS_POLL_INTERVAL_S:
            self._events_polled_at = mono
            self.events.poll()
        # with work buffered, do not wait for the network (kafka-python even sleeps when
        # every partition is paused): fetch what is there and get on with the batches
        busy = self._buffered_bytes > 0
        # take no more than the byte budget has room for (at the average record size so far):
        # one poll can otherwise hand over everything kafka-python has prefetched
        room = self.cfg.max_buffered_bytes - self._buffered_bytes
        max_records = max(1, min(2000, room // max(1, self._avg_record_bytes)))
        records = self.consumer.poll(0 if busy else poll_timeout_ms, max_records=max_records)
        fresh = self._apply_rebalance()
        now = time.monotonic()
        self._take(records, fresh, now)
        if self._buffered_bytes > self.cfg.max_buffered_bytes:
            # memory stays bounded: stop fetching everywhere until batches drain the buffers
            for st in self.partitions.values():
                if not st.paused:
                    self.consumer.pause([st.partition])
                    st.paused = True
        for st in list(self.partitions.values()):
            self._maybe_flush(st, now)
        if self._buffered_bytes > self.cfg.max_buffered_bytes:
            # memory pressure closes batches early (largest buffer first); any batching is safe
            for st in sorted(self.partitions.values(), key=lambda x: -len(x.buffer)):
                if self._buffered_bytes <= self.cfg.max_buffered_bytes // 2:
                    break
                self._maybe_flush(st, now, force=True)
        if self._tickets and not records:
            # batches are at the workers and nothing new came: wait for a result, not in a spin
            self.workers.wait(_WORKER_WAIT_S)
        self.maybe_update_lag()

    def _take(self, records: list[Record], fresh: set[int], now: float) -> None:
        """Sort fetched records into dedup history and partition buffers."""
        history: dict[int, list[RawRecord]] = {}
        for r in records:
            if r.partition in fresh:
                continue  # fetched before the seek to the dedup history: it comes again
            st = self.partitions.get(r.partition)
            if st is None:
                continue
            if r.offset < st.history_until:
                history.setdefault(r.partition, []).append((r.offset, r.timestamp_ms, r.value))
                continue
            if r.offset < st.fetched_to:
                continue  # fetched again (before a pause or seek took effect)
            if not st.buffer:
                st.first_at = now
            st.last_record_at = now
            st.buffer.append(r)
            st.fetched_to = r.offset + 1
            self._buffered_bytes += len(r.value)
            self._avg_record_bytes += (len(r.value) - self._avg_record_bytes) // 16
            self.metrics.records_in.inc()
            if len(st.buffer) >= self.cfg.max_buffered_records and not st.paused:
                self.consumer.pause([st.partition])
                st.paused = True
        for p, recs in history.items():
            self.workers.history(self.topic, p, recs)

    def poll_paused(self, timeout_ms: int) -> set[int]:
        """While a retry waits: poll (fetching is paused), handle rebalances, take what was fetched
        before the pause took effect; returns the partitions (re)initialised now."""
        polled = self.consumer.poll(timeout_ms)
        fresh = self._apply_rebalance()
        self._take(polled, fresh, time.monotonic())
        return fresh

    def maybe_update_lag(self) -> None:
        if time.monotonic() - self._last_lag > _LAG_INTERVAL_S:
            self.update_lag()

    def update_lag(self) -> None:
        """Set ``prodloop_consumer_lag`` (end offset - committed offset) per partition.  Runs
        every few seconds, also while a store outage holds the loop in its retry: that is when
        lag matters."""
        self._last_lag = time.monotonic()
        try:
            for p, end in self.consumer.ends().items():
                st = self.partitions.get(p)
                if st is not None:  # behind the end by what is not committed yet, as Kafka tools say
                    self.metrics.lag.labels(partition=str(p)).set(max(0, end - st.low))
        except Exception as exc:
            log.debug("lag unavailable: %s", exc)

    def _maybe_flush(self, st: PartitionState, now: float, force: bool = False) -> bool:
        """Write what the workers finished, hand them what is ready; True if anything moved."""
        moved = False
        while self.partitions.get(st.partition) is st:
            step = self._complete(st)
            if self.partitions.get(st.partition) is not st:
                break
            if (
                (st.buffer or st.replay is not None or st.live_traces)
                and len(st.inflight) < self.cfg.max_inflight_batches
                and self._dispatch(st, now, force)
            ):
                step = True
            if not step:
                break
            moved = True
        if (
            st.paused
            and self.partitions.get(st.partition) is st
            and len(st.buffer) < self.cfg.max_buffered_records // 2
            and self._buffered_bytes < self.cfg.max_buffered_bytes // 2
        ):
            self.consumer.resume([st.partition])
            st.paused = False
        if moved and self._buffered_bytes < self.cfg.max_buffered_bytes // 2:
            for other in self.partitions.values():
                if other.paused and len(other.buffer) < self.cfg.max_buffered_records // 2:
                    self.consumer.resume([other.partition])
                    other.paused = False
        return moved

    def _dispatch(self, st: PartitionState, now: float, force: bool) -> bool:
        """Hand the partition's next batch to the workers, if it is complete and its deploys known:
        first what rebuilds the trace buffer, then a replayed batch, then new ones."""
        tick = False
        replay = None
        if st.rebuild:
            again = st.rebuild[0]
            n = self._records_before(st, again.end)
            if n < 0:
                return False  # the rebuilt range is not all fetched yet
            if again.positions is None:
                positions = self.events.positions()
                bound = (max(r.timestamp_ms for r in st.buffer[:n]) if n else 0) + self.cfg.deploy_skew_ms
            else:
                positions, bound = again.positions, again.bound
                if not self.events.caught_up(positions):
                    return False  # the deploys reader has not caught up with the original run yet
        elif st.replay is not None:
            replay = st.replay
            tick = replay["tick"]
            n = 0 if tick else self._records_before(st, replay["end_offset"])
            if n < 0:
                return False  # the replayed batch is not complete yet
            if (
                n == 0 and not tick
            ):  # no record of the intent's range exists (a gap in the log): nothing was written
                st.replay = None
                return True
            positions = replay["deploy_positions"]
            bound = replay["deploy_bound_ms"]
            if not self.events.caught_up(positions):
                return False
        elif not st.buffer:
            if not self._idle(st, now):
                return False
            tick, n = True, 0
            positions, bound = self.events.positions(), 0
        else:
            ready = (
                force
                or len(st.buffer) >= self.cfg.batch_records
                or (now - st.first_at >= self.cfg.linger_ms / 1000)
            )
            if not ready:
                return False
            n = min(len(st.buffer), self.cfg.batch_records)
            bound = max(r.timestamp_ms for r in st.buffer[:n]) + self.cfg.deploy_skew_ms
            if not self.events.ready(bound):
                return False
            positions = self.events.positions()
        batch = st.buffer[:n]
        del st.buffer[:n]
        rebuild = bool(st.rebuild)
        end = st.rebuild.popleft().end if rebuild else (batch[-1].offset + 1 if batch else st.next_start)
        pend = Pending(
            batch,
            st.next_start,
            end,
            bound,
            positions,
            replay,
            sum(len(r.value) for r in batch),
            rebuild=rebuild,
            tick=tick,
        )
        job = Job(self.events.tag(bound, positions), end, rebuild=rebuild, tick=tick, restore=st.restore)
        st.restore = None
        ticket = self.workers.submit(
            self.topic, st.partition, [(r.offset, r.timestamp_ms, r.value) for r in batch], job
        )
        self._tickets[ticket] = (st, pend)
        st.inflight.append(pend)
        st.next_start = pend.end
        if not rebuild:
            st.replay = None
        st.first_at = now
        return True

    @staticmethod
    def _records_before(st: PartitionState, end: int) -> int:
        """How many buffered records lie before ``end``; -1 while more of them may come."""
        n = sum(1 for r in st.buffer if r.offset < end)
        if n == len(st.buffer) and (not st.buffer or st.buffer[-1].offset < end - 1):
            return -1
        return n

    def _idle(self, st: PartitionState, now: float) -> bool:
        """Should the idle partition's buffered traces complete now (by wall clock)?  Only when
        nothing of it is in flight and no record came for ``trace_wait``."""
        return (
            st.live_traces
            and not st.inflight
            and not self.stopping
            and now - st.last_record_at >= self.cfg.processing.trace_wait_ms / 1000
        )

    def _collect(self) -> None:
        """Attach the workers' finished outcomes to their batches."""
        for ticket, outcome in self.workers.results():
            entry = self._tickets.pop(ticket, None)
            if entry is not None:  # else its partition was dropped meanwhile
                entry[1].outcome = outcome

    def _complete(self, st: PartitionState) -> bool:
        """Write and commit the partition's finished batches, in order; True if any was."""
        self._collect()
        wrote = False
        while st.inflight and st.inflight[0].outcome is not None and self.partitions.get(st.partition) is st:
            pend = st.inflight[0]
            if pend.rebuild:  # only rebuilt the worker's state: nothing to write
                self._buffered_bytes -= pend.nbytes
                st.inflight.popleft()
                wrote = True
                continue
            written = self._writer.write(st, pend)
            if written is Written.COMMIT_FAILED:
                self._drop_partition(st.partition)
                # if it is still ours (not a rebalance: a timeout, a coordinator move), start it over
                # from its committed offset and intent, as a new assignment would
                self._rebalance_events.append(("reinit", [st.partition]))
            if written is not Written.COMMITTED:
                break
            st.start = pend.end
            out = pend.outcome
            if out is not None and out.rebuild is not None:
                st.low = out.rebuild.low_offset
                st.live_traces = st.low < st.start
            self._buffered_bytes -= pend.nbytes
            st.inflight.popleft()
            wrote = True
        return wrote

    def flush_all(self, grace_s: float) -> None:
        """Write and commit everything buffered (on SIGTERM), within ``grace_s`` of the stop
        request (a retry that saw the stop first started the grace period then)."""
        stop = self._stop
        stop.begin(grace_s)
        while time.monotonic() < stop.deadline:
            moved = False
            for st in list(self.partitions.values()):
                if time.monotonic() > stop.deadline:
                    break
                moved |= self._maybe_flush(st, time.monotonic(), force=True)
            if not self._tickets:
                if not moved:
                    break  # all written, or waiting for deploys that will not come in time
            else:
                self.workers.wait(_WORKER_WAIT_S)
        for st in self.partitions.values():
            left = st.uncommitted()
            if left:
                log.warning(
                    "stopping with %d uncommitted records of %s[%d]: the next owner replays them from offset %d",
                    left,
                    self.topic,
                    st.partition,
                    st.start,
                )

    def close(self) -> None:
        """Stop the workers and leave the group."""
        try:
            self.workers.close()
        finally:
            self.consumer.close()
