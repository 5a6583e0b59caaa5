"""The dedup window: which spans of a partition repeat one seen shortly before (exporter retries)."""

from __future__ import annotations

from collections import deque


class DedupWindow:
    """Which spans of a partition repeat one seen within ``horizon`` offsets before.

    Keys are trace id + span id, compared exactly: ids are not always random (test
    generators, some SDKs), so a shorter hash could merge two real spans.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self._seen: dict[bytes, int] = {}
        self._order: deque[tuple[int, list[bytes]]] = deque()

    def _evict(self, offset: int) -> None:
        floor = offset - self.horizon
        order = self._order
        seen = self._seen
        while order and order[0][0] < floor:
            off, keys = order.popleft()
            for k in keys:
                if seen.get(k) == off:
                    del seen[k]

    def observe(self, offset: int, keys: list[bytes]) -> list[bool]:
        """Mark ``keys`` seen at ``offset``; True where a key was seen within the horizon."""
        self._evict(offset)
        seen = self._seen
        out = [k in seen for k in keys]
        for k in keys:
            seen[k] = offset
        self._order.append((offset, keys))
        return out
