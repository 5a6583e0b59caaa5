"""The dedup window: which spans of a partition repeat one seen shortly before (exporter retries)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from attribution.model import Span


class SpanWindow(Protocol):
    """A dedup window: :class:`DedupWindow`, or its native twin (``prodloop_native.DedupWindow``,
    see :func:`collector.processing.native.dedup_window`), which flags the same spans."""

    def observe_spans(self, offset: int, spans: Sequence[Span]) -> list[bool]: ...


class DedupWindow:
    """Which spans of a partition repeat one seen within ``horizon`` offsets before.

    Keys are trace id + span id, compared exactly: ids are not always random (test
    generators, some SDKs), so a shorter hash could merge two real spans.  A span repeated
    within one record is not a duplicate: an exporter retry resends whole records.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self._seen: dict[bytes, int] = {}
        self._order: deque[tuple[int, list[bytes]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def _evict(self, offset: int) -> None:
        floor = offset - self.horizon
        order = self._order
        seen = self._seen
        while order and order[0][0] < floor:
            off, keys = order.popleft()
            for k in keys:
                if seen.get(k) == off:
                    del seen[k]

    def observe_spans(self, offset: int, spans: Sequence[Span]) -> list[bool]:
        """Mark ``spans`` seen at ``offset``; True where a span was seen within the horizon before."""
        self._evict(offset)
        keys = [s.trace_id + s.span_id for s in spans]
        seen = self._seen
        out = [k in seen for k in keys]
        for k in keys:
            seen[k] = offset
        self._order.append((offset, keys))
        return out
