"""The deploy timeline: which commit was live for a (service, environment) at an instant.  Pure.

* A deploy becomes live at ``deployed_at`` and stays live until the next live deploy of the
  same (service, environment).  Rollbacks are simply later deploys of an older SHA.
* ``failed`` deploys never become live.
* Events with the same ``deploy_id`` are one deploy.  The one with the highest
  ``status_order`` (the status's own time, then its id at the source) wins, whatever the
  arrival order, so a replayed or late older status never revives or replaces a newer one.
  Between equal orders (events that give none) the last one added wins: a corrected event
  replaces the first.
* Ties on ``deployed_at`` are broken by ``deploy_id`` so that the answer never depends on
  arrival order: two replicas, or a replay, that saw the same events agree.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from attribution.model import DeployEvent

_MIN_T = -(1 << 63)
_END = (1 << 63) - 1  # the last deploy stays live until here
_PAST_END = 1 << 63


class DeployTimeline:
    def __init__(self, events: Iterable[DeployEvent] = ()) -> None:
        self._by_id: dict[str, DeployEvent] = {}
        self._index: dict[tuple[str, str], tuple[list[int], list[DeployEvent]]] | None = {}
        self.version = 0  # bumps on every change; callers cache lookups against it
        self.add_all(events)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, event: DeployEvent) -> bool:
        """Add or replace a deploy.  Returns True if the timeline changed; False also for an
        event older (by ``status_order``) than the one held for its ``deploy_id``."""
        old = self._by_id.get(event.deploy_id)
        if old == event:
            return False
        if old is not None and event.status_order < old.status_order:
            return False
        self._by_id[event.deploy_id] = event
        self._index = None
        self.version += 1
        return True

    def add_all(self, events: Iterable[DeployEvent]) -> int:
        return sum(1 for ev in events if self.add(ev))

    def events(self) -> list[DeployEvent]:
        return sorted(self._by_id.values(), key=lambda e: (e.deployed_at_unix_nano, e.deploy_id))

    def _build(self) -> dict[tuple[str, str], tuple[list[int], list[DeployEvent]]]:
        index: dict[tuple[str, str], tuple[list[int], list[DeployEvent]]] = {}
        for ev in self.events():
            if not ev.live:
                continue
            times, evs = index.setdefault((ev.service, ev.environment), ([], []))
            times.append(ev.deployed_at_unix_nano)
            evs.append(ev)
        self._index = index
        return index

    def deploy_at(self, service: str, environment: str, t_unix_nano: int) -> DeployEvent | None:
        """The latest live deploy of (service, environment) at or before ``t_unix_nano``."""
        index = self._index if self._index is not None else self._build()
        entry = index.get((service, environment))
        if entry is None:
            return None
        times, evs = entry
        i = bisect_right(times, t_unix_nano)
        return evs[i - 1] if i else None

    def commit_at(self, service: str, environment: str, t_unix_nano: int) -> str:
        """The commit live at ``t_unix_nano``, or "" when unknown (never a guess)."""
        ev = self.deploy_at(service, environment, t_unix_nano)
        return ev.commit_sha if ev is not None else ""

    def interval_at(
        self, service: str, environment: str, t_unix_nano: int
    ) -> tuple[int, int, DeployEvent | None]:
        """``(lo, hi, deploy)``: the half-open interval around ``t_unix_nano`` in which the live
        deploy of (service, environment) stays the same, and that deploy (None before the first
        one, or with none).  O(log n): attribution asks once per new interval it sees, and a
        long deploy history must not make that a scan.  Agrees with :meth:`intervals`."""
        index = self._index if self._index is not None else self._build()
        entry = index.get((service, environment))
        if entry is None:
            return _MIN_T, _PAST_END, None
        times, evs = entry
        i = bisect_right(times, t_unix_nano)
        if i == 0:
            return _MIN_T, times[0], None
        if i == len(times):
            if t_unix_nano >= _END:
                return _END, _PAST_END, None
            return times[-1], _END, evs[-1]
        return times[i - 1], times[i], evs[i - 1]

    def intervals(self, service: str, environment: str) -> list[tuple[int, int, DeployEvent]]:
        """``(live_from, live_until, deploy)`` for each live deploy; the last runs to 2**63-1."""
        index = self._index if self._index is not None else self._build()
        entry = index.get((service, environment))
        if entry is None:
            return []
        times, evs = entry
        out = []
        for i, ev in enumerate(evs):
            until = times[i + 1] if i + 1 < len(times) else _END
            out.append((times[i], until, ev))
        return out

    def previous(self, event: DeployEvent) -> DeployEvent | None:
        """The live deploy of the same (service, environment) that this one replaced."""
        prev: DeployEvent | None = None
        for _, _, ev in self.intervals(event.service, event.environment):
            if ev.deploy_id == event.deploy_id:
                return prev
            prev = ev
        return None
