"""Cost per module (issue 12) on the real engine: a FOCUS billing file imported with
``prodloop costs import``, aggregates written with the store's own ``write_aggregates``, and
``prodloop query cost`` splitting the bill over the modules.

Every expected number is the test's own: the bill's rows summed with Decimal, each day's cost
times the module's share of the self (or CPU) time the test wrote.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from attribution.aggregate import NO_MIN, AggregateRow
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.conftest import REPO, run_prodloop
from tests.integration import test_deploy_artifacts as artifacts

pytestmark = pytest.mark.integration

DAY_S = 86_400
D0 = 1_768_003_200  # 2026-01-10T00:00:00Z
DB = "costs"
W = 60_000_000_000
SINCE, UNTIL = str(D0), str(D0 + 3 * DAY_S)


def _day(i: int) -> str:
    return f"2026-01-{10 + i:02d}T00:00:00Z"


def _row(
    day: int, minute: int, service: str, module: str, spans: int, *, self_ns: int = 0, cpu_ns: int = 0
) -> AggregateRow:
    """``spans`` spans of 1 ms (counts and durations), or, with ``spans = 0``, the later partial
    row carrying the self time of the window's spans (as the trace buffer writes it)."""
    return AggregateRow(
        (D0 + day * DAY_S + 60 * minute) * 1_000_000_000,
        service,
        "prod",
        "shop",
        module,
        (f"@acme/{module.split('/')[-1]}",),
        "ab" * 20,
        "",
        "",
        spans,
        1000 * spans,
        0,
        0,
        spans * 1_000_000,
        spans * 1_000_000,
        1_000_000 if spans else NO_MIN,
        1_000_000 if spans else 0,
        {400: spans} if spans else {},
        self_spans=1 if self_ns else 0,
        self_spans_adjusted_milli=1000 if self_ns else 0,
        self_time_sum_ns=self_ns,
        self_time_adjusted_sum_ns=self_ns,
        self_time_min_ns=self_ns or NO_MIN,
        self_time_max_ns=self_ns,
        self_bins={300: 1} if self_ns else {},
        cpu_time_sum_ns=cpu_ns,
        exception_types={},  # a dict, not the default's mappingproxy: the rows are pickled
    )


# checkout, days 0 and 1: the api has 90% of the traffic and 60% of the self time, search 10%
# and 40%; day 2: no spans at all (idle capacity).  payments, day 0: spans carry CPU time
# (retry 3 : ledger 1, against self time 1 : 1); day 1: no CPU time, self time 1 : 4.
ROWS = [
    *(
        r
        for day in (0, 1)
        for r in (
            _row(day, 5, "checkout", "checkout/api", 900),
            _row(day, 5, "checkout", "checkout/api", 0, self_ns=600_000_000),
            _row(day, 7, "checkout", "checkout/search", 100),
            _row(day, 8, "checkout", "checkout/search", 0, self_ns=400_000_000),
        )
    ),
    _row(0, 1, "payments", "payments/retry", 50, self_ns=100, cpu_ns=3_000),
    _row(0, 2, "payments", "payments/ledger", 50, self_ns=100, cpu_ns=1_000),
    _row(1, 1, "payments", "payments/retry", 40, self_ns=100),
    _row(1, 2, "payments", "payments/ledger", 60, self_ns=400),
]

HEADER = "BillingAccountId,ChargePeriodStart,ChargePeriodEnd,BillingCurrency,BilledCost,EffectiveCost,ServiceName,Tags,x_service,x_environment"
CHECKOUT_TAGS = '"{""service"": ""checkout"", ""team"": ""shop""}"'
# (service, day) -> the EffectiveCost lines of the bill (USD); two lines for some days
BILL = {
    ("checkout", 0): ["12.345678", "7.654322"],  # 20 USD
    ("checkout", 1): ["10.000001"],
    ("checkout", 2): ["5.5"],  # idle
    ("payments", 0): ["8.000004"],
    ("payments", 1): ["3.333335", "1.666665"],  # 5 USD
}


def _bill(bill: dict[tuple[str, int], list[str]], currency: str = "USD") -> str:
    lines = [HEADER]
    for (service, day), costs in bill.items():
        for cost in costs:
            if service == "checkout":  # the service from the tags
                lines.append(
                    f"111,{_day(day)},{_day(day + 1)},{currency},99,{cost},Amazon EC2,{CHECKOUT_TAGS},,prod"
                )
            else:  # from the x_service column
                lines.append(
                    f"111,{_day(day)},{_day(day + 1)},{currency},99,{cost},Amazon RDS,,{service},prod"
                )
    lines.append(f"111,{_day(0)},{_day(1)},{currency},99,42.42,AWS Support,,,")  # shared: skipped
    return "\n".join(lines) + "\n"


def _usd(costs: list[str]) -> int:
    return int(sum(Decimal(c) for c in costs) * 1_000_000)


_WRITER = textwrap.dedent(
    """
    import pickle, sys
    from collector.exporters.clickhouse.store import ClickHouseStore
    dsn, database, rows = pickle.load(sys.stdin.buffer)
    store = ClickHouseStore(dsn, database)
    store.apply_migrations()
    store.write_aggregates(rows, 60_000_000_000, dedup_token="costs-aggregates")
    store.close()
    """
)


@pytest.fixture
def cli_store(tmp_path: Path) -> str:
    """A store of its own (chDB: one directory per process) holding ROWS, written in a subprocess."""
    dsn = f"chdb://{tmp_path / 'store'}"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER],
        input=pickle.dumps((dsn, DB, ROWS)),
        cwd=REPO,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return dsn


def _import(dsn: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_prodloop("costs", "import", str(path), "--store", dsn, "--database", DB, *extra)


def _query(dsn: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = run_prodloop(
        "query", "cost", "--store", dsn, "--database", DB, "--since", SINCE, "--until", UNTIL,
        "--format", "json", *extra, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _by_module(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(m["service"], m["module"]): m["cost_micro_usd"] for m in report["modules"]}


def test_an_imported_bill_is_split_over_the_modules_and_sums_back_exactly(
    cli_store: str, tmp_path: Path
) -> None:
    bill = tmp_path / "bill-2026-01.csv"
    bill.write_text(_bill(BILL))
    res = _import(cli_store, bill)
    assert res.returncode == 0, res.stderr
    total = sum(_usd(c) for c in BILL.values())
    assert "5 entries" in res.stdout and "skipped 1 rows naming no service ($42.42)" in res.stdout

    report = _query(cli_store)
    assert report["total_micro_usd"] == total
    assert sum(m["cost_micro_usd"] for m in report["modules"]) == total  # exactly, in micro-USD
    c0, c1, c2 = (_usd(BILL[("checkout", d)]) for d in range(3))
    p0, p1 = (_usd(BILL[("payments", d)]) for d in range(2))
    assert _by_module(report) == {
        # checkout: each day by self time, 60 : 40 (the self time came in rows of their own)
        ("checkout", "checkout/api"): c0 * 6 // 10 + c1 * 6 // 10 + 1,  # 10.000001 x 0.6: the spare unit
        ("checkout", "checkout/search"): c0 * 4 // 10 + c1 * 4 // 10,
        ("checkout", "(idle)"): c2,  # day 2: cost, no spans
        # payments: day 0 by CPU time 3 : 1, day 1 by self time 1 : 4
        ("payments", "payments/retry"): p0 * 3 // 4 + p1 // 5,
        ("payments", "payments/ledger"): p0 // 4 + p1 * 4 // 5,
    }
    services = {s["service"]: s for s in report["services"]}
    assert services["checkout"]["cost_micro_usd"] == c0 + c1 + c2
    assert services["payments"]["split_by"] == ["cpu_time", "self_time"]

    # the answer: search has 10% of checkout's traffic and (20 + 10.000001) x 0.4 / 35.500001 of its cost
    search = next(m for m in report["modules"] if m["module"] == "checkout/search")
    assert search["traffic_share"] == pytest.approx(0.1)
    assert search["cost_share"] == pytest.approx((c0 + c1) * 0.4 / (c0 + c1 + c2), abs=1e-6)
    assert search["self_time_share"] == pytest.approx(0.4)
    assert report["modules"][0]["module"] == "checkout/search"  # the highest ratio first
    assert report["headline"].startswith(
        "checkout/search (checkout/prod): 10.0% of the traffic, 33.8% of the cost"
    )

    # importing the same file again does not double count
    again = _import(cli_store, bill)
    assert again.returncode == 0, again.stderr
    assert _query(cli_store)["total_micro_usd"] == total

    table = run_prodloop(
        "query", "cost", "--store", cli_store, "--database", DB, "--since", SINCE, "--until", UNTIL
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == report["headline"]
    assert any(line.split()[:3] == ["checkout", "prod", "checkout/search"] for line in lines)
    assert "checkout/prod: $35.50, split by self time" in table.stdout


def test_a_corrected_bill_replaces_and_a_bad_one_imports_nothing(cli_store: str, tmp_path: Path) -> None:
    bill = tmp_path / "bill.csv"
    bill.write_text(_bill(BILL))
    assert _import(cli_store, bill).returncode == 0
    corrected = {**BILL, ("payments", 1): ["6"]}
    bill.write_text(_bill(corrected))  # the same file name, one day amended
    assert _import(cli_store, bill).returncode == 0
    assert _query(cli_store)["total_micro_usd"] == sum(_usd(c) for c in corrected.values())

    eur = tmp_path / "bill-eur.csv"
    eur.write_text(_bill({("checkout", 0): ["1"], ("checkout", 1): ["2"]}, currency="EUR"))
    res = _import(cli_store, eur)
    assert res.returncode == 2
    assert "bill-eur.csv:2: BillingCurrency: currency 'EUR': prodloop accounts in USD only" in res.stderr
    assert "bill-eur.csv:3: BillingCurrency" in res.stderr
    assert "nothing was imported" in res.stderr
    assert _query(cli_store)["total_micro_usd"] == sum(_usd(c) for c in corrected.values())


def test_rates_fill_the_days_the_bill_does_not_cover(cli_store: str, tmp_path: Path) -> None:
    bill = tmp_path / "bill.csv"
    bill.write_text(_bill({("checkout", 0): ["20"]}))
    assert _import(cli_store, bill).returncode == 0
    # 0.05 USD per CPU-hour x 2 CPUs x 3 instances = 0.30 USD an hour, 7.20 USD a day
    env = {
        "PRODLOOP_COST__RATES": json.dumps(
            [
                {
                    "service": "checkout",
                    "environment": "prod",
                    "usd_per_cpu_hour": "0.05",
                    "cpus_per_instance": 2,
                    "instances": 3,
                }
            ]
        )
    }
    report = _query(cli_store, "--service", "checkout", env=env)
    assert report["total_micro_usd"] == 20_000_000 + 2 * 7_200_000  # day 0 billed; days 1, 2 the rate
    assert _by_module(report) == {
        ("checkout", "checkout/api"): 12_000_000 + 4_320_000,
        ("checkout", "checkout/search"): 8_000_000 + 2_880_000,
        ("checkout", "(idle)"): 7_200_000,
    }
    assert _query(cli_store, "--service", "checkout")["total_micro_usd"] == 20_000_000  # no rates


# -- the dashboard: cost-vs-traffic.json on the dashboards' data set --------------------------------

dashboard_store = artifacts.dashboard_store  # the fixture: test_deploy_artifacts' aggregates, and a bill


def test_the_dashboard_splits_the_bill_like_the_store(dashboard_store: ClickHouseStore) -> None:
    """The dashboard's proportional split (floats) agrees with the exact one: each day's bill,
    the part inside the range, over the modules' wall time (the data set has no self time)."""
    d = json.loads((REPO / "grafana/dashboards/cost-vs-traffic.json").read_text())
    (panel,) = [p for p in d["panels"] if p["title"] == "Cost share vs traffic share per module"]
    result = dashboard_store.client.query(
        artifacts.expand(panel["targets"][0]["rawSql"], artifacts.SELECTIONS["all"])
    )
    rows = {(r[0], r[2]): dict(zip(result.column_names, r, strict=True)) for r in result.result_rows}

    inside = (artifacts.RANGE_TO - artifacts.RANGE_FROM) / 86_400  # the range lies inside one charge day
    bill = {"payments": 120.0 * inside, "checkout": 30.0 * inside}  # what the fixture imported, in USD
    data = artifacts._dataset()
    wall: dict[tuple[str, str], int] = {}
    for r in data:
        wall[(r.service, r.module)] = wall.get((r.service, r.module), 0) + r.duration_adjusted_sum_ns
    exact = dashboard_store.module_costs_micro_usd(artifacts.RANGE_FROM * 10**9, artifacts.RANGE_TO * 10**9)
    assert set(rows) == set(wall) == {(s, m) for s, _, m in exact}
    for (service, module), w in wall.items():
        service_wall = sum(v for (s, _), v in wall.items() if s == service)
        want = bill[service] * w / service_wall
        assert rows[(service, module)]["cost_usd"] == pytest.approx(want, abs=0.006)
        assert exact[(service, "prod", module)] / 1e6 == pytest.approx(want, abs=1e-5)
        spans = sum(r.spans_adjusted_milli for r in data if (r.service, r.module) == (service, module))
        all_spans = sum(r.spans_adjusted_milli for r in data if r.service == service)
        assert rows[(service, module)]["traffic_share"] == pytest.approx(spans / all_spans, abs=1e-4)
