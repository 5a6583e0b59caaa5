"""`prodloop query modules` over a chDB store: self time, its share, exceptions and cost per row,
from rows whose numbers the test chose (a configured flat rate for the cost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attribution.aggregate import AggregateRow
from attribution.sketch import bucket_of
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.conftest import run_prodloop

pytestmark = pytest.mark.integration

W = 60_000_000_000
T0 = 1_767_225_600_000_000_000
MINUTES = 10


def _row(
    window: int, service: str, module: str, commit: str, n: int, d_ns: int, self_ns: int, exceptions: int = 0
) -> AggregateRow:
    """``n`` spans of ``d_ns`` each, whose own work was ``self_ns`` each, in one window."""
    return AggregateRow(
        T0 + window * W,
        service,
        "prod",
        "https://github.com/acme/shop",
        module,
        ("@acme/team",),
        commit,
        "",
        "",
        n,
        1000 * n,
        0,
        0,
        n * d_ns,
        n * d_ns,
        d_ns,
        d_ns,
        {bucket_of(d_ns): n},
        self_spans=n,
        self_spans_adjusted_milli=1000 * n,
        self_time_sum_ns=n * self_ns,
        self_time_adjusted_sum_ns=n * self_ns,
        self_time_min_ns=self_ns,
        self_time_max_ns=self_ns,
        self_bins={bucket_of(self_ns): n},
        exceptions=exceptions,
        exception_types={"app.LedgerError": exceptions} if exceptions else {},
    )


@pytest.fixture
def shop_store(tmp_path: Path) -> tuple[str, dict[tuple[str, str], int]]:
    """A store with MINUTES windows of svc (three rows) and other; returns its DSN and the self time
    (ns) per (module, commit) of svc."""
    dsn = f"chdb://{tmp_path}/store"
    rows = []
    truth: dict[tuple[str, str], int] = {}
    for w in range(MINUTES):
        for module, commit, n, d, s, exc in (
            ("api", "a" * 40, 100, 50_000_000, 2_000_000, 0),  # waits for the ledger
            ("api", "b" * 40, 50, 50_000_000, 3_000_000, 0),  # the same module after a deploy
            ("ledger", "a" * 40, 20, 40_000_000, 40_000_000, 2),
        ):
            rows.append(_row(w, "svc", module, commit, n, d, s, exc))
            truth[(module, commit)] = truth.get((module, commit), 0) + n * s
        rows.append(_row(w, "other", "jobs", "c" * 40, 10, 1_000_000, 1_000_000))
    store = ClickHouseStore(dsn)
    try:
        store.apply_migrations()
        store.write_aggregates(rows, W, dedup_token="shop")
    finally:
        store.close()
    return dsn, truth


def test_json_rows_carry_self_time_exceptions_and_the_configured_cost(
    shop_store: tuple[str, dict[tuple[str, str], int]], tmp_path: Path
) -> None:
    dsn, truth = shop_store
    config = tmp_path / "prodloop.yaml"
    # $3.60 an hour for svc: its 10 minutes cost $0.60; `other` has no cost configured
    config.write_text("cost:\n  rates:\n    - {service: svc, environment: prod, usd_per_hour: 3.6}\n")
    res = run_prodloop("query", "modules", "--config", str(config), "--store", dsn, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = {(r["service"], r["module"], r["commit_sha"]): r for r in json.loads(res.stdout)}
    assert len(rows) == 4
    svc = {(m, c): r for (s, m, c), r in rows.items() if s == "svc"}
    total_self = sum(truth.values())
    for key, r in svc.items():
        assert r["self_time_sum_ms"] == pytest.approx(truth[key] / 1e6)
        assert r["self_share"] == pytest.approx(truth[key] / total_self, rel=1e-12)
        for col in ("self_p50_ms", "self_p95_ms", "self_p99_ms"):  # one self time per row
            assert r[col] == pytest.approx(truth[key] / r["spans"] / 1e6, rel=0.01)
        assert {"duration_sum_ms", "own_error_rate", "exception_events", "p95_ms", "owners"} <= set(r)
    # the cost is split by self time, in whole micro-USD summing to the rate x the range
    micro = {k: round(r["cost_usd"] * 1e6) for k, r in svc.items()}
    assert sum(micro.values()) == 600_000
    for key, m in micro.items():
        assert abs(m - 600_000 * truth[key] / total_self) <= 1
    ledger = svc[("ledger", "a" * 40)]
    assert ledger["exceptions"] == 2 * MINUTES
    assert ledger["top_exception_types"] == [{"type": "app.LedgerError", "count": 2 * MINUTES}]
    assert rows[("other", "jobs", "c" * 40)]["cost_usd"] is None
    # without any cost configured every row says so
    res = run_prodloop("query", "modules", "--store", dsn, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert {r["cost_usd"] for r in json.loads(res.stdout)} == {None}


def test_the_table_shows_self_time_share_and_exceptions_within_100_columns(
    shop_store: tuple[str, dict[tuple[str, str], int]],
) -> None:
    dsn, truth = shop_store
    res = run_prodloop("query", "modules", "--store", dsn, env={"COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = lines[0].split()
    assert "TOTAL" not in header
    assert {"SELF", "s", "SELF%", "P95", "EXC"} <= set(header)
    assert "svc (prod)" in lines and "other (prod)" in lines
    (ledger,) = [line for line in lines if line.strip().startswith("ledger")]
    cells = ledger.split()
    share = 100 * truth[("ledger", "a" * 40)] / sum(truth.values())
    assert f"{share:.1f}" in cells
    assert f"{truth[('ledger', 'a' * 40)] / 1e9:.2f}" in cells  # SELF s: 8.00
    assert cells[-2:] == [str(2 * MINUTES), "-"]  # EXC, and COST $ (none configured)
