"""The native hot path against its Python reference: identical totals, orphans and rows.

The extension is built by ``make setup`` wherever cargo exists; here it must be (a missing
build fails, it does not skip), unless the machine has no cargo at all."""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
import types
from typing import Any

import pytest

from attribution.aggregate import merge_sorted
from attribution.attribute import Attributor, GroupKey
from attribution.deploys import DeployTimeline
from attribution.model import STATUS_ERROR, STATUS_UNSET, DeployEvent, Resource, Span
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from attribution.tracebuffer import RebuildState, TraceBuffer, TraceCore
from collector.errors import ConfigError
from collector.processing import native
from collector.processing.dedup import DedupWindow

if importlib.util.find_spec("prodloop_native") is None:
    if shutil.which("cargo"):
        pytest.fail(
            "the prodloop_native extension is not installed, but cargo is: run make setup", pytrace=False
        )
    pytest.skip("no cargo on this machine: the extension cannot be built", allow_module_level=True)

WINDOW_NS = 60 * 10**9


R = Resource("svc")
GROUPS = [GroupKey("svc", "", "repo", f"m{g}", (), "", "", "") for g in range(3)]
# every sampling weight's rounding and its cap, and what is no probability at all
PROBABILITIES = [
    1.0,
    1.0,
    1.0,
    0.5,
    1 / 3,
    0.001,
    2.0 / 3,
    1 / 2**56,
    1e-300,
    0.0,
    -1.0,
    math.nan,
    math.inf,
    0.4,
]


def _random_trace(rng: random.Random, trace: int) -> tuple[list[Span], list[int]]:
    """One trace's spans and group indices, with what the math must get right: overlapping,
    clipped, empty and outliving children, missing parents, duplicate ids, a span naming
    itself, roots with no parent id or a zero one, errors, sampling weights, spans over window
    edges and several groups."""
    n = rng.choice([1, 1, 2, 3, rng.randint(4, 40)])
    ids = [rng.randint(1, 2**64 - 1) for _ in range(n)]
    if n > 2 and rng.random() < 0.1:
        ids[-1] = ids[0]  # a duplicate beyond the dedup horizon
    base = rng.choice([0, WINDOW_NS - 500, rng.randint(0, 2**62)])
    spans, gidx = [], []
    for i in range(n):
        r = rng.random()
        if i == 0 or r < 0.05:
            pid = b"" if rng.random() < 0.8 else bytes(8)
        elif r < 0.1:
            pid = rng.randint(1, 2**64 - 1).to_bytes(8, "big")  # a parent never received: an orphan
        elif r < 0.12:
            pid = ids[i].to_bytes(8, "big")  # itself
        else:
            pid = ids[rng.randrange(i)].to_bytes(8, "big")
        start = base + rng.randint(0, 1000)
        end = start + rng.choice([0, 1, rng.randint(0, 2000), rng.randint(0, 10**12)])
        status = rng.choice([STATUS_UNSET] * 5 + [STATUS_ERROR, 1])
        spans.append(
            Span(
                R,
                trace.to_bytes(16, "big"),
                ids[i].to_bytes(8, "big"),
                "op",
                start,
                end,
                status,
                parent_span_id=pid,
                sample_probability=rng.choice(PROBABILITIES),
            )
        )
        gidx.append(rng.randrange(3))
    return spans, gidx


def _totals(drained: list[Any]) -> list[tuple[Any, ...]]:
    """Drained totals with the bins' order made visible (it is part of what must match)."""
    return [(*t[:8], list(t[8].items()), *t[9:]) for t in drained]


@pytest.mark.parametrize("seed", range(20))
def test_the_native_self_time_math_equals_the_python_reference(seed: int) -> None:
    """Whole traces through both cores: the same totals (self times, weights, own errors, bins
    in their order) and the same orphan counts."""
    rng = random.Random(seed)
    py = TraceCore(WINDOW_NS, 10**9, 10**9, False)
    rs = native.trace_core(True)(WINDOW_NS, 10**9, 10**9, False)
    assert not isinstance(rs, TraceCore)
    for k in range(300):
        spans, gidx = _random_trace(rng, k + 1)
        for core in (py, rs):
            core.add(k, -1, spans, gidx)
        if k % 7 == 0:
            assert rs.complete_all() == py.complete_all(), f"traces completed after trace {k}"
        if k % 97 == 0:
            assert _totals(rs.drain()) == _totals(py.drain()), f"totals after trace {k}"
    rs.complete_all()
    py.complete_all()
    assert _totals(rs.drain()) == _totals(py.drain())
    assert rs.take_counts() == py.take_counts()


def test_the_native_core_refuses_what_it_cannot_hold() -> None:
    core = native.trace_core(True)(WINDOW_NS, 100, 100, False)
    spans, _ = _random_trace(random.Random(1), 1)
    with pytest.raises(ValueError, match="1 spans but 2 group indices"):
        core.add(0, 0, spans[:1], [0, 0])
    with pytest.raises(ValueError, match="a trace id of 3 bytes, not 16"):
        core.add(0, 0, [spans[0]._replace(trace_id=b"abc")], [0])
    with pytest.raises(ValueError, match="trace_wait must be >= 0"):
        native.trace_core(True)(WINDOW_NS, -1, 100, False)


def _span(rng: random.Random, trace: int, sid: int, parent: int, start: int) -> Span:
    return Span(
        R,
        trace.to_bytes(16, "big"),
        sid.to_bytes(8, "big"),
        "op",
        start,
        start + rng.randint(0, 500),
        STATUS_ERROR if rng.random() < 0.2 else STATUS_UNSET,
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        sample_probability=rng.choice([1.0, 1.0, 0.5, 0.01]),
    )


Log = list[tuple[int, list[tuple[Span, int]]]]  # per record: its timestamp, its spans and their group ids


def _split_log(rng: random.Random, n_records: int = 120) -> Log:
    """Records of traces split over several records, some spans after their trace completed."""
    log: Log = []
    late: dict[int, list[tuple[Span, int]]] = {}
    trace = 0
    for offset in range(n_records):
        record: list[tuple[Span, int]] = []
        for _ in range(rng.randint(0, 3)):
            trace += 1
            t0 = offset * 10**9 + rng.randint(-(10**9), 10**9)
            for sid in range(1, rng.randint(2, 12)):
                parent = 0 if sid == 1 else rng.randint(1, sid - 1)
                record.append((_span(rng, trace, sid, parent, t0 + rng.randint(0, 400)), rng.randrange(3)))
        if log and rng.random() < 0.3:  # some spans arrive in the record before
            rng.shuffle(record)
            keep = len(record) // 2
            log[-1][1].extend(record[keep:])
            record = record[:keep]
        if record and rng.random() < 0.1:  # one arrives 8 records later: after its trace completed
            late.setdefault(offset + 8, []).append(record.pop(rng.randrange(len(record))))
        log.append((offset * 100 + rng.randint(-150, 150), record + late.pop(offset, [])))
    return log


def _feed(buf: TraceBuffer, log: Log, lo: int, hi: int, emit: bool = True, clock: bool = False) -> None:
    """Records ``lo`` to ``hi`` into ``buf``; ``clock``: now and then a move of the watermark
    (direct mode's arrival clock; the stream, which rebuilds, has none)."""
    for offset in range(lo, hi):
        ts, record = log[offset]
        gidx = buf.group_indices([g for _, g in record], GROUPS.__getitem__, "owner")
        buf.add_record(offset, ts, [s for s, _ in record], gidx, emit)
        if clock and offset % 17 == 16:
            buf.advance(ts + 50)


def _buffer_on(on: bool) -> TraceBuffer:
    return TraceBuffer(window_ns=WINDOW_NS, wait_ms=300, max_spans=60, exact=True, core=native.trace_core(on))


BATCH = 4  # records per batch of the buffer tests


@pytest.mark.parametrize("seed", range(8))
def test_a_trace_buffer_gives_the_same_rows_counts_and_states_on_both_paths(seed: int) -> None:
    """Both buffers see the same records, late and capped, and must emit the same rows in the
    same order, the same counts and the same rebuild states, batch by batch."""
    log = _split_log(random.Random(seed))
    results = []
    for on in (False, True):
        buf = _buffer_on(on)
        rows, batches = [], []
        for lo in range(0, len(log), BATCH):
            _feed(buf, log, lo, lo + BATCH, clock=seed % 2 == 1)
            rows.extend(buf.take_rows())
            batches.append(
                (buf.rebuild_state(lo + BATCH), buf.take_stats(), len(buf), buf.buffered, buf.nbytes())
            )
        buf.complete_all()
        rows.extend(buf.take_rows())
        batches.append((buf.rebuild_state(len(log)), buf.take_stats(), len(buf), buf.buffered, buf.nbytes()))
        results.append((rows, batches))
    (py_rows, py_batches), (rs_rows, rs_batches) = results
    first = next((i for i, (a, b) in enumerate(zip(py_batches, rs_batches, strict=True)) if a != b), None)
    assert first is None, f"batch {first}:\n python {py_batches[first]}\n native {rs_batches[first]}"
    # the cases were exercised: traces completed by the wait and the cap, late spans, ghosts
    assert sum(b[1].traces for b in py_batches) > 100
    assert sum(b[1].early for b in py_batches) > 0 and sum(b[1].late for b in py_batches) > 0
    assert any(b[0].ghosts for b in py_batches)
    first = next((i for i, (a, b) in enumerate(zip(py_rows, rs_rows, strict=True)) if a != b), None)
    assert first is None, f"first differing row #{first}:\n python {py_rows[first]}\n native {rs_rows[first]}"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("written_by", [True, False], ids=["native-then-python", "python-then-native"])
def test_a_rebuild_on_the_other_path_decides_as_the_original(seed: int, written_by: bool) -> None:
    """A crash after any batch written by one path, replayed by the other from the committed
    rebuild state (through its JSON, as the commit stores it): the rows after it are the
    original's, nothing is counted twice and nothing is lost."""
    log = _split_log(random.Random(seed))
    original = _buffer_on(written_by)
    rows: list[list[Any]] = []
    states: list[RebuildState] = []
    for lo in range(0, len(log), BATCH):
        _feed(original, log, lo, lo + BATCH)
        rows.append(original.take_rows())
        states.append(original.rebuild_state(lo + BATCH))
    original.complete_all()
    rows.append(original.take_rows())
    for b, state in enumerate(states[:-1]):
        again = _buffer_on(not written_by)
        again.restore(RebuildState.from_json(state.to_json()))
        end = (b + 1) * BATCH
        _feed(again, log, state.low_offset, end, emit=False)
        assert again.take_rows() == [] and again.rebuild_state(end) == state
        after = []
        for lo in range(end, len(log), BATCH):
            _feed(again, log, lo, lo + BATCH)
            after.append(again.take_rows())
        again.complete_all()
        after.append(again.take_rows())
        assert merge_sorted(*after) == merge_sorted(*rows[b + 1 :]), f"after a crash after batch {b}"
    spans_in = sum(len(r) for _, r in log)
    assert sum(r.self_spans for r in merge_sorted(*rows)) == spans_in


def test_the_hot_path_setting() -> None:
    assert native.resolve("auto") is True and native.resolve("native") is True
    assert native.resolve("python") is False
    assert native.trace_core(False) is TraceCore
    assert "native" in native.describe(True) and "pure Python" in native.describe(False)


def test_forcing_the_native_path_without_the_extension_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "AVAILABLE", False)
    with pytest.raises(ConfigError, match=r"aggregation\.hot_path is native.*make setup"):
        native.resolve("native")
    assert native.resolve("auto") is False
    assert "not installed" in native.describe(False)


_MODULES = ModuleConfig.from_mapping(
    {
        "source_roots": ["/srv/app"],
        "modules": [
            {"name": "cart/api", "paths": ["services/cart/api/**"]},
            {"name": "cart/db", "namespaces": ["shop.cart.db"]},
            {"name": "pay/rpc", "routes": ["/pay/*"]},
            {"name": "jobs", "span_names": ["^job "]},
            {"name": "cart/rest", "paths": ["services/cart/**"]},
        ],
    }
)


def _located_spans(rng: random.Random, n: int) -> list[Span]:
    """Spans over a few resources (some equal but distinct objects), with every attribute a code
    location is made of, missing, empty (falsy: the fallback key is read) or of other types."""
    resources = [
        Resource(svc, env, version)
        for svc in ("cart", "pay", "jobs")
        for env in ("prod", "")
        for version in ("", "1.2")
    ]
    resources += [Resource("cart", "prod")]  # equal to one above, another object
    values: dict[str, list[object]] = {
        "code.file.path": ["services/cart/api/x.py", "/srv/app/services/cart/y.py", "", "vendor/z.py", 7],
        "code.filepath": ["services/cart/api/old.py", "lib/q.py"],
        "code.namespace": ["shop.cart.db", "shop.other", ""],
        "code.function.name": ["shop.cart.db.load", "", "f"],
        "code.function": ["shop.cart.db.legacy", "g"],
        "http.route": ["/pay/{id}", "/cart", ""],
        "rpc.service": ["shop.Payments", True],
        "rpc.method": ["Charge", 1.5],
    }
    spans = []
    for _ in range(n):
        attrs = {k: rng.choice(v) for k, v in values.items() if rng.random() < 0.4}
        start = rng.choice([0, 10**18, 2 * 10**18 + rng.randint(0, 10**15), rng.randint(0, 4 * 10**18)])
        spans.append(
            Span(
                rng.choice(resources),
                rng.randbytes(16),
                rng.randbytes(8),
                rng.choice(["job nightly", "GET /cart", ""]),
                start,
                start + 5,
                attributes=attrs,
            )
        )
    return spans


@pytest.mark.parametrize("seed", range(6))
def test_the_native_group_lookup_equals_the_python_loop(seed: int) -> None:
    """Group ids, group keys and the files seen, on both paths, over rules of every kind, a deploy
    timeline that grows between batches, and caches small enough to be cleared on the way."""
    rng = random.Random(seed)
    repo = Repository(name="shop", modules=_MODULES if seed % 2 else ModuleConfig(source_roots=("/srv/app",)))
    deploys = [DeployEvent(f"d{i}", "cart", "prod", f"{i:040x}", i * 10**18) for i in range(1, 4)]
    timelines = (DeployTimeline(deploys[:1]), DeployTimeline(deploys[:1]))
    limit = rng.choice([3, 200_000])
    paths = [
        Attributor([repo], timeline, cache_limit=limit, native_group_ids=fn)
        for timeline, fn in zip(timelines, (None, native.group_ids(True)), strict=True)
    ]
    modules: set[str] = set()
    deployed = 0
    for batch in range(6):
        if batch == 3:
            for t in timelines:
                t.add_all(deploys[1:])
        spans = _located_spans(rng, rng.randint(0, 300))
        python, rust = (a.group_ids(spans) for a in paths)
        assert rust == python, f"batch {batch}: the first difference at span {_first(python, rust)}"
        assert [paths[1].group(g) for g in rust] == [paths[0].group(g) for g in python]
        modules.update(paths[0].group(g).module for g in python)
        deployed += sum(1 for g in python if paths[0].group(g).deploy_id)
        if batch % 2:
            assert paths[1].drain_files_seen() == paths[0].drain_files_seen()
    assert len(modules) > 2 and deployed > 0  # what was exercised


def _first(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("seed", range(6))
def test_the_native_dedup_window_flags_what_the_python_one_flags(seed: int) -> None:
    """Records at growing offsets (with gaps), resending earlier records whole or in part, with
    spans repeated inside one record and ids that differ only in the trace or the span id."""
    rng = random.Random(seed)
    horizon = rng.choice([1, 5, 50])
    python, rust = DedupWindow(horizon), native.dedup_window(horizon, True)
    assert not isinstance(rust, DedupWindow)
    sent: list[list[Span]] = []
    offset, dups = 0, 0
    for _ in range(400):
        offset += rng.choice([1, 1, 1, 2, 7, horizon])
        r = rng.random()
        if sent and r < 0.3:
            old = rng.choice(sent[-2 * horizon - 2 :])
            record = old if r < 0.15 else rng.sample(old, len(old) // 2)
        else:
            ids = [(rng.randrange(4), rng.randrange(4)) for _ in range(rng.randint(0, 12))]
            record = [_span(rng, t, s + 1, 0, offset) for t, s in ids]
        sent.append(record)
        want = python.observe_spans(offset, record)
        assert rust.observe_spans(offset, record) == want, f"offset {offset}"
        dups += sum(want)
        assert len(rust) == len(python)  # type: ignore[arg-type]
    assert dups > 0


def test_an_extension_without_one_of_the_pieces_is_not_used() -> None:
    """An extension built from an older native/ lacks pieces this checkout runs: prodloop must
    not use it at all (a factory would fail mid-stream), whichever piece is missing."""
    assert native.EXTENSION is not None and native.usable(native.EXTENSION)
    for missing in native.NEEDED:
        partial_ext = types.ModuleType("prodloop_native")
        for name in native.NEEDED:
            if name != missing:
                setattr(partial_ext, name, getattr(native.EXTENSION, name))
        assert not native.usable(partial_ext), missing
    # every factory takes only what NEEDED lists
    pieces = {n for n in dir(native.EXTENSION) if not n.startswith("_") and n != "prodloop_native"}
    assert set(native.NEEDED) == pieces
