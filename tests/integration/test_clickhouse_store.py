"""The ClickHouse adapter against the real engine (chDB), a fresh database per test."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from attribution.aggregate import AggregateRow, merge_all, merge_rows
from attribution.model import DeployEvent
from attribution.sketch import bucket_of, exact_quantile, quantile
from collector.errors import ConfigError, StoreLockedError
from collector.exporters.clickhouse.migrations import Migration, load_migrations
from collector.exporters.clickhouse.store import ClickHouseStore

pytestmark = pytest.mark.integration

W = 60_000_000_000
T0 = 1_767_225_600_000_000_000


def _row(rng: random.Random, window: int, module: str, durations: list[int], errors: int = 0) -> AggregateRow:
    bins: dict[int, int] = {}
    for d in durations:
        b = bucket_of(d)
        bins[b] = bins.get(b, 0) + 1
    return AggregateRow(
        T0 + window * W,
        "svc",
        "prod",
        "https://github.com/acme/x",
        module,
        ("@acme/a", "@bob"),
        "ab" * 20,
        "d1",
        "",
        len(durations),
        1000 * len(durations),
        errors,
        1000 * errors,
        sum(durations),
        sum(durations),
        min(durations),
        max(durations),
        bins,
    )


def test_migrations_are_recorded_and_idempotent(store: ClickHouseStore) -> None:
    versions = [m.version for m in load_migrations()]
    assert store.applied_versions() == versions
    assert store.apply_migrations() == []  # nothing pending the second time
    tables = {
        r[0]
        for r in store.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", {"d": store.database}
        )
    }
    assert {"module_aggregates", "deploys", "incidents", "module_stats", "schema_migrations"} <= tables


def test_an_edited_applied_migration_is_refused(store: ClickHouseStore) -> None:
    first = load_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(ConfigError, match="never edit an applied migration"):
        store.apply_migrations([edited])


def test_partial_rows_merge_in_clickhouse_exactly_as_in_python(store: ClickHouseStore) -> None:
    rng = random.Random(3)
    rows = []
    for i in range(30):
        durations = [int(rng.lognormvariate(15, 1.3)) for _ in range(rng.randrange(1, 60))] + [0] * (i % 3)
        rows.append(_row(rng, i % 4, f"m{i % 3}", durations, errors=i % 2))
    for i, r in enumerate(rows):  # many small inserts: many parts to merge
        store.write_aggregates([r], W, dedup_token=f"t{i}")
    store.command("OPTIMIZE TABLE module_aggregates FINAL")
    expected = merge_all(rows)
    got = {r.key(): r for r in store.load_rows()}
    assert set(got) == set(expected)
    for k, r in expected.items():
        assert got[k] == r


def test_quantiles_in_sql_equal_the_sketch_and_are_within_1_percent(store: ClickHouseStore) -> None:
    rng = random.Random(5)
    all_durations: list[int] = []
    rows = []
    for w in range(5):
        durations = [int(rng.lognormvariate(14, 1.5)) for _ in range(400)] + [0, 0, 1, 2]
        all_durations += durations
        rows.append(_row(rng, w, "m", durations))
    store.write_aggregates(rows, W, dedup_token="q")
    (item,) = store.query_modules()
    merged = rows[0]
    for r in rows[1:]:
        merged = merge_rows(merged, r._replace(window_start_unix_nano=merged.window_start_unix_nano))
    s = sorted(all_durations)
    for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        py = quantile(merged.latency_bins, q, minimum=merged.duration_min_ns, maximum=merged.duration_max_ns)
        assert item[col] * 1e6 == pytest.approx(py, rel=1e-12)
        exact = exact_quantile(s, q)
        assert abs(item[col] * 1e6 - exact) <= 0.01 * exact
    # the per-window view finalises with the same formula
    view = store.query("SELECT p95_ns, spans FROM module_stats ORDER BY window_start")
    for (p95, spans), r in zip(view, rows, strict=True):
        assert spans == r.spans
        assert p95 == pytest.approx(
            quantile(r.latency_bins, 0.95, minimum=r.duration_min_ns, maximum=r.duration_max_ns), rel=1e-12
        )
    assert item["spans"] == len(all_durations)
    assert math.isclose(item["duration_sum_ms"], sum(all_durations) / 1e6)


def test_insert_with_the_same_token_is_deduplicated(store: ClickHouseStore) -> None:
    rows = [_row(random.Random(1), 0, "m", [1000, 2000, 3000])]
    store.write_aggregates(rows, W, dedup_token="same")
    store.write_aggregates(rows, W, dedup_token="same")
    store.write_aggregates(rows, W, dedup_token="other")
    (item,) = store.query_modules()
    assert item["spans"] == 6


def test_query_filters_by_time_service_and_attribution(store: ClickHouseStore) -> None:
    rng = random.Random(2)
    a = _row(rng, 0, "m", [1000])
    b = _row(rng, 10, "m", [2000])
    c = _row(rng, 0, "(unattributed)", [3000])._replace(unattributed_reason="external", owners=())
    other = _row(rng, 0, "m", [4000])._replace(service="other")
    store.write_aggregates([a, b, c, other], W, dedup_token="f")
    assert sum(r["spans"] for r in store.query_modules()) == 4
    assert sum(r["spans"] for r in store.query_modules(from_unix_nano=T0 + 5 * W)) == 1
    assert sum(r["spans"] for r in store.query_modules(to_unix_nano=T0 + 5 * W)) == 3
    assert {r["service"] for r in store.query_modules(service="other")} == {"other"}
    assert all(r["module"] != "(unattributed)" for r in store.query_modules(attributed_only=True))
    un = [r for r in store.query_modules() if r["module"] == "(unattributed)"]
    assert un and un[0]["unattributed_reasons"] == ["external"]


def test_deploys_are_deduplicated_by_id_last_received_wins(store: ClickHouseStore) -> None:
    ev = DeployEvent("d1", "svc", "prod", "a" * 40, T0)
    fixed = DeployEvent("d1", "svc", "prod", "b" * 40, T0 + 5)
    store.write_deploys([ev], received_at_unix_nano=T0)
    store.write_deploys([fixed], received_at_unix_nano=T0 + 1000)
    store.write_deploys([DeployEvent("d2", "svc", "prod", "c" * 40, T0 + W)], received_at_unix_nano=T0 + 2000)
    loaded = store.load_deploys()
    assert [e.deploy_id for e in loaded] == ["d1", "d2"]
    assert loaded[0] == fixed


def test_ttl_can_be_set_and_removed(store: ClickHouseStore) -> None:
    store.set_ttl(30)
    ddl = store.query("SHOW CREATE TABLE module_aggregates")[0][0]
    assert "TTL" in ddl and "30" in ddl
    store.set_ttl(None)
    assert "TTL window_start" not in store.query("SHOW CREATE TABLE module_aggregates")[0][0]


def test_a_store_held_by_another_process_fails_with_a_clear_message(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from collector.exporters.clickhouse.store import ClickHouseStore
                s = ClickHouseStore("chdb://{tmp_path}/held")
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        code = textwrap.dedent(
            f"""
            from collector.exporters.clickhouse.store import ClickHouseStore
            from collector.errors import StoreLockedError
            try:
                ClickHouseStore("chdb://{tmp_path}/held")
            except StoreLockedError as e:
                print("LOCKED:", e)
            """
        )
        t = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "LOCKED:" in out.stdout, out.stdout + out.stderr
        assert "prodloop run" in out.stdout and "--url" in out.stdout
        assert time.monotonic() - t < 60
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert StoreLockedError.__mro__[1].__name__ == "StoreError"


# -- self time, own errors, exceptions (migration 0008) -------------------------------------------


def _self_row(base: AggregateRow, self_times: list[int], own_errors: int = 0) -> AggregateRow:
    """The partial row of ``base``'s key written when its traces complete: self data, spans = 0."""
    bins: dict[int, int] = {}
    for s in self_times:
        bins[bucket_of(s)] = bins.get(bucket_of(s), 0) + 1
    return base._replace(
        spans=0,
        spans_adjusted_milli=0,
        errors=0,
        errors_adjusted_milli=0,
        duration_sum_ns=0,
        duration_adjusted_sum_ns=0,
        duration_min_ns=2**64 - 1,
        duration_max_ns=0,
        latency_bins={},
        self_spans=len(self_times),
        self_spans_adjusted_milli=1000 * len(self_times),
        self_time_sum_ns=sum(self_times),
        self_time_adjusted_sum_ns=sum(self_times),
        self_time_min_ns=min(self_times),
        self_time_max_ns=max(self_times),
        self_bins=bins,
        own_errors=own_errors,
        own_errors_adjusted_milli=1000 * own_errors,
        cpu_time_sum_ns=0,
        exception_events=0,
        exceptions=0,
        exception_types={},
    )


def test_self_time_quantiles_shares_and_own_errors_in_the_read_model(store: ClickHouseStore) -> None:
    rng = random.Random(12)
    rows: list[AggregateRow] = []
    m_self: list[int] = []
    unattributed_self = 0
    for w in range(4):
        durations = [int(rng.lognormvariate(15, 1.0)) for _ in range(300)]
        # the module's own work is a random part of each span; the rest waits for children
        selfs = [max(1, int(d * rng.uniform(0.05, 0.6))) for d in durations]
        m_self += selfs
        main = _row(rng, w, "m", durations, errors=20)._replace(cpu_time_sum_ns=7 * len(durations))
        rows += [main._replace(exception_events=3), _self_row(main, selfs, own_errors=5)]
        # a module whose traces have not completed: no self data
        rows.append(_row(rng, w, "n", durations[:50]))
        # unattributed spans count in the service's self time
        un = _row(rng, w, "(unattributed)", durations[:40])._replace(
            unattributed_reason="external", owners=()
        )
        un_self = [d // 2 for d in durations[:40]]
        unattributed_self += sum(un_self)
        rows += [un, _self_row(un, un_self)]
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        store.write_aggregates([r], W, dedup_token=f"s{i}")
    items = {r["module"]: r for r in store.query_modules()}
    json.dumps(list(items.values()), allow_nan=False)  # no NaN reaches JSON
    m, n = items["m"], items["n"]
    assert m["spans"] == 1200 and m["self_spans"] == 1200
    assert m["self_time_sum_ns"] == sum(m_self) == m["self_time_adjusted_sum_ns"]
    assert m["self_time_sum_ms"] == pytest.approx(sum(m_self) / 1e6)
    s = sorted(m_self)
    for q, col in ((0.5, "self_p50_ms"), (0.95, "self_p95_ms"), (0.99, "self_p99_ms")):
        exact = exact_quantile(s, q)
        assert abs(m[col] * 1e6 - exact) <= 0.01 * exact, col
    assert m["self_p95_ms"] < m["p95_ms"]  # self time is part of the duration
    assert m["self_share"] == pytest.approx(sum(m_self) / (sum(m_self) + unattributed_self), rel=1e-12)
    assert m["own_errors"] == 20 and m["own_error_rate"] == pytest.approx(20 / 1200)
    assert m["errors"] == 80 and m["error_rate"] == pytest.approx(80 / 1200)
    assert m["cpu_time_sum_ns"] == 7 * 1200 and m["exception_events"] == 12
    assert n["self_spans"] == 0 and n["self_time_sum_ns"] == 0
    assert n["self_p50_ms"] is None and n["self_p95_ms"] is None and n["self_p99_ms"] is None
    assert n["own_error_rate"] is None and n["self_share"] == 0.0
    # the share is of the whole service: hiding unattributed rows does not change it
    (only_m,) = [r for r in store.query_modules(attributed_only=True) if r["module"] == "m"]
    assert only_m["self_share"] == m["self_share"]
    # load_rows (what rules read) merges the partial rows into one per window and key
    merged = [r for r in store.load_rows() if r.module == "m"]
    assert len(merged) == 4
    assert sum(r.self_time_sum_ns for r in merged) == sum(m_self)
    assert sum(r.self_spans for r in merged) == 1200 and sum(r.spans for r in merged) == 1200
    assert sum(r.own_errors_adjusted_milli for r in merged) == 20_000
    assert sum(r.cpu_time_sum_ns for r in merged) == 8400 and sum(r.exception_events for r in merged) == 12
    assert sum(sum(r.self_bins.values()) for r in merged) == 1200
    assert (
        min(r.self_time_min_ns for r in merged) == s[0] and max(r.self_time_max_ns for r in merged) == s[-1]
    )


_PRE_0008_COLUMNS = [
    "window_start",
    "window_seconds",
    "service",
    "environment",
    "repository",
    "module",
    "owners",
    "commit_sha",
    "deploy_id",
    "unattributed_reason",
    "spans",
    "spans_adjusted_milli",
    "errors",
    "errors_adjusted_milli",
    "duration_sum_ns",
    "duration_adjusted_sum_ns",
    "duration_min_ns",
    "duration_max_ns",
    "latency_bins",
]


def test_rows_written_before_migration_0008_read_self_time_as_unknown(store: ClickHouseStore) -> None:
    old = _row(random.Random(13), 0, "legacy", [1000, 2000, 4000])
    # what a prodloop before self time wrote: none of the 0008 columns
    store.insert(
        "module_aggregates",
        [[T0 // 1_000_000_000, 60, *old[1:5], list(old.owners), *old[6:18]]],
        _PRE_0008_COLUMNS,
    )
    assert store.query("SELECT self_time_sum_ns, self_time_adjusted_sum_ns FROM module_aggregates") == [
        (None, None)
    ]
    (item,) = store.query_modules()
    assert item["spans"] == 3
    for key in ("self_time_sum_ns", "self_time_adjusted_sum_ns", "self_time_sum_ms", "self_share"):
        assert item[key] is None, key
    assert item["self_p95_ms"] is None and item["own_error_rate"] is None
    assert item["exceptions"] == 0 and item["top_exception_types"] == []
    (row,) = store.load_rows()
    assert row.self_spans == 0 and row.self_time_sum_ns == 0 and row.self_time_min_ns == 2**64 - 1
    # the same key written later with self data: the known part is what is summed
    store.write_aggregates([_self_row(old, [300, 700])], W, dedup_token="later")
    (item,) = store.query_modules()
    assert item["self_time_sum_ns"] == 1000 and item["self_spans"] == 2 and item["self_share"] == 1.0


def test_top_exception_types_are_counted_across_rows_and_capped(store: ClickHouseStore) -> None:
    rng = random.Random(14)
    totals = {f"app.errors.E{i:02d}": 3 * i + 1 for i in range(15)}  # distinct counts
    totals["builtins.ValueError"] = totals["app.errors.E07"]  # a tie, broken by name
    base = _row(rng, 0, "m", [1000, 2000])
    rows = []
    for part in range(3):  # every type's count spread over partial rows of one key
        types = {t: c // 3 + (c % 3 if part == 0 else 0) for t, c in totals.items()}
        rows.append(base._replace(exceptions=sum(types.values()), exception_types=types))
    store.write_aggregates(rows, W, dedup_token="e")
    ranked = sorted(totals.items(), key=lambda tc: (-tc[1], tc[0]))
    (item,) = store.query_modules(top_exception_types=3)
    assert item["exceptions"] == sum(totals.values())
    assert item["top_exception_types"] == [{"type": t, "count": c} for t, c in ranked[:3]]
    (item,) = store.query_modules()
    assert len(item["top_exception_types"]) == 10
    assert item["top_exception_types"] == [{"type": t, "count": c} for t, c in ranked[:10]]
    assert {"type": "app.errors.E07", "count": 22} in item["top_exception_types"]
    assert item["top_exception_types"].index({"type": "app.errors.E07", "count": 22}) + 1 == item[
        "top_exception_types"
    ].index({"type": "builtins.ValueError", "count": 22})
    (row,) = store.load_rows()
    assert dict(row.exception_types) == totals
