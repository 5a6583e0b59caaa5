"""Self time and own errors of the spans of one trace.  Pure.

A span's **self time** is its duration minus the length of the *union* of its children's
intervals, each clipped to the span: children that overlap (async fan-out, threads) are
counted once, and a child that outlives its parent only covers the part inside it.  A span
whose parent is not in the trace (an **orphan**: the parent was never received, or arrived
after the trace completed) keeps its full self time, as does a span with no children.

A span has an **own error** when it is an error and none of its children is: the code that
failed, not the callers the error propagated through.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from operator import eq, sub

_ROOT = b"\0" * 8  # the parent id of a root span, as the trace buffer stores it (0 as an int64)


def covered(lo: int, hi: int, intervals: Iterable[tuple[int, int]]) -> int:
    """The length of the union of ``intervals`` (``[start, end)``) clipped to ``[lo, hi)``."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi and b > a)
    total = 0
    cur_s = cur_e = lo
    for a, b in clipped:
        if a > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = a, b
        elif b > cur_e:
            cur_e = b
    return total + cur_e - cur_s


def self_time(start: int, end: int, children: Iterable[tuple[int, int]]) -> int:
    """``end - start`` minus the union of ``children`` clipped to the span."""
    return max(0, end - start - covered(start, end, children))


def trace_self_times(
    span_ids: Sequence[Hashable],
    parent_ids: Sequence[Hashable],
    starts: Sequence[int],
    ends: Sequence[int],
    errors: Sequence[int] | None,
    root: Hashable = _ROOT,
) -> tuple[list[int], list[bool] | None, int]:
    """Per span of one trace: its self time and whether it has an own error (``None`` when no
    span is an error: ``errors`` is ``None`` then too); and the number of orphans (spans
    naming a parent that is not among ``span_ids``; a root's parent id is ``root``).  Ids are
    bytes or any other hashables (the trace buffer passes them as int64s, its root as 0).

    A span id that occurs twice (a duplicate beyond the dedup horizon) is its last copy as a
    parent; the other copy keeps its whole duration.
    """
    index = dict(zip(span_ids, range(len(span_ids)), strict=True))
    parents: list[int | None] = list(map(index.get, parent_ids))
    loops = 0
    if any(map(eq, parents, range(len(parents)))):  # a span naming itself as its parent: no parent
        for i, p in enumerate(parents):
            if p == i:
                parents[i] = None
                loops += 1
    selfs = list(map(sub, ends, starts))
    # children in (parent, start) order: one sweep merges each parent's intervals
    kids = [(p, a, b) for p, a, b in zip(parents, starts, ends, strict=True) if p is not None]
    kids.sort()
    orphans = len(parents) - len(kids) - parent_ids.count(root) - loops
    cur = -1
    lo = hi = cs = ce = total = 0
    for p, a, b in kids:
        if p != cur:
            if cur >= 0:
                selfs[cur] -= total + ce - cs
            cur = p
            lo = cs = ce = starts[p]
            hi = ends[p]
            total = 0
        if a < lo:
            a = lo
        if b > hi:
            b = hi
        if a > ce:
            if b > a:  # an empty (clipped away) child covers nothing
                total += ce - cs
                cs, ce = a, b
        elif b > ce:
            ce = b
    if cur >= 0:
        selfs[cur] -= total + ce - cs
    if errors is None:
        return selfs, None, orphans
    failed_under = {p for p, e in zip(parents, errors, strict=True) if e and p is not None}
    own = [bool(e) and i not in failed_under for i, e in enumerate(errors)]
    return selfs, own, orphans
