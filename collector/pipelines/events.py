"""The stream pipeline's deploy and incident topics: reading, storing and tagging batches with deploys.

A batch is tagged with the deploy events whose record timestamps are at most its last record
timestamp plus ``deploy_skew``, among those read before the batch (positions recorded in the
intent).  The batch waits until the deploys reader has read past that point, or has reached
the topic's end while the wall clock is past it, so an idle deploys topic stalls nothing.
A deploy that arrives later than that is counted as late and not applied retroactively.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from attribution.model import DeployEvent, IncidentEvent
from collector.codec.events import decode_deploy_json, decode_incident_json
from collector.errors import EventError, StoreRejectedError
from collector.pipelines.stream_retry import StoreRetry
from collector.pipelines.stream_write import DeadLetters
from collector.ports import DeployStore, EventSource, Record
from collector.processing.deploy_sets import DeployLog, Selection, TopicDeploy
from collector.processing.metrics import Metrics

log = logging.getLogger("prodloop.pipeline")

_E = TypeVar("_E", DeployEvent, IncidentEvent)
_END_CHECK_INTERVAL_S = 0.1


class StreamEvents:
    """The deploys and incidents topics of one replica, and the deploy log batches are tagged from.

    ``on_deploys`` gets every change of the log (static and topic deploys), ahead of any
    batch cut after it: the pipeline mirrors it in its workers.
    """

    def __init__(
        self,
        store: DeployStore,
        deploys: EventSource | None,
        incidents: EventSource | None,
        *,
        retry: StoreRetry,
        dead_letters: DeadLetters,
        metrics: Metrics,
        clock_ns: Callable[[], int],
        on_deploys: Callable[[Sequence[DeployEvent], Sequence[TopicDeploy]], None],
    ) -> None:
        self.store = store
        self.deploys = deploys
        self.incidents = incidents
        self._retry = retry
        self._dead = dead_letters
        self.metrics = metrics
        self.clock_ns = clock_ns
        self._on_deploys = on_deploys
        self.log = DeployLog()  # mirrored in every worker (collector/processing/deploy_sets.py)
        self._at_end_ms = -1  # wall clock (ms) at which the deploys reader was last at the end
        self._checked_at = -float("inf")  # monotonic time of the last end-offsets request
        self._max_bound_used = -1

    def load_from_store(self) -> None:
        """The deploys the store holds; the deploys reader goes on past them."""
        static: list[DeployEvent] = []
        topic: list[TopicDeploy] = []
        for ev, part, off, ts in self.store.load_deploy_sources():
            if part >= 0:
                topic.append((ts, part, off, ev))
            else:
                static.append(ev)
        self._add(static, topic)
        if self.deploys is not None and self.log.read_to:
            self.deploys.seek(self.log.read_to)  # past what the store holds

    def _add(self, static: list[DeployEvent], topic: list[TopicDeploy]) -> None:
        if self.log.add(static, topic):
            self._on_deploys(static, topic)  # ahead of every batch cut from now on

    # -- reading ---------------------------------------------------------------------------

    def poll(self) -> None:
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
                ev = decode_deploy_json(r.value)
            except EventError as exc:
                self._dead.send(r, exc.reason, f"invalid deploy event: {exc}")
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
        taken = self._store(
            taken,
            lambda part: self.store.write_deploys(
                [ev for _, ev in part],
                self.clock_ns(),
                [(r.partition, r.offset, r.timestamp_ms) for r, _ in part],
            ),
            "store deploys",
        )
        if taken:
            self._add([], [(r.timestamp_ms, r.partition, r.offset, ev) for r, ev in taken])
            self.metrics.deploys_in.inc(len(taken))

    def _take_incidents(self, records: list[Record]) -> None:
        taken: list[tuple[Record, IncidentEvent]] = []
        for r in records:
            try:
                taken.append((r, decode_incident_json(r.value)))
            except EventError as exc:
                self._dead.send(r, exc.reason, f"invalid incident event: {exc}")
        taken = self._store(
            taken,
            lambda part: self.store.write_incidents([ev for _, ev in part], self.clock_ns()),
            "store incidents",
        )
        if taken:
            self.metrics.incidents_in.inc(len(taken))

    def _store(
        self, taken: list[tuple[Record, _E]], write: Callable[[list[tuple[Record, _E]]], object], what: str
    ) -> list[tuple[Record, _E]]:
        """Store events read from a topic; those the store refuses are dead-lettered, one by one."""
        if not taken:
            return taken
        try:
            self._retry.run(lambda: write(taken), what)
            return taken
        except StoreRejectedError:
            pass
        kept = []
        for item in taken:
            try:
                self._retry.run(functools.partial(write, [item]), what)
            except StoreRejectedError as exc:
                self._dead.send(item[0], "store_refused", str(exc))
                continue
            kept.append(item)
        return kept

    # -- tagging ---------------------------------------------------------------------------

    def positions(self) -> dict[int, int]:
        """Where the deploys reader is, per partition of the deploys topic."""
        return self.deploys.positions() if self.deploys is not None else {}

    def caught_up(self, positions: Mapping[int, int]) -> bool:
        """Has the deploys reader read as far as ``positions`` (a replayed batch's)?"""
        if self.deploys is None:
            return True
        now = self.deploys.positions()
        return all(now.get(p, 0) >= o for p, o in positions.items())

    def ready(self, bound_ms: int) -> bool:
        """May a batch with deploy bound ``bound_ms`` be tagged now?"""
        if self.deploys is None:
            return True
        if self.log.max_time_ms > bound_ms:
            return True
        # "At the end while the clock is past the bound" holds for every bound below the last
        # time the reader was seen at the end, so one round trip to the broker (ListOffsets, on
        # the order of 100 ms with kafka-python) serves all the batches behind it.
        if self._at_end_ms > bound_ms:
            return True
        now_ms = self.clock_ns() // 1_000_000
        if now_ms <= bound_ms:
            return False
        mono = time.monotonic()
        if mono - self._checked_at < _END_CHECK_INTERVAL_S:
            return False
        self._checked_at = mono
        if self.deploys.at_end():  # the end offsets were asked for after now_ms
            self._at_end_ms = now_ms
            return True
        return False

    def tag(self, bound_ms: int, positions: Mapping[int, int]) -> Selection:
        """The deploy selection of a batch cut now with ``bound_ms`` and ``positions``."""
        self._max_bound_used = max(self._max_bound_used, bound_ms)
        return self.log.select(bound_ms, positions)
