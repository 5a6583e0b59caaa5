"""Self time: the interval union, per-trace self times and own errors, and the trace buffer's
completion rules and exact rebuild."""

from __future__ import annotations

import random

import pytest

from attribution.aggregate import AggregateRow, merge_sorted
from attribution.attribute import GroupKey
from attribution.model import STATUS_ERROR, STATUS_UNSET, Resource, Span
from attribution.selftime import covered, self_time, trace_self_times
from attribution.tracebuffer import CoreFactory, RebuildState, TraceBuffer
from collector.processing import native

R = Resource("svc")


def brute_covered(lo: int, hi: int, intervals: list[tuple[int, int]]) -> int:
    """Count the unit cells [t, t+1) inside [lo, hi) that some interval covers."""
    return sum(1 for t in range(lo, hi) if any(a <= t < b for a, b in intervals))


@pytest.mark.parametrize(
    ("children", "expected"),
    [
        ([], 100),
        ([(10, 20)], 90),  # nested
        ([(10, 30), (20, 40)], 70),  # overlapping: 10..40 counted once
        ([(50, 60), (10, 20)], 80),  # out of order
        ([(10, 10), (20, 20)], 100),  # zero-length
        ([(-50, 10), (90, 150)], 80),  # clipped at both ends
        ([(-50, 150)], 0),  # a child that covers the whole parent
        ([(10, 20), (10, 20)], 90),  # the same interval twice
        ([(200, 300)], 100),  # entirely outside
    ],
)
def test_self_time_is_the_duration_minus_the_union_of_children(
    children: list[tuple[int, int]], expected: int
) -> None:
    assert self_time(0, 100, children) == expected


def test_covered_matches_a_brute_force_union() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        lo = rng.randint(-20, 20)
        hi = lo + rng.randint(0, 60)
        intervals = []
        for _ in range(rng.randint(0, 8)):
            a = rng.randint(-40, 80)
            intervals.append((a, a + rng.randint(-5, 40)))  # some are empty or reversed
        assert covered(lo, hi, intervals) == brute_covered(lo, hi, [(a, b) for a, b in intervals if b > a])


def _id(i: int) -> bytes:
    return i.to_bytes(8, "big")


def test_trace_self_times_orphans_and_own_errors() -> None:
    # root(0..100) -> a(10..60, error) -> b(20..30, error); root -> c(50..90); d's parent is missing
    ids = [_id(1), _id(2), _id(3), _id(4), _id(5)]
    parents = [b"\0" * 8, _id(1), _id(2), _id(1), _id(99)]
    starts = [0, 10, 20, 50, 0]
    ends = [100, 60, 30, 90, 7]
    errors = [True, True, True, False, False]
    selfs, own, orphans = trace_self_times(ids, parents, starts, ends, [int(e) for e in errors])
    assert selfs == [100 - 80, 50 - 10, 10, 40, 7]  # root: union of 10..60 and 50..90 = 80
    assert own == [False, False, True, False, False]  # only b threw: a and root propagated
    assert orphans == 1


def test_trace_self_times_match_a_brute_force_union_per_parent() -> None:
    rng = random.Random(11)
    for _ in range(500):
        n = rng.randint(1, 12)
        starts = [rng.randint(0, 50) for _ in range(n)]
        ends = [s + rng.randint(0, 40) for s in starts]
        parents = [b"\0" * 8] + [_id(rng.randint(1, n + 2)) for _ in range(n - 1)]  # some missing: orphans
        ids = [_id(i + 1) for i in range(n)]
        errors = [rng.random() < 0.3 for _ in range(n)]
        selfs, own, orphans = trace_self_times(ids, parents, starts, ends, [int(e) for e in errors])
        kids = {i: [j for j in range(n) if j != i and parents[j] == ids[i]] for i in range(n)}
        for i in range(n):
            cover = brute_covered(starts[i], ends[i], [(starts[j], ends[j]) for j in kids[i]])
            assert selfs[i] == ends[i] - starts[i] - cover
            assert own is not None and own[i] == (errors[i] and not any(errors[j] for j in kids[i]))
        assert orphans == sum(1 for p in parents[1:] if p not in ids)


def test_trace_self_times_ignore_empty_and_reversed_children() -> None:
    rng = random.Random(13)
    for _ in range(500):
        n = rng.randint(2, 10)
        starts = [rng.randint(0, 50) for _ in range(n)]
        ends = [starts[0] + 60] + [s + rng.randint(-20, 30) for s in starts[1:]]  # some end before they start
        parents = [b"\0" * 8] + [_id(rng.randint(1, i)) for i in range(1, n)]  # a tree: no orphans
        ids = [_id(i + 1) for i in range(n)]
        selfs, own, orphans = trace_self_times(ids, parents, starts, ends, None)
        for i in range(n):
            kids = [(starts[j], ends[j]) for j in range(n) if parents[j] == ids[i] and ends[j] > starts[j]]
            assert selfs[i] == ends[i] - starts[i] - brute_covered(starts[i], ends[i], kids)
        assert own is None
        assert orphans == 0
        as_int = [int.from_bytes(i, "big") for i in ids], [int.from_bytes(i, "big") for i in parents]
        assert trace_self_times(*as_int, starts, ends, None, root=0) == (
            selfs,
            own,
            orphans,
        )  # the buffer's int64 ids


def _span(trace: int, sid: int, parent: int, start: int, end: int, error: bool = False) -> Span:
    return Span(
        R,
        trace.to_bytes(16, "big"),
        _id(sid),
        "op",
        start,
        end,
        STATUS_ERROR if error else STATUS_UNSET,
        parent_span_id=_id(parent) if parent else b"",
    )


GROUP = GroupKey("svc", "", "repo", "m", (), "", "", "")


# the buffer's rules hold on both of its cores: the Python reference and the native twin
CORES = [False, True] if native.AVAILABLE else [False]


@pytest.fixture(params=CORES, ids=lambda on: "native" if on else "python")
def core(request: pytest.FixtureRequest) -> CoreFactory:
    return native.trace_core(request.param)


def _buffer(core: CoreFactory, wait_ms: int = 1000, max_spans: int = 1000) -> TraceBuffer:
    return TraceBuffer(window_ns=60 * 10**9, wait_ms=wait_ms, max_spans=max_spans, exact=True, core=core)


def _add(buf: TraceBuffer, offset: int, ts: int, spans: list[Span], emit: bool = True) -> None:
    gidx = buf.group_indices([0] * len(spans), lambda _: GROUP, "owner")
    buf.add_record(offset, ts, spans, gidx, emit)


def test_a_trace_split_over_records_completes_after_its_wait(core: CoreFactory) -> None:
    buf = _buffer(core, wait_ms=1000)
    _add(buf, 0, 10_000, [_span(1, 2, 1, 10, 20)])  # the child first
    _add(buf, 1, 10_500, [_span(1, 1, 0, 0, 100)])
    assert buf.take_rows() == [] and len(buf) == 1
    _add(buf, 2, 11_000, [])  # the watermark reaches 10_000 + 1000
    (row,) = buf.take_rows()
    assert (row.self_spans, row.self_time_sum_ns) == (2, 90 + 10)
    assert buf.take_stats().orphans == 0


def test_a_span_after_its_trace_completed_is_late_and_keeps_its_duration(core: CoreFactory) -> None:
    buf = _buffer(core, wait_ms=1000)
    _add(buf, 0, 0, [_span(1, 1, 0, 0, 100)])
    _add(buf, 1, 5_000, [_span(1, 2, 1, 10, 20)])
    _add(buf, 2, 9_000, [])
    rows = merge_sorted(buf.take_rows())
    assert rows[0].self_time_sum_ns == 100 + 10  # the root kept its whole duration
    st = buf.take_stats()
    assert (st.late, st.orphans) == (1, 0)


def test_a_one_span_trace_that_fails_has_an_own_error(core: CoreFactory) -> None:
    # a trace of one span (a late span, a cron job's trace) takes the one-span shortcut: the
    # same answer as trace_self_times, which nothing errored under it says is an own error
    buf = _buffer(core, wait_ms=1000)
    _add(buf, 0, 0, [_span(1, 1, 0, 0, 100, error=True)])
    _add(buf, 1, 5_000, [_span(1, 2, 1, 10, 20, error=True)])  # late: a one-span entry of its own
    _add(buf, 2, 9_000, [])
    (row,) = merge_sorted(buf.take_rows())
    assert (row.self_spans, row.own_errors) == (2, 2)
    assert trace_self_times([1], [0], [0], [100], [1], root=0) == ([100], [True], 0)


def test_the_span_cap_completes_the_oldest_traces_early(core: CoreFactory) -> None:
    buf = _buffer(core, wait_ms=10**9, max_spans=4)
    for i in range(6):
        _add(buf, i, i, [_span(i + 1, 1, 0, 0, 10), _span(i + 1, 2, 1, 0, 5)])
        assert buf.buffered <= 4 + 2
    st = buf.take_stats()
    assert st.early == 4 and buf.buffered == 4


def _random_log(rng: random.Random, n_records: int) -> list[tuple[int, list[Span]]]:
    """Records of traces split over several records, with out-of-order timestamps."""
    log: list[tuple[int, list[Span]]] = [(0, []) for _ in range(n_records)]
    next_trace = 1
    for at in range(n_records):
        for _ in range(rng.randint(0, 2)):
            trace, next_trace = next_trace, next_trace + 1
            spans = [_span(trace, 1, 0, 0, 1000, rng.random() < 0.2)]
            for sid in range(2, rng.randint(2, 7)):
                parent = rng.randint(1, sid - 1)
                a = rng.randint(0, 900)
                spans.append(_span(trace, sid, parent, a, a + rng.randint(0, 300), rng.random() < 0.2))
            rng.shuffle(spans)
            for s in spans:  # each span lands in this record or up to 6 records later
                where = min(n_records - 1, at + rng.randint(0, 6))
                log[where][1].append(s)
    return [(max(0, 100 * i + rng.randint(-250, 250)), spans) for i, (_, spans) in enumerate(log)]


def _run(
    buf: TraceBuffer, log: list[tuple[int, list[Span]]], lo: int, hi: int, emit: bool = True
) -> list[AggregateRow]:
    for offset in range(lo, hi):
        ts, spans = log[offset]
        _add(buf, offset, ts, spans, emit)
    return buf.take_rows()


@pytest.mark.parametrize("seed", range(25))
def test_a_rebuild_from_the_commit_decides_exactly_as_the_original(seed: int, core: CoreFactory) -> None:
    rng = random.Random(seed)
    log = _random_log(rng, 80)
    wait, cap = rng.choice([300, 700, 2000]), rng.choice([5, 20, 1000])
    cuts = [*sorted(rng.sample(range(1, 80), 6)), 80]
    original = _buffer(core, wait, cap)
    rows: list[list[AggregateRow]] = []
    states: list[RebuildState] = []
    at = 0
    for cut in cuts:  # the original run, batch by batch
        rows.append(_run(original, log, at, cut))
        states.append(original.rebuild_state(cut))
        at = cut
    for i, cut in enumerate(cuts[:-1]):  # a crash after each batch: rebuild, then go on
        state = RebuildState.from_json(states[i].to_json())
        assert state.low_offset <= cut
        again = _buffer(core, wait, cap)
        again.restore(state)
        assert _run(again, log, state.low_offset, cut, emit=False) == []
        assert again.rebuild_state(cut) == states[i]
        at = cut
        for j, nxt in enumerate(cuts[i + 1 :], start=i + 1):
            assert merge_sorted(_run(again, log, at, nxt)) == merge_sorted(rows[j]), (seed, i, j)
            assert again.rebuild_state(nxt) == states[j]
            at = nxt
    total = merge_sorted(*rows, original.take_rows())
    original.complete_all()
    spans_in = sum(len(s) for _, s in log)
    assert sum(r.self_spans for r in merge_sorted(total, original.take_rows())) == spans_in
