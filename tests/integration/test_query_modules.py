"""`prodloop query modules` over a chDB store: self time, its share, exceptions and cost per row,
the roll-up per module and its splits, the range line, and read commands on missing stores;
from rows whose numbers the test chose (a configured flat rate for the cost)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent
from attribution.sketch import bucket_of, exact_quantile
from collector.app.receivers import start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.conftest import run_prodloop

pytestmark = pytest.mark.integration

W = 60_000_000_000
T0 = 1_767_225_600_000_000_000
MINUTES = 10


TEAM, PAYMENTS = "@acme/team", "@acme/payments"
# commit a went out as rel-9 two hours before the data, b as rel-10 an hour later
DEPLOYS = {"a" * 40: ("rel-9", T0 - 7200 * 10**9), "b" * 40: ("rel-10", T0 - 3600 * 10**9)}


def _row(
    window: int,
    service: str,
    module: str,
    commit: str,
    n: int,
    d_ns: int,
    self_ns: int,
    exceptions: int = 0,
    owners: tuple[str, ...] = (TEAM,),
) -> AggregateRow:
    """``n`` spans of ``d_ns`` each, whose own work was ``self_ns`` each, in one window."""
    return AggregateRow(
        T0 + window * W,
        service,
        "prod",
        "https://github.com/acme/shop",
        module,
        owners,
        commit,
        DEPLOYS.get(commit, ("",))[0],
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
        for module, commit, n, d, s, exc, owners in (
            ("api", "a" * 40, 100, 50_000_000, 2_000_000, 0, (TEAM,)),  # waits for the ledger
            ("api", "b" * 40, 50, 50_000_000, 3_000_000, 0, (PAYMENTS, TEAM)),  # after a deploy
            ("ledger", "a" * 40, 20, 40_000_000, 40_000_000, 2, (TEAM,)),
        ):
            rows.append(_row(w, "svc", module, commit, n, d, s, exc, owners))
            truth[(module, commit)] = truth.get((module, commit), 0) + n * s
        rows.append(_row(w, "other", "jobs", "c" * 40, 10, 1_000_000, 1_000_000))
    store = ClickHouseStore(dsn)
    try:
        store.apply_migrations()
        store.write_aggregates(rows, W, dedup_token="shop")
        store.write_deploys([DeployEvent(d, "svc", "prod", sha, at) for sha, (d, at) in DEPLOYS.items()], T0)
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
    res = run_prodloop(
        "query", "modules", "--config", str(config), "--store", dsn, "--format", "json", "--by", "commit"
    )
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
    # the range the table covers: the stored windows, as none was asked
    assert lines[0].startswith("modules 2026-01-01 00:00–00:10Z (from store data); rows by self time")
    header = lines[1].split()
    assert "TOTAL" not in header
    assert {"SELF", "s", "SELF%", "P95", "EXC"} <= set(header)
    assert "svc (prod)" in lines and "other (prod)" in lines
    (ledger,) = [line for line in lines if line.strip().startswith("ledger")]
    cells = ledger.split()
    share = 100 * truth[("ledger", "a" * 40)] / sum(truth.values())
    assert f"{share:.1f}" in cells
    assert f"{truth[('ledger', 'a' * 40)] / 1e9:.2f}" in cells  # SELF s: 8.00
    # EXC last: COST $ (none configured) and DEPLOY are the columns dropped to fit
    assert cells[-1] == str(2 * MINUTES) and "COST" not in header and "DEPLOY" not in header


def test_rows_roll_up_per_module_and_split_on_demand(
    shop_store: tuple[str, dict[tuple[str, str], int]],
) -> None:
    dsn, truth = shop_store
    res = run_prodloop("query", "modules", "--store", dsn, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    # one row per module; within svc the most self time first: ledger (8 s) before api (3.5 s)
    assert [(r["service"], r["module"]) for r in rows] == [
        ("other", "jobs"),
        ("svc", "ledger"),
        ("svc", "api"),
    ]
    api = rows[2]
    assert api["spans"] == 150 * MINUTES
    assert api["owners"] == [PAYMENTS, TEAM]  # the union
    # the latest deploy by deploy time (rel-10 sorts before rel-9 as text)
    assert (api["deploy_id"], api["commit_sha"]) == ("rel-10", "b" * 40)
    assert api["self_time_sum_ms"] == pytest.approx(
        (truth[("api", "a" * 40)] + truth[("api", "b" * 40)]) / 1e6
    )
    # percentiles of the merged sketches: 100 spans of 2 ms and 50 of 3 ms a window (the mean
    # of the two rows' p50s would say 2.5 ms)
    selfs = sorted([2_000_000] * 100 * MINUTES + [3_000_000] * 50 * MINUTES)
    for q, col in ((0.5, "self_p50_ms"), (0.95, "self_p95_ms")):
        assert api[col] * 1e6 == pytest.approx(exact_quantile(selfs, q), rel=0.01), col
    assert {r["deploy_id"] for r in rows if r["module"] == "jobs"} == {""}
    # split by every key: the stored rows, each with its own deploy
    res = run_prodloop("query", "modules", "--store", dsn, "--format", "json", "--by", "deploy,owners,commit")
    split = {
        (r["module"], r["commit_sha"][:1], r["deploy_id"], tuple(r["owners"])) for r in json.loads(res.stdout)
    }
    assert split == {
        ("jobs", "c", "", (TEAM,)),
        ("ledger", "a", "rel-9", (TEAM,)),
        ("api", "a", "rel-9", (TEAM,)),
        ("api", "b", "rel-10", (PAYMENTS, TEAM)),
    }
    # --min-spans: only api has 300 spans or more; the table shows the deploy
    res = run_prodloop("query", "modules", "--store", dsn, "--min-spans", "300", env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "DEPLOY" in lines[1].split()
    (body,) = [line.split() for line in lines[2:] if line.startswith("  ")]
    assert body[:3] == ["api", f"{PAYMENTS},{TEAM}", "bbbbbbb"] and body[3] == "rel-10"
    bad = run_prodloop("query", "modules", "--store", dsn, "--by", "commit,team")
    assert bad.returncode == 2 and "cannot split by team" in bad.stderr


def test_an_empty_range_says_what_the_store_holds(
    shop_store: tuple[str, dict[tuple[str, str], int]], tmp_path: Path
) -> None:
    dsn, _ = shop_store
    res = run_prodloop("query", "modules", "--store", dsn, "--from", "-2h")  # the data is from 2026-01-01
    assert res.returncode == 0, res.stderr
    assert (
        res.stdout.startswith("no data in 20") and "; the store holds 2026-01-01 00:00–00:10Z" in res.stdout
    )
    res = run_prodloop(
        "query", "modules", "--store", dsn, "--from", "2025-12-31T22:00:00Z", "--to", "2026-01-01T00:00:00Z"
    )
    assert (
        res.stdout
        == "no data in 2025-12-31 22:00–2026-01-01 00:00Z; the store holds 2026-01-01 00:00–00:10Z\n"
    )
    empty = tmp_path / "empty"
    ClickHouseStore(f"chdb://{empty}").close()
    res = run_prodloop("query", "modules", "--store", f"chdb://{empty}", "--from", "-2h")
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("; the store is empty")


@pytest.mark.parametrize(
    "command",
    [
        ("query", "modules"),
        ("query", "coverage"),
        ("report", "--out", "report.html"),
    ],
)
def test_read_commands_never_create_a_store(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "nowhere" / "store"
    res = run_prodloop(*command, "--store", f"chdb://{missing}", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert f"no store at {missing}" in res.stderr
    assert not (tmp_path / "nowhere").exists()


def test_the_modules_api_rolls_up_and_splits_as_the_cli(
    shop_store: tuple[str, dict[tuple[str, str], int]],
) -> None:
    dsn, _ = shop_store
    cli = run_prodloop(
        "query", "modules", "--store", dsn, "--format", "json", "--by", "commit", "--min-spans", "150"
    )
    assert cli.returncode == 0, cli.stderr
    settings = Settings(receiver={"grpc_port": 0, "http_port": 0, "flush_interval_seconds": 3600})
    store = ClickHouseStore(dsn)
    receivers = start_receivers(settings, store=store, repositories=[])
    try:
        base = f"{receivers.http_url}/api/v1/modules"
        with urllib.request.urlopen(f"{base}?by=commit&min_spans=150") as resp:
            assert json.loads(resp.read()) == json.loads(cli.stdout)
        with urllib.request.urlopen(base) as resp:
            assert [r["module"] for r in json.loads(resp.read())] == ["jobs", "ledger", "api"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}?by=team")
        assert err.value.code == 400 and "cannot split by team" in err.value.read().decode()
    finally:
        receivers.stop(1)
        store.close()
