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

from collections.abc import Iterable, Sequence

_ROOT = b"\0" * 8  # the parent id of a root span, as the trace buffer stores it


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
    span_ids: Sequence[bytes],
    parent_ids: Sequence[bytes],
    starts: Sequence[int],
    ends: Sequence[int],
    errors: Sequence[int] | None,
) -> tuple[list[int], list[bool] | None, int]:
    """Per span of one trace: its self time and whether it has an own error (``None`` when no
    span is an error: ``errors`` is ``None`` then too); and the number of orphans (spans
    naming a parent that is not among ``span_ids``).

    A span id that occurs twice (a duplicate beyond the dedup horizon) is one parent: both
    copies' children count for it.
    """
    n = len(span_ids)
    index = dict(zip(span_ids, range(n), strict=True))
    twice: dict[bytes, list[int]] = {}
    if len(index) != n:
        for i, sid in enumerate(span_ids):
            twice.setdefault(sid, []).append(i)
        twice = {k: v for k, v in twice.items() if len(v) > 1}
    get = index.get
    children: dict[int, list[int]] = {}
    orphans = 0
    for i, pid in enumerate(parent_ids):
        if pid == _ROOT:
            continue
        p = get(pid)
        if p is None:
            orphans += 1
            continue
        for q in twice.get(pid, (p,)):
            if q != i:
                kids = children.get(q)
                if kids is None:
                    children[q] = [i]
                else:
                    kids.append(i)
    selfs = [e - s for s, e in zip(starts, ends, strict=True)]
    for p, kids in children.items():
        s, e = starts[p], ends[p]
        if len(kids) == 1:
            k = kids[0]
            a = starts[k] if starts[k] > s else s
            b = ends[k] if ends[k] < e else e
            if b > a:
                selfs[p] -= b - a
        else:
            selfs[p] = self_time(s, e, [(starts[k], ends[k]) for k in kids])
    if errors is None:
        return selfs, None, orphans
    own = [bool(x) for x in errors]
    for p, kids in children.items():
        if own[p] and any(errors[k] for k in kids):
            own[p] = False
    return selfs, own, orphans
