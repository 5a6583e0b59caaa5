"""The streaming pipeline: poll -> decode -> dedup -> attribute -> aggregate -> write -> commit.

Delivery is *exactly-once-effective*: every record is counted once in ClickHouse, whatever
instant the process dies at, and however a replay happens to batch the records.

**Batches are per partition.**  A batch is the records of one partition in
``[start, end)``, where ``start`` is the partition's committed offset.

**Write-ahead intents.**  Before writing a batch, the pipeline records the batch's exact
range (and the deploy-topic positions it was tagged with) in ``stream_intents``; the
aggregates then go in with insert-deduplication tokens derived from that range.  Only
after ClickHouse acknowledged every insert is ``end`` committed to Kafka.  When a replica
is assigned a partition whose committed offset ``c`` has an intent starting at ``c``, its
first batch is exactly that intent's range, tagged with the same deploys, so it rebuilds
identical rows with identical tokens: ClickHouse drops whatever part had already landed
(crash mid-write) or all of it (crash after the write, before the commit).  Without an
intent (crash before it was written) nothing was written, and any batching is fine.

**Duplicates from exporter retries.**  A span whose (trace_id, span_id) appeared in the
same partition at an offset within ``dedup_horizon`` before it is dropped.  That rule is a
pure function of the log, and the state is rebuilt on assignment by re-reading the horizon
before the committed offset, so a replay drops exactly the same spans.

**Deploy tagging is deterministic.**  A batch is tagged with the deploy events whose
record timestamps are at most its last record timestamp plus ``deploy_skew``, among those
read before the batch (positions recorded in the intent).  The batch waits until the
deploys reader has read past that point, or has reached the topic's end while the wall
clock is past it, so an idle deploys topic stalls nothing.  A deploy that arrives later
than that is counted as late and not applied retroactively.

**Bad data.**  Spans whose times fall outside the store's range or the plausibility window
around their record's timestamp are rejected at decode (``time_out_of_range``) and their
record is dead-lettered.  Rows the store still refuses (:class:`StoreRejectedError`, never
retried) are isolated by bisection under derived tokens, deterministically, and
dead-lettered as JSON; the rest of the batch is written and committed.

**Backpressure.**  When ClickHouse fails, fetching is paused, the write is retried with
capped exponential backoff, and the consumer keeps polling so the group keeps us.  A stop
(``stop``) ends the retry after ``grace_s``: nothing unwritten is committed.
Buffers are bounded per partition (a full partition is paused) and in bytes over all
partitions, counting the batches at the workers until they are committed.

**Workers.**  Decoding, deduplication, attribution and aggregation run in
``stream.workers`` processes (:mod:`collector.processing.workers`; 0 runs them in this process).
Everything above stays here: batch boundaries, deploy tagging, intents, writes and commits.
A partition's batches go to one worker in offset order (its dedup window lives there), up to
``max_inflight_batches`` of them at a time, and are written and committed in that order as
their aggregates come back.  Dropping a partition (revocation, failed commit) discards its
batches at the workers and their dedup window; the next assignment rebuilds it from the
horizon, as at start-up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from attribution.aggregate import AggregateRow
from attribution.attribute import Repository
from attribution.events import EventValidationError, parse_deploy_event, parse_incident_event
from attribution.model import DEFAULT_TIME_BOUNDS, DeployEvent, IncidentEvent, TimeBounds
from collector.errors import BrokerError, StoreError, StoreRejectedError
from collector.exporters.kafka.client import Record
from collector.processing.deploy_sets import DeployLog, TopicDeploy
from collector.processing.metrics import Metrics
from collector.processing.workers import BatchOutcome, InlineWorkers, ProcessorConfig, ProcessWorkers

log = logging.getLogger("prodloop.pipeline")

_E = TypeVar("_E", DeployEvent, IncidentEvent)


class Consumer(Protocol):
    topic: str

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]: ...
    def committed(self, partition: int) -> int | None: ...
    def beginning(self, partition: int) -> int: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def commit(self, offsets: dict[int, int]) -> None: ...
    def pause(self, partitions: Sequence[int]) -> None: ...
    def resume(self, partitions: Sequence[int]) -> None: ...
    def assignment(self) -> list[int]: ...
    def ends(self) -> dict[int, int]: ...


class Reader(Protocol):
    topic: str

    def poll(self, timeout_ms: int = 0) -> list[Record]: ...
    def seek(self, positions: dict[int, int]) -> None: ...
    def positions(self) -> dict[int, int]: ...
    def at_end(self) -> bool: ...


class DeadLetterSink(Protocol):
    def send(self, record: Record, reason: str, error: str) -> None: ...
    def flush(self, timeout_s: float = 30) -> None: ...


@dataclass
class StreamConfig:
    group_id: str = "prodloop"
    encoding: str = "otlp_proto"  # otlp_proto | otlp_json | auto
    batch_records: int = 200
    linger_ms: int = 1000
    max_buffered_records: int = 2000  # per partition; a full partition is paused
    max_buffered_bytes: int = 64 * 1024 * 1024  # all partitions; past it every partition is paused
    dedup_horizon: int = 1000  # offsets
    deploy_skew_ms: int = 30_000
    deploy_wait_max_ms: int = 60_000
    window_ns: int = 60_000_000_000
    max_groups_per_window: int = 10_000
    sample_rate_attribute: str = ""
    time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS  # around each record's timestamp
    write_chunk_rows: int = 5000
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    grace_s: float = 20.0  # once ``stop`` is set, retries give up after this
    workers: int = 0  # worker processes for decode..aggregate; 0 = in this process
    max_inflight_batches: int = 2  # per partition, handed to the workers and not yet committed
    crash_at: str = ""  # testing aid: "before_write:N", "mid_write:N", "after_write:N", "after_commit:N"
    idempotent: bool = True  # testing aid: False disables intents and tokens (the negative control)


@dataclass
class Pending:
    """A batch handed to the workers, to be written and committed in offset order."""

    batch: list[Record]
    start: int
    end: int
    bound: int
    positions: dict[int, int]
    replay: dict[str, Any] | None  # the intent this batch reproduces, if any
    nbytes: int
    outcome: BatchOutcome | None = None


@dataclass
class PartitionState:
    partition: int
    start: int  # committed offset: the next batch to write starts here
    history_until: int  # records before this offset only feed the dedup window
    buffer: list[Record] = field(default_factory=list)
    fetched_to: int = 0  # one past the last record taken into the buffer
    next_start: int = 0  # where the next batch handed to the workers starts
    inflight: deque[Pending] = field(default_factory=deque)
    first_at: float = 0.0  # monotonic time the oldest buffered record arrived
    replay: dict[str, Any] | None = None  # an intent to reproduce exactly
    paused: bool = False

    def __post_init__(self) -> None:
        self.fetched_to = self.next_start = self.start


class _Crash:
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


class StreamPipeline:
    """One replica's loop over its partitions of the traces topic."""

    def __init__(
        self,
        cfg: StreamConfig,
        consumer_factory: Callable[[Callable[[list[int]], None], Callable[[list[int]], None]], Consumer],
        store: Any,
        repositories: list[Repository],
        *,
        deploys: Reader | None = None,
        incidents: Reader | None = None,
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
        self.metrics = metrics or Metrics()
        self.clock_ns = clock_ns
        self.partitions: dict[int, PartitionState] = {}
        self._crash = _Crash(cfg.crash_at) if cfg.crash_at else None
        self._stop = stop
        self.stopping = False
        self._stop_deadline = float("inf")
        self.store_healthy = True  # False from a failed store call until one succeeds (readiness)
        pcfg = ProcessorConfig(
            encoding=cfg.encoding,
            dedup_horizon=cfg.dedup_horizon,
            window_ns=cfg.window_ns,
            max_groups_per_window=cfg.max_groups_per_window,
            sample_rate_attribute=cfg.sample_rate_attribute,
            time_bounds=cfg.time_bounds,
        )
        self.workers: InlineWorkers | ProcessWorkers = (
            ProcessWorkers(cfg.workers, pcfg, repositories)
            if cfg.workers > 0
            else InlineWorkers(pcfg, repositories)
        )
        # ticket of a batch handed to the workers -> its partition's state and the batch
        self._tickets: dict[int, tuple[PartitionState, Pending]] = {}
        # deploy events, mirrored in every worker (collector/processing/deploy_sets.py)
        self._deploys = DeployLog()
        self._deploys_at_end_ms = -1  # wall clock (ms) at which the deploys reader was last at the end
        self._deploys_checked_at = -float("inf")  # monotonic time of the last end-offsets request
        self._events_polled_at = -float("inf")
        self._max_bound_used = -1
        self._load_deploys_from_store()
        # kafka-python calls rebalance listeners on its IO thread, where blocking calls are not
        # allowed: queue the events and handle them on the loop's thread after each poll
        self._rebalance_events: deque[tuple[str, list[int]]] = deque()
        self.consumer = consumer_factory(
            lambda parts: self._rebalance_events.append(("assigned", parts)),
            lambda parts: self._rebalance_events.append(("revoked", parts)),
        )
        self.topic = self.consumer.topic
        self._last_lag = 0.0
        self._buffered_bytes = 0
        self._avg_record_bytes = 16 * 1024  # moving average of the records' sizes

    # -- deploys -----------------------------------------------------------------------

    def _load_deploys_from_store(self) -> None:
        static: list[DeployEvent] = []
        topic: list[TopicDeploy] = []
        for ev, part, off, ts in self.store.load_deploy_sources():
            if part >= 0:
                topic.append((ts, part, off, ev))
            else:
                static.append(ev)
        self._add_deploys(static, topic)
        if self.deploys is not None and self._deploys.read_to:
            self.deploys.seek(self._deploys.read_to)  # past what the store holds

    def _add_deploys(self, static: list[DeployEvent], topic: list[TopicDeploy]) -> None:
        if self._deploys.add(static, topic):
            self.workers.add_deploys(static, topic)  # ahead of every batch cut from now on

    def poll_events(self) -> None:
        """Read new deploy and incident events (non-blocking) and persist them."""
        if self.deploys is not None:
            records = self.deploys.poll(0)
            if records:
                self._take_deploys(records)
        if self.incidents is not None:
            records = self.incidents.poll(0)
            if records:
                self._take_incidents(records)

    def _take_deploys(self, records: list[Record]) -> None:
        taken: list[tuple[Record, DeployEvent]] = []
        for r in records:
            try:
                ev = parse_deploy_event(json.loads(r.value))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, EventValidationError) as exc:
                self._dead_letter(r, "invalid_event", f"invalid deploy event: {exc}")
                continue
            taken.append((r, ev))
            if r.timestamp_ms <= self._max_bound_used:
                self.metrics.deploys_late.inc()
                log.warning(
                    "late deploy event %s (record time %d ms is before batches already tagged); "
                    "not applied retroactively",
                    ev.deploy_id,
                    r.timestamp_ms,
                )
        taken = self._store_events(
            taken,
            lambda part: self.store.write_deploys(
                [ev for _, ev in part],
                self.clock_ns(),
                [(r.partition, r.offset, r.timestamp_ms) for r, _ in part],
            ),
            "store deploys",
        )
        if taken:
            self._add_deploys([], [(r.timestamp_ms, r.partition, r.offset, ev) for r, ev in taken])
            self.metrics.deploys_in.inc(len(taken))

    def _take_incidents(self, records: list[Record]) -> None:
        taken: list[tuple[Record, IncidentEvent]] = []
        for r in records:
            try:
                taken.append((r, parse_incident_event(json.loads(r.value))))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, EventValidationError) as exc:
                self._dead_letter(r, "invalid_event", f"invalid incident event: {exc}")
        taken = self._store_events(
            taken,
            lambda part: self.store.write_incidents([ev for _, ev in part], self.clock_ns()),
            "store incidents",
        )
        if taken:
            self.metrics.incidents_in.inc(len(taken))

    def _store_events(
        self, taken: list[tuple[Record, _E]], write: Callable[[list[tuple[Record, _E]]], Any], what: str
    ) -> list[tuple[Record, _E]]:
        """Store events read from a topic; those the store refuses are dead-lettered, one by one."""
        if not taken:
            return taken
        try:
            self._retry(lambda: write(taken), what)
            return taken
        except StoreRejectedError:
            pass
        kept = []
        for item in taken:
            try:
                self._retry(functools.partial(write, [item]), what)
            except StoreRejectedError as exc:
                self._dead_letter(item[0], "store_refused", str(exc))
                continue
            kept.append(item)
        return kept

    def _deploys_ready(self, bound_ms: int) -> bool:
        if self.deploys is None:
            return True
        if self._deploys.max_time_ms > bound_ms:
            return True
        # "At the end while the clock is past the bound" holds for every bound below the last
        # time the reader was seen at the end, so one round trip to the broker (ListOffsets, on
        # the order of 100 ms with kafka-python) serves all the batches behind it.
        if self._deploys_at_end_ms > bound_ms:
            return True
        now_ms = self.clock_ns() // 1_000_000
        if now_ms <= bound_ms:
            return False
        mono = time.monotonic()
        if mono - self._deploys_checked_at < _END_CHECK_INTERVAL_S:
            return False
        self._deploys_checked_at = mono
        if self.deploys.at_end():  # the end offsets were asked for after now_ms
            self._deploys_at_end_ms = now_ms
            return True
        return False

    # -- assignment --------------------------------------------------------------------

    def _on_assigned(self, partitions: list[int]) -> None:
        for p in partitions:
            self._drop_partition(p)  # reassigned without a revocation: start over
            committed = self.consumer.committed(p)
            start = committed if committed is not None else self.consumer.beginning(p)
            begin = self.consumer.beginning(p)
            history_from = max(begin, start - self.cfg.dedup_horizon)
            st = PartitionState(p, start, start)
            st.replay = self._read_intent(p, start) if self.cfg.idempotent else None
            self.partitions[p] = st
            self.workers.reset(p)
            self.consumer.seek(p, history_from)
            log.info(
                "assigned %s[%d]: start %d, dedup history from %d%s",
                self.topic,
                p,
                start,
                history_from,
                f", replaying batch to {st.replay['end_offset']}" if st.replay else "",
            )
        self.metrics.partitions.set(len(self.partitions))

    def _read_intent(self, partition: int, start: int) -> dict[str, Any] | None:
        """The intent of the batch starting at ``start``; not knowing is unsafe, so retry."""
        delay = self.cfg.backoff_initial_s
        while True:
            try:
                intent: dict[str, Any] | None = self.store.intent_at(
                    self.cfg.group_id, self.topic, partition, start
                )
                self.store_healthy = True
                return intent
            except StoreError as exc:
                self.store_healthy = False
                self.metrics.store_errors.labels(operation="read intents").inc()
                log.warning("reading intents failed (%s); retrying in %.1fs", str(exc)[:300], delay)
            if self._stop_due(delay):
                # not set up: nothing of it is consumed, and the next owner starts from its commit
                raise BrokerError(
                    f"stopping before the intent of {self.topic}[{partition}]@{start} could be read"
                )
            time.sleep(delay)
            delay = min(self.cfg.backoff_max_s, delay * 2)

    def _on_revoked(self, partitions: list[int]) -> None:
        for p in partitions:
            st = self._drop_partition(p)
            if st is not None and (st.buffer or st.inflight):
                log.info(
                    "revoked %s[%d] with %d uncommitted records (the next owner replays them)",
                    self.topic,
                    p,
                    len(st.buffer) + sum(len(x.batch) for x in st.inflight),
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
            self.poll_events()
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
        self._maybe_update_lag()

    def _take(self, records: list[Record], fresh: set[int], now: float) -> None:
        """Sort fetched records into dedup history and partition buffers."""
        history: dict[int, list[tuple[int, int, bytes]]] = {}
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

    def _maybe_update_lag(self) -> None:
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
                    self.metrics.lag.labels(partition=str(p)).set(max(0, end - st.start))
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
                st.buffer
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
        """Hand the partition's next batch to the workers, if it is complete and its deploys known."""
        replay = st.replay
        if replay is not None:
            end = replay["end_offset"]
            n = sum(1 for r in st.buffer if r.offset < end)
            if n == len(st.buffer) and st.buffer[-1].offset < end - 1:
                return False  # the replayed batch is not complete yet
            if n == 0:  # no record of the intent's range exists (a gap in the log): nothing was written
                st.replay = None
                return True
            positions = replay["deploy_positions"]
            bound = replay["deploy_bound_ms"]
            if self.deploys is not None and any(
                self.deploys.positions().get(p, 0) < o for p, o in positions.items()
            ):
                return False  # the deploys reader has not caught up with the original run yet
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
            if not self._deploys_ready(bound):
                return False
            positions = self.deploys.positions() if self.deploys is not None else {}
        batch = st.buffer[:n]
        del st.buffer[:n]
        selection = self._deploys.select(bound, positions)
        pend = Pending(
            batch,
            st.next_start,
            batch[-1].offset + 1,
            bound,
            positions,
            replay,
            sum(len(r.value) for r in batch),
        )
        ticket = self.workers.submit(
            self.topic, st.partition, [(r.offset, r.timestamp_ms, r.value) for r in batch], selection
        )
        self._tickets[ticket] = (st, pend)
        st.inflight.append(pend)
        st.next_start = pend.end
        st.replay = None
        st.first_at = now
        self._max_bound_used = max(self._max_bound_used, bound)
        return True

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
            if not self._write(st, st.inflight[0]):
                break
            st.inflight.popleft()
            wrote = True
        return wrote

    def _write(self, st: PartitionState, pend: Pending) -> bool:
        """Write one batch's aggregates and commit its end.  False if it must be tried again later."""
        out = pend.outcome
        assert out is not None
        m = self.metrics
        if out.errors or out.partial:
            by_offset = {r.offset: r for r in pend.batch}
            for offset, reason, message in out.errors:
                m.rejected.labels(reason=reason).inc()
                if not self._dead_letter(by_offset[offset], reason, message):
                    return False  # stopping: not sent, so not committed either
            for offset, reason, message in out.partial:  # its spans are counted after the commit
                if not self._dead_letter(by_offset[offset], reason, message):
                    return False
        rows = out.rows
        start, end, bound, positions = st.start, pend.end, pend.bound, pend.positions
        assert start == pend.start, (start, pend.start)
        token = self._token(st.partition, start, end)
        crash = self._crash
        if crash is not None:
            crash.batches += 1
            crash.hit("before_write")
        if pend.replay is None:
            ok = self._retry(
                lambda: self.store.write_intent(
                    self.cfg.group_id,
                    self.topic,
                    st.partition,
                    start,
                    end,
                    positions,
                    bound,
                    token,
                    self.clock_ns(),
                    chunk_rows=self.cfg.write_chunk_rows,
                ),
                "write intent",
                partition=st.partition,
            )
            if ok is _ABORTED:
                return False
        t0 = time.monotonic()

        # the chunking is part of the tokens: a replay must chunk as the original write did
        chunk = pend.replay["chunk_rows"] if pend.replay is not None else self.cfg.write_chunk_rows

        def on_chunk(i: int) -> None:
            if crash is not None and i == 0 and chunk and len(rows) > chunk:
                crash.hit("mid_write")  # between two inserts of one batch

        refused: list[tuple[AggregateRow, str]] = []

        def write() -> int:
            refused.clear()  # a retried write refuses the same rows again
            return int(
                self.store.write_aggregates(
                    rows,
                    self.cfg.window_ns,
                    dedup_token=token,
                    chunk_rows=chunk,
                    on_chunk=on_chunk,
                    on_refused=lambda row, message: refused.append((row, message)),
                )
            )

        ok = self._retry(write, "write aggregates", partition=st.partition)
        if ok is _ABORTED:
            return False
        m.write_seconds.observe(time.monotonic() - t0)
        for row, message in refused:
            if not self._dead_letter_row(st.partition, start, end, row, message):
                return False
        if crash is not None:
            crash.hit("after_write")
        if self.dead_letters is not None:
            self.dead_letters.flush()
        try:
            self.consumer.commit({st.partition: end})
        except BrokerError as exc:
            # typically a rebalance: the next owner replays this batch from its intent
            log.warning("commit of %s[%d]@%d failed: %s", self.topic, st.partition, end, exc)
            m.commit_failures.inc()
            self._drop_partition(st.partition)
            # if it is still ours (not a rebalance: a timeout, a coordinator move), start it over
            # from its committed offset and intent, as a new assignment would
            self._rebalance_events.append(("reinit", [st.partition]))
            return False
        if crash is not None:
            crash.hit("after_commit")
        st.start = end
        self._buffered_bytes -= pend.nbytes
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
        m.batches.inc()
        m.rows_written.inc(len(rows))
        m.committed_offset.labels(partition=str(st.partition)).set(end)
        m.last_commit.set(self.clock_ns() / 1e9)
        return True

    def _token(self, partition: int, start: int, end: int) -> str:
        if not self.cfg.idempotent:
            return f"prodloop-unsafe-{uuid.uuid4().hex}"
        h = hashlib.sha256(
            f"{self.cfg.group_id}\0{self.topic}\0{partition}\0{start}\0{end}".encode()
        ).hexdigest()
        return f"prodloop-stream-{h[:40]}"

    def _dead_letter_row(self, partition: int, start: int, end: int, row: AggregateRow, message: str) -> bool:
        """An aggregate row the store refused: its spans are dead-lettered as the row's JSON."""
        self.metrics.rows_refused.inc()
        self.metrics.rejected.labels(reason="store_refused").inc(row.spans)
        doc = row._asdict()
        doc["owners"] = list(row.owners)
        doc["latency_bins"] = {str(k): v for k, v in row.latency_bins.items()}
        value = json.dumps({"aggregate_row": doc}, sort_keys=True).encode()
        return self._dead_letter(
            Record(self.topic, partition, start, -1, None, value),
            "store_refused",
            f"the store refused an aggregate row of {row.spans} span(s) from {self.topic}[{partition}] "
            f"offsets [{start}, {end}): {message}",
        )

    def _dead_letter(self, r: Record, reason: str, error: str) -> bool:
        """Send ``r`` to the dead-letter topic; False if stopping cut the retry short."""
        self.metrics.dead_lettered.inc()
        log.warning("dead-lettering %s[%d]@%d: %s", r.topic, r.partition, r.offset, error[:500])
        if self.dead_letters is None:
            return True
        sink = self.dead_letters
        return self._retry(lambda: sink.send(r, reason, error), "dead-letter") is not _ABORTED

    def _retry(self, fn: Callable[[], Any], what: str, partition: int | None = None) -> Any:
        """Run ``fn`` until it succeeds, backing off; keep polling (paused) so the group keeps us.

        Returns ``_ABORTED`` if ``partition`` was revoked (or revoked and assigned again)
        meanwhile, or once a stop's grace period is over.  :class:`StoreRejectedError` is
        permanent: it is raised at once, never retried.
        """
        delay = self.cfg.backoff_initial_s
        paused_here: list[int] = []
        # a rebalance during the retry may revoke the partition, or revoke and assign it
        # again (a fresh state that reads the intents anew): either way this batch is not ours
        owner = self.partitions.get(partition) if partition is not None else None
        try:
            while True:
                if self._stop_due():
                    log.warning(
                        "stopping: gave up %s after the grace period (nothing of it is committed)", what
                    )
                    return _ABORTED
                try:
                    result = fn()
                    if partition is not None and self.partitions.get(partition) is not owner:
                        return _ABORTED
                    if not self.store_healthy and what != "dead-letter":
                        self.store_healthy = True
                    return result
                except StoreRejectedError:
                    raise
                except (StoreError, BrokerError) as exc:
                    if isinstance(exc, StoreError):
                        self.store_healthy = False
                    self.metrics.store_errors.labels(operation=what).inc()
                    log.warning("%s failed (%s); retrying in %.1fs", what, str(exc)[:300], delay)
                if not paused_here:
                    paused_here = [p for p in self.consumer.assignment()]
                    if paused_here:
                        self.consumer.pause(paused_here)
                        self.metrics.paused.set(1)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stop_due():
                    polled = self.consumer.poll(min(200, max(1, int((deadline - time.monotonic()) * 1000))))
                    fresh = self._apply_rebalance()
                    if fresh:
                        self.consumer.pause(list(fresh))
                        paused_here.extend(fresh)
                    self._take(polled, fresh, time.monotonic())  # fetched before the pause took effect
                self._maybe_update_lag()
                if partition is not None and self.partitions.get(partition) is not owner:
                    return _ABORTED
                delay = min(self.cfg.backoff_max_s, delay * 2)
        finally:
            if paused_here:
                still = [p for p in paused_here if p in self.partitions and not self.partitions[p].paused]
                if still:
                    self.consumer.resume(still)
                self.metrics.paused.set(0)

    def _stop_due(self, within_s: float = 0.0) -> bool:
        """Has a stop been asked for whose grace period ends within ``within_s``?  The first
        time a stop is seen (here, or by :meth:`flush_all`) starts the grace period."""
        if not self.stopping and self._stop is not None and self._stop.is_set():
            self._begin_stop(self.cfg.grace_s)
        return self.stopping and time.monotonic() + within_s > self._stop_deadline

    def _begin_stop(self, grace_s: float) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + grace_s

    def flush_all(self, grace_s: float) -> None:
        """Write and commit everything buffered (on SIGTERM), within ``grace_s`` of the stop
        request (a retry that saw the stop first started the grace period then)."""
        self._begin_stop(grace_s)
        while time.monotonic() < self._stop_deadline:
            moved = False
            for st in list(self.partitions.values()):
                if time.monotonic() > self._stop_deadline:
                    break
                moved |= self._maybe_flush(st, time.monotonic(), force=True)
            if not self._tickets:
                if not moved:
                    break  # all written, or waiting for deploys that will not come in time
            else:
                self.workers.wait(_WORKER_WAIT_S)
        for st in self.partitions.values():
            left = len(st.buffer) + sum(len(x.batch) for x in st.inflight)
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
            self.consumer.close()  # type: ignore[attr-defined]


_ABORTED = object()
_END_CHECK_INTERVAL_S = 0.1
_LAG_INTERVAL_S = 5.0
_EVENTS_POLL_INTERVAL_S = 0.05
_WORKER_WAIT_S = 0.01
