"""Windowed, mergeable aggregates (attribution/aggregate.py).

The workload is made with the real OpenTelemetry SDK (several services, modules, windows,
error statuses, zero-length spans, spans sampled by ``ot=th:`` thresholds and by a
``SampleRate`` attribute), encoded with the SDK's OTLP encoder and decoded.  Its ground truth
is computed here from the generation parameters (what each span was made with), not by the
code under test.  The merge laws are then checked on random partitions of the spans.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.trace import StatusCode

from attribution.aggregate import (
    AggregateRow,
    BatchStats,
    merge_all,
    merge_rows,
    weight_milli,
)
from attribution.attribute import Attributor
from attribution.model import Span
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from attribution.sketch import bucket_of
from tests.support.twin import TwinAggregator, TwinDecoder

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000
SECOND = 1_000_000_000
WINDOW = 60 * SECOND

# one environment per service, and each service's own paths (see test_attribute.py for why)
SERVICES = {"checkout": "prod", "payments": "prod", "search": "staging"}
MODULES = ("api", "db", "retry")
REPO = Repository(
    name="shop",
    modules=ModuleConfig.from_mapping(
        {
            "modules": [
                {"name": f"{svc}/{mod}", "paths": [f"services/{svc}/{mod}/**"]}
                for svc in SERVICES
                for mod in MODULES
            ]
        }
    ),
)
# how a span is sampled -> its keep probability, as the OpenTelemetry specs define them
SAMPLING: dict[str, tuple[dict[str, Any], str, float]] = {
    "unsampled": ({}, "", 1.0),
    "th:8": ({}, "ot=th:8", 0.5),
    "th:c": ({}, "ot=th:c", 0.25),
    "rate-3": ({"SampleRate": 3}, "", 1 / 3),
}
DECODER = TwinDecoder(sample_rate_attribute="SampleRate")


@dataclass
class Truth:
    spans: int = 0
    errors: int = 0
    adjusted_milli: int = 0
    errors_adjusted_milli: int = 0
    duration_sum: int = 0
    duration_adjusted_sum: int = 0
    durations: list[int] = field(default_factory=list)


TruthKey = tuple[int, str, str, str, str]  # window, service, environment, module, unattributed reason


def workload(otel: Otel, seed: int, n: int) -> tuple[list[Span], dict[TruthKey, Truth]]:
    """n spans with the real SDK, and their ground truth from the generation parameters."""
    rng = random.Random(seed)
    truth: dict[TruthKey, Truth] = {}
    batches = {
        svc: otel.batch({"service.name": svc, "deployment.environment.name": env})
        for svc, env in SERVICES.items()
    }
    for _ in range(n):
        svc = rng.choice(list(SERVICES))
        window = rng.randrange(5)
        start = T0 + window * WINDOW + rng.randrange(WINDOW)
        duration = 0 if rng.random() < 0.05 else int(rng.lognormvariate(math.log(20 * MS), 1.0))
        status = rng.choices([StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR], [6, 2, 2])[0]
        extra, trace_state, p = SAMPLING[rng.choices(list(SAMPLING), [6, 2, 1, 1])[0]]
        if rng.random() < 0.1:
            module, reason = "(unattributed)", "external"
            attributes: dict[str, Any] = {"code.file.path": f"/opt/{svc}/vendor/x.py"}
        else:
            mod = rng.choice(MODULES)
            module, reason = f"{svc}/{mod}", ""
            attributes = {"code.file.path": f"services/{svc}/{mod}/handler_{rng.randrange(3)}.py"}
        batches[svc].add(
            "op",
            start,
            start + duration,
            attributes={**attributes, **extra},
            status=status,
            trace_state=trace_state,
        )
        t = truth.setdefault((T0 + window * WINDOW, svc, SERVICES[svc], module, reason), Truth())
        weight = round(1000 / p)  # the documented fixed-point weight
        t.spans += 1
        t.adjusted_milli += weight
        t.duration_sum += duration
        t.duration_adjusted_sum += duration * weight // 1000
        t.durations.append(duration)
        if status is StatusCode.ERROR:
            t.errors += 1
            t.errors_adjusted_milli += weight
    spans: list[Span] = []
    for batch in batches.values():
        spans.extend(otel.decode(batch.spans, decoder=DECODER))
    rng.shuffle(spans)
    return spans, truth


def aggregate(spans: list[Span], rng: random.Random | None = None, **kw: Any) -> list[AggregateRow]:
    """One aggregator (and its own attributor), fed in random chunks."""
    agg = TwinAggregator(Attributor([REPO]), **kw)
    i = 0
    while i < len(spans):
        size = rng.randrange(1, 200) if rng is not None else len(spans)
        agg.add(spans[i : i + size])
        i += size
    return agg.drain()


def as_truth(rows: list[AggregateRow]) -> dict[TruthKey, tuple[object, ...]]:
    out: dict[TruthKey, tuple[object, ...]] = {}
    for r in rows:
        assert (r.repository, r.owners, r.commit_sha, r.deploy_id) == ("shop", (), "", "")
        key = (r.window_start_unix_nano, r.service, r.environment, r.module, r.unattributed_reason)
        assert key not in out, f"two rows for {key} in one drain"
        out[key] = (
            r.spans,
            r.errors,
            r.spans_adjusted_milli,
            r.errors_adjusted_milli,
            r.duration_sum_ns,
            r.duration_adjusted_sum_ns,
            r.duration_min_ns,
            r.duration_max_ns,
            r.latency_bins,
        )
    return out


def expected(truth: dict[TruthKey, Truth]) -> dict[TruthKey, tuple[object, ...]]:
    return {
        k: (
            t.spans,
            t.errors,
            t.adjusted_milli,
            t.errors_adjusted_milli,
            t.duration_sum,
            t.duration_adjusted_sum,
            min(t.durations),
            max(t.durations),
            dict(Counter(bucket_of(d) for d in t.durations)),
        )
        for k, t in truth.items()
    }


# ------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("seed", range(3))
def test_aggregates_match_the_ground_truth(otel: Otel, seed: int) -> None:
    spans, truth = workload(otel, seed, 600)
    rows = aggregate(spans)
    assert as_truth(rows) == expected(truth)
    assert sum(r.spans for r in rows) == 600


def test_results_do_not_depend_on_batching_or_folding(otel: Otel) -> None:
    spans, truth = workload(otel, 11, 500)
    want = expected(truth)
    rng = random.Random(11)
    for fold_every in (1, 7, 100, 10**9):
        assert as_truth(aggregate(spans, rng, fold_every=fold_every)) == want, fold_every


def test_weight_milli() -> None:
    assert weight_milli(1.0) == 1000
    assert weight_milli(0.5) == 2000
    assert weight_milli(0.25) == 4000
    assert weight_milli(1 / 3) == 3000
    assert weight_milli(0.001) == 1_000_000
    # nonsense probabilities count once, never zero or negative
    for p in (0.0, -1.0, 2.0, math.nan):
        assert weight_milli(p) == 1000


# ----------------------------------------------------------------------------- merge laws


@pytest.mark.parametrize("seed", range(4))
def test_aggregate_of_all_equals_merge_of_any_partition(otel: Otel, seed: int) -> None:
    spans, truth = workload(otel, 100 + seed, 500)
    whole = {r.key(): r for r in aggregate(spans)}
    rng = random.Random(seed)
    for _ in range(4):
        k = rng.randrange(1, 6)
        parts: list[list[Span]] = [[] for _ in range(k)]
        for s in spans:
            parts[rng.randrange(k)].append(s)
        partial: list[AggregateRow] = []
        for part in parts:
            # each part on its own "replica": own attributor, own batching and folding
            partial.extend(aggregate(part, rng, fold_every=rng.choice([1, 50, 10**9])))
        rng.shuffle(partial)
        merged = merge_all(partial)
        assert merged == whole
    assert as_truth(list(whole.values())) == expected(truth)


@pytest.mark.parametrize("seed", range(3))
def test_merge_rows_is_associative_and_commutative(otel: Otel, seed: int) -> None:
    spans, _ = workload(otel, 200 + seed, 600)
    rng = random.Random(seed)
    parts: list[list[Span]] = [[], [], []]
    for s in spans:
        parts[rng.randrange(3)].append(s)
    by_part = [{r.key(): r for r in aggregate(p)} for p in parts]
    common = set(by_part[0]) & set(by_part[1]) & set(by_part[2])
    assert len(common) >= 5
    for key in common:
        a, b, c = (bp[key] for bp in by_part)
        assert merge_rows(merge_rows(a, b), c) == merge_rows(a, merge_rows(b, c))
        assert merge_rows(a, b) == merge_rows(b, a)
        assert merge_rows(merge_rows(a, b), c) == merge_rows(merge_rows(c, a), b)


def test_merge_rows_does_not_mutate_and_refuses_different_keys(otel: Otel) -> None:
    spans, _ = workload(otel, 300, 200)
    rows = aggregate(spans)
    a = rows[0]
    bins_before = dict(a.latency_bins)
    merged = merge_rows(a, a)
    assert merged.spans == 2 * a.spans
    assert merged.latency_bins == {k: 2 * v for k, v in bins_before.items()}
    assert a.latency_bins == bins_before
    other = next(r for r in rows if r.key() != a.key())
    with pytest.raises(ValueError, match="different keys"):
        merge_rows(a, other)


# --------------------------------------------------------------------------------- windows


def one_service_spans(otel: Otel, specs: list[tuple[int, int, StatusCode]], **attrs: Any) -> list[Span]:
    batch = otel.batch({"service.name": "checkout", "deployment.environment.name": "prod"})
    for start, end, status in specs:
        batch.add(
            "op",
            start,
            end,
            attributes={"code.file.path": "services/checkout/api/h.py", **attrs},
            status=status,
        )
    return otel.decode(batch.spans, decoder=DECODER)


def test_windows_are_keyed_on_the_start_time(otel: Otel) -> None:
    spans = one_service_spans(
        otel,
        [
            (T0, T0 + MS, StatusCode.UNSET),
            (T0 + WINDOW - 1, T0 + WINDOW + 10 * SECOND, StatusCode.UNSET),  # ends in the next window
            (T0 + WINDOW, T0 + WINDOW + MS, StatusCode.UNSET),
            (T0 - 1, T0 + MS, StatusCode.UNSET),  # starts in the previous window
        ],
    )
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans)
    got = {r.window_start_unix_nano: r.spans for r in agg.drain()}
    assert got == {T0 - WINDOW: 1, T0: 2, T0 + WINDOW: 1}


def test_custom_window_length(otel: Otel) -> None:
    spans = one_service_spans(
        otel, [(T0 + s * SECOND, T0 + s * SECOND + MS, StatusCode.UNSET) for s in range(0, 60, 7)]
    )
    agg = TwinAggregator(Attributor([REPO]), window_ns=10 * SECOND)
    agg.add(spans)
    got = {r.window_start_unix_nano: r.spans for r in agg.drain()}
    assert got == {T0 + w * SECOND: c for w, c in {0: 2, 10: 1, 20: 2, 30: 1, 40: 2, 50: 1}.items()}


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TwinAggregator(Attributor([REPO]), window_ns=0)


def test_errors_are_counted_from_status_error_only(otel: Otel) -> None:
    spans = one_service_spans(
        otel,
        [
            (T0, T0 + MS, StatusCode.ERROR),
            (T0, T0 + MS, StatusCode.OK),
            (T0, T0 + MS, StatusCode.UNSET),
            (T0, T0 + MS, StatusCode.ERROR),
        ],
    )
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans)
    (row,) = agg.drain()
    assert (row.spans, row.errors, row.errors_adjusted_milli) == (4, 2, 2000)


def test_sampled_spans_count_with_their_adjusted_weight(otel: Otel) -> None:
    batch = otel.batch({"service.name": "checkout", "deployment.environment.name": "prod"})
    path = {"code.file.path": "services/checkout/api/h.py"}
    batch.add("half", T0, T0 + 1001, attributes=path, trace_state="ot=th:8", status=StatusCode.ERROR)
    batch.add("quarter", T0, T0 + 10, attributes=path, trace_state="ot=th:c")
    batch.add("one-in-3", T0, T0 + 7, attributes={**path, "SampleRate": 3})
    batch.add("all", T0, T0 + 100, attributes=path)
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(otel.decode(batch.spans, decoder=DECODER))
    (row,) = agg.drain()
    assert row.spans == 4
    assert row.spans_adjusted_milli == 2000 + 4000 + 3000 + 1000
    assert (row.errors, row.errors_adjusted_milli) == (1, 2000)
    assert row.duration_sum_ns == 1001 + 10 + 7 + 100
    assert row.duration_adjusted_sum_ns == 2002 + 40 + 21 + 100
    assert (row.duration_min_ns, row.duration_max_ns) == (7, 1001)


def test_zero_length_spans_go_to_bucket_zero(otel: Otel) -> None:
    spans = one_service_spans(
        otel, [(T0, T0, StatusCode.UNSET), (T0 + 5, T0 + 5, StatusCode.UNSET), (T0, T0 + 3, StatusCode.UNSET)]
    )
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans)
    (row,) = agg.drain()
    assert row.latency_bins[0] == 2
    assert sum(row.latency_bins.values()) == 3
    assert row.duration_min_ns == 0


# -------------------------------------------------------------------------- cardinality cap


def many_modules(otel: Otel, n_modules: int, per_module: int, start: int = T0) -> list[Span]:
    batch = otel.batch({"service.name": "checkout", "deployment.environment.name": "prod"})
    for m in range(n_modules):
        for i in range(per_module):
            batch.add(
                "op",
                start + m * 1000 + i,
                start + m * 1000 + i + MS,
                attributes={"code.file.path": f"mods/m{m}/x.py"},
            )
    return otel.decode(batch.spans)


def test_cardinality_cap_sends_the_excess_to_overflow_and_drops_nothing(otel: Otel) -> None:
    spans = many_modules(otel, n_modules=8, per_module=5)
    agg = TwinAggregator(Attributor([]), max_groups_per_window=3)
    stats = agg.add(spans)
    rows = agg.drain()
    normal = [r for r in rows if r.module != "(overflow)"]
    (overflow,) = [r for r in rows if r.module == "(overflow)"]
    assert len(normal) == 3
    assert {r.module for r in normal} == {"mods/m0", "mods/m1", "mods/m2"}  # the first three seen
    assert overflow.spans == 5 * 5
    assert (overflow.service, overflow.environment, overflow.unattributed_reason) == (
        "checkout",
        "prod",
        "overflow",
    )
    assert sum(r.spans for r in rows) == 40  # nothing dropped
    assert sum(r.duration_sum_ns for r in rows) == 40 * MS
    assert stats.overflow == agg.overflowed_spans == 25
    assert stats.spans == 40


def test_cardinality_cap_is_per_window(otel: Otel) -> None:
    spans = many_modules(otel, 4, 2, T0) + many_modules(otel, 4, 2, T0 + WINDOW)
    agg = TwinAggregator(Attributor([]), max_groups_per_window=2)
    agg.add(spans)
    rows = agg.drain()
    for w in (T0, T0 + WINDOW):
        mods = Counter(r.module for r in rows if r.window_start_unix_nano == w)
        assert mods["(overflow)"] == 1
        assert sum(r.spans for r in rows if r.window_start_unix_nano == w) == 8
        assert len(mods) == 3


def test_groups_admitted_before_the_cap_keep_their_rows(otel: Otel) -> None:
    first = many_modules(otel, 2, 3)
    later = many_modules(otel, 5, 1)
    agg = TwinAggregator(Attributor([]), max_groups_per_window=2, fold_every=10**9)
    agg.add(first)
    agg.add(later)
    got = {r.module: r.spans for r in agg.drain()}
    assert got == {"mods/m0": 4, "mods/m1": 4, "(overflow)": 3}


def test_cardinality_cap_does_not_depend_on_folding(otel: Otel) -> None:
    spans = many_modules(otel, 3, 1)  # modules m0, m1, m2, one span each
    a, b, c = spans
    results = []
    for fold_every in (1, 10**9):
        agg = TwinAggregator(Attributor([]), max_groups_per_window=3, fold_every=fold_every)
        agg.add([a])
        agg.add([b])
        agg.add([a, c])  # three groups in all: within the cap
        results.append({r.module: r.spans for r in agg.drain()})
    assert results[1] == {"mods/m0": 2, "mods/m1": 1, "mods/m2": 1}
    assert results[0] == results[1]


# --------------------------------------------------------------------- collect and drain


def test_collect_drains_only_closed_windows(otel: Otel) -> None:
    spans = one_service_spans(
        otel, [(T0 + w * WINDOW + SECOND, T0 + w * WINDOW + 2 * SECOND, StatusCode.UNSET) for w in range(3)]
    )
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans)
    assert agg.collect(now_unix_nano=T0) == []
    assert agg.collect(now_unix_nano=T0 + WINDOW - 1) == []  # the first window is still open
    first = agg.collect(now_unix_nano=T0 + WINDOW)
    assert [r.window_start_unix_nano for r in first] == [T0]
    assert agg.collect(now_unix_nano=T0 + WINDOW) == []  # drained once
    rest = agg.collect(now_unix_nano=T0 + 10 * WINDOW)
    assert [r.window_start_unix_nano for r in rest] == [T0 + WINDOW, T0 + 2 * WINDOW]
    assert len(agg) == 0


def test_collect_waits_for_allowed_lateness(otel: Otel) -> None:
    spans = one_service_spans(otel, [(T0 + SECOND, T0 + 2 * SECOND, StatusCode.UNSET)])
    agg = TwinAggregator(Attributor([REPO]), allowed_lateness_ns=30 * SECOND)
    agg.add(spans)
    assert agg.collect(now_unix_nano=T0 + WINDOW) == []
    assert agg.collect(now_unix_nano=T0 + WINDOW + 30 * SECOND - 1) == []
    assert len(agg.collect(now_unix_nano=T0 + WINDOW + 30 * SECOND)) == 1


def test_late_spans_make_another_partial_row_that_merges_exactly(otel: Otel) -> None:
    spans = one_service_spans(
        otel,
        [
            (
                T0 + s * SECOND,
                T0 + s * SECOND + (s + 1) * MS,
                StatusCode.ERROR if s % 3 == 0 else StatusCode.UNSET,
            )
            for s in range(10)
        ],
    )
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans[:6])
    first = agg.collect(now_unix_nano=T0 + 2 * WINDOW)
    agg.add(spans[6:])  # late: their window was already written
    late = agg.collect(now_unix_nano=T0 + 2 * WINDOW)
    assert len(first) == len(late) == 1
    combined = merge_rows(first[0], late[0])
    reference = TwinAggregator(Attributor([REPO]))
    reference.add(spans)
    assert [combined] == reference.drain()


def test_drain_order_is_deterministic(otel: Otel) -> None:
    spans, _ = workload(otel, 400, 400)
    outputs = []
    rng = random.Random(400)
    for _ in range(4):
        shuffled = spans[:]
        rng.shuffle(shuffled)
        outputs.append(aggregate(shuffled, rng, fold_every=rng.choice([1, 64, 10**9])))
    assert all(o == outputs[0] for o in outputs)
    keys = [r.key() for r in outputs[0]]
    assert keys == sorted(keys)  # by window, then by group key


def test_drain_empties_the_aggregator(otel: Otel) -> None:
    spans, _ = workload(otel, 401, 100)
    agg = TwinAggregator(Attributor([REPO]))
    agg.add(spans)
    assert len(agg) > 0
    assert sum(r.spans for r in agg.drain()) == 100
    assert len(agg) == 0
    assert agg.drain() == []
    assert agg.collect(now_unix_nano=T0 + 100 * WINDOW) == []


def test_batch_stats(otel: Otel) -> None:
    spans, truth = workload(otel, 500, 300)
    agg = TwinAggregator(Attributor([REPO]))
    stats = BatchStats()
    for i in range(0, len(spans), 64):
        agg.add(spans[i : i + 64], stats)
    external = sum(t.spans for k, t in truth.items() if k[4] == "external")
    assert stats.spans == 300
    assert stats.attributed == 300 - external
    assert stats.unattributed_by_reason == ({"external": external} if external else {})
    assert stats.overflow == 0


def test_rows_keep_each_services_spans_at_a_shared_path(otel: Otel) -> None:
    spans: list[Span] = []
    for svc, n in (("checkout", 3), ("payments", 5)):
        batch = otel.batch({"service.name": svc, "deployment.environment.name": "prod"})
        for i in range(n):
            batch.add("op", T0 + i, T0 + i + MS, attributes={"code.file.path": "lib/db/pool.py"})
        spans.extend(otel.decode(batch.spans))
    agg = TwinAggregator(Attributor([]))
    agg.add(spans)
    assert {r.service: r.spans for r in agg.drain()} == {"checkout": 3, "payments": 5}


# -- CPU time, exceptions and unattributed names -------------------------------------------------

from attribution.model import ExceptionInfo, LogException, Resource  # noqa: E402

_RES = Resource("checkout", "prod")
_ROOTED = Repository(
    name="shop",
    modules=ModuleConfig.from_mapping(
        {
            "source_roots": ["/srv"],
            "modules": [{"name": f"checkout/{m}", "paths": [f"services/checkout/{m}/**"]} for m in MODULES],
        }
    ),
)


def _plain(name: str, path: str, **kw: Any) -> Span:
    attrs = {"code.file.path": path} if path else {}
    attrs.update(kw.pop("attrs", {}))
    return Span(_RES, b"\x01" * 16, b"\x02" * 8, name, T0, T0 + 5 * MS, attributes=attrs, **kw)


def _python_trace(file: str, line: int) -> str:
    return f'Traceback (most recent call last):\n  File "{file}", line {line}, in f\n    raise E()\nValueError: x\n'


def test_cpu_time_is_summed_in_the_configured_unit() -> None:
    agg = TwinAggregator(
        Attributor([REPO]), cpu_time_attribute="process.cpu.time", cpu_time_unit_ns=1_000_000
    )
    path = "services/checkout/api/x.py"
    agg.add(
        [_plain("a", path, attrs={"process.cpu.time": 2.5}), _plain("b", path, attrs={"process.cpu.time": 4})]
    )
    agg.add([_plain("c", path), _plain("d", path, attrs={"process.cpu.time": "bad"})])
    (row,) = agg.drain()
    assert (row.spans, row.cpu_time_sum_ns) == (4, 6_500_000)


def test_exceptions_count_on_the_span_and_on_the_module_that_threw() -> None:
    agg = TwinAggregator(Attributor([_ROOTED]), max_exception_types=2)
    thrower = "/srv/services/checkout/db/q.py"
    excs = tuple(ExceptionInfo(t, "m", _python_trace(thrower, 3)) for t in ("A", "B", "C", "A"))
    agg.add([_plain("a", "services/checkout/api/x.py", exceptions=excs)])
    rows = {r.module: r for r in agg.drain()}
    assert rows["checkout/api"].exception_events == 4 and rows["checkout/api"].exceptions == 0
    db = rows["checkout/db"]
    assert (db.spans, db.exceptions) == (0, 4)
    assert dict(db.exception_types) == {"A": 2, "B": 1, "(other)": 1}  # capped at two types


def test_an_exception_without_a_usable_stack_trace_is_counted_by_reason() -> None:
    agg = TwinAggregator(Attributor([REPO]))
    st = agg.add([_plain("a", "services/checkout/api/x.py", exceptions=(ExceptionInfo("E", "", ""),))])
    assert st.exceptions_unattributed == {"no_stacktrace": 1}
    assert all(r.exceptions == 0 for r in agg.drain())


def test_log_record_exceptions_count_on_the_throwing_module() -> None:
    agg = TwinAggregator(Attributor([_ROOTED]))
    exc = ExceptionInfo("Boom", "", _python_trace("/srv/services/checkout/retry/r.py", 9))
    st = agg.add_log_exceptions(
        [LogException(_RES, T0 + SECOND, exc), LogException(_RES, T0 + 2 * SECOND, exc)]
    )
    (row,) = agg.drain()
    assert st.log_exceptions == 2
    assert (row.module, row.exceptions, dict(row.exception_types), row.spans) == (
        "checkout/retry",
        2,
        {"Boom": 2},
        0,
    )


def test_unattributed_span_names_are_counted_and_capped() -> None:
    agg = TwinAggregator(Attributor([REPO]), max_names_per_window=2)
    agg.add([_plain(n, "") for n in ("GET /a", "GET /b", "GET /a", "GET /c", "GET /d")])
    agg.add([_plain("x", "services/checkout/api/x.py")])
    names = {(r.span_name, r.unattributed_reason): r.spans for r in agg.drain_names()}
    assert names == {
        ("GET /a", "no_location"): 2,
        ("GET /b", "no_location"): 1,
        ("(other)", "no_location"): 2,
    }
