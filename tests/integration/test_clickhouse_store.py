"""The ClickHouse adapter against the real engine (chDB), a fresh database per test."""

from __future__ import annotations

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
