"""Coverage (issue 12): how much of each service is attributed, and why not, on the real engine.

The test writes aggregate rows and unattributed span names with the store's own write methods,
then reads them back through ``prodloop query coverage`` and ``prodloop check --store``; every
expected number is a sum over the rows the test wrote.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from attribution.aggregate import AggregateRow, NameRow
from attribution.sketch import bucket_of, quantile
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.conftest import REPO, run_prodloop
from tests.integration import test_deploy_artifacts as dashboards

pytestmark = pytest.mark.integration

W = 60_000_000_000
NOW_S = int(time.time()) // 60 * 60
T0 = (NOW_S - 3 * 3600) * 1_000_000_000  # three hours ago: inside the CLI's "up to now"
DB = "coverage"


def _row(
    window: int,
    service: str,
    module: str,
    spans: int,
    *,
    reason: str = "",
    self_ns: int = 0,
    self_spans: int = 0,
) -> AggregateRow:
    """``spans`` spans of 1 ms each; ``self_ns`` of self time over ``self_spans`` spans."""
    return AggregateRow(
        T0 + window * W,
        service,
        "prod",
        "shop",
        module,
        ("@acme/shop",) if not reason else (),
        "ab" * 20,
        "",
        reason,
        spans,
        1000 * spans,
        0,
        0,
        spans * 1_000_000,
        spans * 1_000_000,
        1_000_000 if spans else 2**64 - 1,
        1_000_000 if spans else 0,
        {400: spans} if spans else {},
        self_spans=self_spans,
        self_spans_adjusted_milli=1000 * self_spans,
        self_time_sum_ns=self_ns,
        self_time_adjusted_sum_ns=self_ns,
        self_time_min_ns=1 if self_spans else 2**64 - 1,
        self_time_max_ns=self_ns if self_spans else 0,
        self_bins={300: self_spans} if self_spans else {},
        exception_types={},  # a dict, not the default's mappingproxy: the rows are pickled
    )


# checkout: two modules, spans without a location ("GET /healthz", "GET /metrics") and
# external spans; its self time often lands in a later partial row of the same key (spans = 0)
ROWS = [
    _row(0, "checkout", "checkout/api", 300),
    _row(0, "checkout", "checkout/api", 0, self_ns=240_000_000, self_spans=300),
    _row(1, "checkout", "checkout/api", 200, self_ns=150_000_000, self_spans=200),
    _row(1, "checkout", "checkout/cart", 100, self_ns=90_000_000, self_spans=100),
    _row(0, "checkout", "(unattributed)", 30, reason="no_location", self_ns=20_000_000, self_spans=30),
    _row(1, "checkout", "(unattributed)", 20, reason="no_location", self_ns=10_000_000, self_spans=20),
    _row(1, "checkout", "(unattributed)", 7, reason="external", self_ns=5_000_000, self_spans=7),
    # payments: everything attributed, no self time recorded
    _row(0, "payments", "payments/retry", 80),
    _row(1, "payments", "payments/retry", 40),
]
NAMES = [
    NameRow(T0, "checkout", "prod", "no_location", "GET /healthz", 25),
    NameRow(T0, "checkout", "prod", "no_location", "GET /metrics", 5),
    NameRow(T0 + W, "checkout", "prod", "no_location", "GET /healthz", 16),
    NameRow(T0 + W, "checkout", "prod", "no_location", "GET /metrics", 4),
    NameRow(T0 + W, "checkout", "prod", "external", "redis GET", 7),
]


def _sum(rows: list[AggregateRow], field: str, **where: str) -> int:
    return sum(getattr(r, field) for r in rows if all(getattr(r, k) == v for k, v in where.items()))


_WRITER = textwrap.dedent(
    """
    import pickle, sys
    from collector.exporters.clickhouse.store import ClickHouseStore
    dsn, database, rows, names = pickle.load(sys.stdin.buffer)
    store = ClickHouseStore(dsn, database)
    store.apply_migrations()
    store.write_aggregates(rows, 60_000_000_000, dedup_token="coverage-aggregates")
    store.write_names(names, 60_000_000_000, dedup_token="coverage-names")
    store.close()
    """
)


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store of its own (chDB: one directory per process), written in a subprocess."""
    dsn = f"chdb://{tmp_path_factory.mktemp('coverage') / 'store'}"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER],
        input=pickle.dumps((dsn, DB, ROWS, NAMES)),
        cwd=REPO,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return dsn


def _coverage(dsn: str, *extra: str) -> list[dict[str, object]]:
    res = run_prodloop(
        "query", "coverage", "--store", dsn, "--database", DB, "--since", str(T0 // 10**9), *extra
    )
    assert res.returncode == 0, res.stderr
    out: list[dict[str, object]] = json.loads(res.stdout)
    return out


def test_query_coverage_gives_the_shares_of_the_written_rows(cli_store: str) -> None:
    got = {r["service"]: r for r in _coverage(cli_store, "--format", "json", "--top", "2")}
    assert set(got) == {"checkout", "payments"}

    checkout = got["checkout"]
    spans = _sum(ROWS, "spans", service="checkout")
    attributed = _sum(ROWS, "spans", service="checkout", unattributed_reason="")
    self_all = _sum(ROWS, "self_time_sum_ns", service="checkout")
    self_attributed = _sum(ROWS, "self_time_sum_ns", service="checkout", unattributed_reason="")
    assert (spans, attributed, self_all, self_attributed) == (657, 600, 515_000_000, 480_000_000)
    assert checkout["environment"] == "prod"
    assert checkout["spans"] == spans and checkout["attributed_spans"] == attributed
    assert checkout["unattributed_spans"] == spans - attributed
    assert checkout["attributed_share"] == pytest.approx(attributed / spans)
    assert checkout["self_time_ns"] == self_all
    assert checkout["attributed_self_time_share"] == pytest.approx(self_attributed / self_all)
    assert checkout["unattributed_by_reason"] == {
        "no_location": _sum(ROWS, "spans", service="checkout", unattributed_reason="no_location"),
        "external": _sum(ROWS, "spans", service="checkout", unattributed_reason="external"),
    }
    # the two biggest names, most spans first (--top 2)
    assert checkout["top_unattributed"] == [
        {"span_name": "GET /healthz", "unattributed_reason": "no_location", "spans": 25 + 16},
        {"span_name": "GET /metrics", "unattributed_reason": "no_location", "spans": 5 + 4},
    ]

    payments = got["payments"]
    assert payments["spans"] == payments["attributed_spans"] == 120
    assert payments["attributed_share"] == 1.0
    assert payments["attributed_self_time_share"] is None  # no self time recorded
    assert payments["unattributed_by_reason"] == {} and payments["top_unattributed"] == []


def test_query_coverage_filters_and_leads_with_the_answer(cli_store: str) -> None:
    only = _coverage(cli_store, "--format", "json", "--service", "payments")
    assert [r["service"] for r in only] == ["payments"]
    # a range after every window: nothing
    later = run_prodloop(
        "query", "coverage", "--store", cli_store, "--database", DB, "--since", str(T0 // 10**9 + 120)
    )
    assert later.returncode == 0, later.stderr
    assert later.stdout.startswith("(no spans in the range")

    res = run_prodloop("query", "coverage", "--store", cli_store, "--database", DB, "--since", "-1d")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (
        f"checkout (prod): {100 * 600 / 657:.1f}% of spans, {100 * 480 / 515:.1f}% of self time attributed; "
        "top gap: 41 spans 'GET /healthz' (no_location)"
    )
    assert lines[1] == "payments (prod): 100.0% of spans attributed; no gap"
    assert "redis GET" in res.stdout  # the default --top shows all three of checkout's names


MODULES_YAML = """\
modules:
  - name: checkout/api
    paths: ["checkout/api/**"]
  - name: checkout/cart
    paths: ["checkout/cart/**"]
  - name: checkout/legacy
    paths: ["checkout/legacy/**"]
  - name: payments/retry
    paths: ["payments/retry/**"]
"""


def test_check_store_warns_about_a_module_that_matched_nothing(cli_store: str, tmp_path: Path) -> None:
    modules = tmp_path / "modules.yaml"
    modules.write_text(MODULES_YAML)
    legacy_line = MODULES_YAML.splitlines().index("  - name: checkout/legacy") + 1

    plain = run_prodloop("check", "--modules", str(modules))
    assert plain.returncode == 0, plain.stderr
    assert "matched no span" not in plain.stdout  # without --store, check is as it was

    res = run_prodloop(
        "check", "--modules", str(modules), "--store", cli_store, "--database", DB, "--since", "-1d"
    )
    assert res.returncode == 0, res.stderr  # a warning, not an error
    warnings = [line for line in res.stdout.splitlines() if "matched no span" in line]
    assert len(warnings) == 1, res.stdout
    assert warnings[0].startswith(
        f"{modules}:{legacy_line}: warning: module 'checkout/legacy' matched no span"
    )
    assert "0 errors, 1 warnings" in res.stdout

    # a range with no spans stored: nothing to compare against, no warnings
    later = run_prodloop(
        "check", "--modules", str(modules), "--store", cli_store, "--database", DB, "--since", "now"
    )
    assert later.returncode == 0, later.stderr
    assert "matched no span" not in later.stdout and "no spans stored" in later.stdout


def test_names_retried_with_one_token_count_once(store: ClickHouseStore) -> None:
    assert store.write_names(NAMES, W, dedup_token="n1") == len(NAMES)
    store.write_names(NAMES, W, dedup_token="n1")  # a replayed batch
    store.write_names([NAMES[0]], W, dedup_token="n2")  # a new batch with one more row
    store.write_aggregates(ROWS, W, dedup_token="a1")
    (checkout,) = store.query_coverage(service="checkout", top=10)
    assert {(n["span_name"], n["unattributed_reason"]): n["spans"] for n in checkout["top_unattributed"]} == {
        ("GET /healthz", "no_location"): 25 + 16 + 25,
        ("GET /metrics", "no_location"): 9,
        ("redis GET", "external"): 7,
    }
    # the range selects windows by their start: only the second window
    (second,) = store.query_coverage(from_unix_nano=T0 + W, to_unix_nano=T0 + 2 * W, service="checkout")
    assert second["spans"] == _sum(
        [r for r in ROWS if r.window_start_unix_nano == T0 + W], "spans", service="checkout"
    )
    assert {n["span_name"]: n["spans"] for n in second["top_unattributed"]} == {
        "GET /healthz": 16,
        "GET /metrics": 4,
        "redis GET": 7,
    }


def test_unmatched_modules_over_a_range(store: ClickHouseStore) -> None:
    store.write_aggregates(ROWS, W, dedup_token="a1")
    configured = ["checkout/api", "checkout/cart", "checkout/legacy", "payments/retry"]
    assert store.unmatched_modules(configured) == ["checkout/legacy"]
    # checkout/cart has spans in the second window only
    assert store.unmatched_modules(configured, from_unix_nano=T0, to_unix_nano=T0 + W) == [
        "checkout/cart",
        "checkout/legacy",
    ]
    assert store.unmatched_modules([]) == []
    assert store.has_spans(from_unix_nano=T0, to_unix_nano=T0 + W)
    assert not store.has_spans(from_unix_nano=T0 + 2 * W)


def _self_row(
    window_s: int, module: str, owners: tuple[str, ...], self_times: list[int], **extra: Any
) -> AggregateRow:
    """Spans with the given self times (durations left at zero), then ``extra`` columns."""
    n = len(self_times)
    row = AggregateRow(
        window_s * 1_000_000_000,
        "payments",
        "prod",
        "shop",
        module,
        owners,
        "ab" * 20,
        "",
        "",
        n,
        1000 * n,
        0,
        0,
        0,
        0,
        0,
        0,
        {},
        self_spans=n,
        self_spans_adjusted_milli=1000 * n,
        self_time_sum_ns=sum(self_times),
        self_time_adjusted_sum_ns=sum(self_times),
        self_time_min_ns=min(self_times),
        self_time_max_ns=max(self_times),
        self_bins=_bins(self_times),
    )
    return row._replace(**extra)


def test_the_dashboards_agree_with_the_written_rows(store: ClickHouseStore) -> None:
    """Ownership: self-time p95 (the sketch's quantile over the owner's merged self times), own
    error rate, exceptions; coverage: the self-time share."""
    t0 = dashboards.T0
    retry = [1_000_000 * (1 + i % 37) for i in range(200)]
    processor = [300_000 * (1 + i % 11) for i in range(100)]
    rows = [
        _self_row(
            t0,
            "payments/retry",
            ("@acme/payments", "@carol"),
            retry[:120],
            own_errors=3,
            own_errors_adjusted_milli=3000,
            errors=5,
            errors_adjusted_milli=5000,
            exceptions=4,
            exception_types={"TimeoutError": 3, "KeyError": 1},
        ),
        _self_row(t0 + 60, "payments/retry", ("@acme/payments", "@carol"), retry[120:]),
        _self_row(
            t0,
            "payments/processor",
            ("@acme/payments",),
            processor,
            exceptions=2,
            exception_types={"ValueError": 2},
        ),
    ]
    unattributed = _self_row(t0, "(unattributed)", (), [2_000_000] * 10)._replace(
        unattributed_reason="external"
    )
    store.write_aggregates([*rows, unattributed], W, dedup_token="dash")

    per_owner = {r["owner"]: r for r in dashboards._run(store, "ownership.json", "Per owner", "all")}
    assert set(per_owner) == {"@acme/payments", "@carol"}
    team, carol = per_owner["@acme/payments"], per_owner["@carol"]
    everything = retry + processor
    assert team["self_p95_ms"] == pytest.approx(
        round(
            quantile(_bins(everything), 0.95, minimum=min(everything), maximum=max(everything)) / 1e6,
            3,
        ),
        abs=1e-3,
    )
    assert carol["self_p95_ms"] == pytest.approx(
        round(quantile(_bins(retry), 0.95, minimum=min(retry), maximum=max(retry)) / 1e6, 3), abs=1e-3
    )
    assert (team["modules"], carol["modules"]) == (2, 1)
    assert carol["own_error_rate"] == pytest.approx(3 / 200) and carol["error_rate"] == pytest.approx(5 / 200)
    assert (team["exceptions_thrown"], carol["exceptions_thrown"]) == (6, 4)
    assert team["open_tickets"] == 0

    (cov,) = dashboards._run(store, "coverage.json", "Coverage per service", "all")
    self_attributed = sum(everything)
    assert cov["attributed_self_time_share"] == pytest.approx(
        self_attributed / (self_attributed + 20_000_000)
    )
    assert (cov["spans"], cov["attributed_spans"]) == (310, 300)
    assert cov["unattributed_by_reason"] == "external 10"


def _bins(times: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in times:
        out[bucket_of(t)] = out.get(bucket_of(t), 0) + 1
    return out


def test_names_expire_with_the_aggregates(store: ClickHouseStore) -> None:
    def ttl(table: str) -> bool:
        ddl = str(store.query(f"SHOW CREATE TABLE {table}")[0][0])
        return "TTL window_start + toIntervalDay(" in ddl and "30" in ddl.partition("TTL")[2]

    store.set_ttl(30)
    assert ttl("unattributed_names") and ttl("module_aggregates")
    store.set_ttl(None)
    assert not ttl("unattributed_names") and not ttl("module_aggregates")
