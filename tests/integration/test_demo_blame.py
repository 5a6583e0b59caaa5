"""The demo blames the module that fails, not its callers (issue 12).

After the payments deploy, ``payments/retry`` throws more, and ``payments/api`` fails because
of it: its span error rate rises, its own error rate (errored spans with no errored child) does
not, so the demo's rules open a ticket for ``payments/retry`` and none for ``payments/api``.
The exceptions the shop records count on the spans that record them (``exception_events``) and
against the module whose code threw (``exceptions``).

The demo's own code path runs: its generator, its input files, ``prodloop ingest``'s pipeline
into a fresh chDB database, and its rules.  Ground truth is the shop's own (the module it made
throw, the spans it made fail), never prodloop's output.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attribution.aggregate import AggregateRow
from collector.app import build
from collector.demo.run import _alert_tickets, _write_inputs, demo_settings
from collector.demo.shop import Traffic, generate
from collector.exporters.clickhouse.store import ClickHouseStore

Key = tuple[str, str, str]  # service, module, commit


@dataclass(frozen=True)
class Demo:
    traffic: Traffic
    rows: list[AggregateRow]
    tickets: list[dict[str, Any]]


@pytest.fixture(scope="module")
def demo(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo's run once, in a fresh database of the session's chDB engine."""
    tmp_path = tmp_path_factory.mktemp("demo-blame")
    database = f"t_{uuid.uuid4().hex[:12]}"
    store = ClickHouseStore(f"chdb://{chdb_dir}", database)
    store.apply_migrations()
    try:
        yield _run_demo(store, tmp_path)
    finally:
        store.command("DROP DATABASE IF EXISTS {db:Identifier}", {"db": database})
        store.close()


def _run_demo(store: ClickHouseStore, tmp_path: Path) -> Demo:
    traffic = generate()  # the demo's defaults: seed 7, 10 minutes
    traces, deploys, _ = _write_inputs(tmp_path / "demo-data", traffic.requests, traffic.deploys, [])
    settings = demo_settings(f"chdb://{tmp_path / 'unused'}")  # the store is the fixture's
    loaded = build.load_attribution(settings)
    summary = build.ingest_files(
        settings, store, loaded.repositories, [traces], [deploys], now_unix_nano=traffic.end_unix_nano
    )
    assert summary.spans_read == traffic.total_spans
    tickets = _alert_tickets(
        store, loaded.repositories, traffic.end_unix_nano, tmp_path / "demo-data", lambda _: None
    )
    return Demo(traffic, store.load_rows(), tickets)


def _sums(rows: list[AggregateRow]) -> dict[Key, Counter[str]]:
    out: dict[Key, Counter[str]] = {}
    for r in rows:
        c = out.setdefault((r.service, r.module, r.commit_sha), Counter())
        c["spans"] += r.spans
        c["errors"] += r.errors
        c["self_spans"] += r.self_spans
        c["own_errors"] += r.own_errors
        c["exception_events"] += r.exception_events
        c["exceptions"] += r.exceptions
        for t, n in r.exception_types.items():
            c[f"type:{t}"] += n
    return out


def _truth(traffic: Traffic) -> dict[Key, Counter[str]]:
    out: dict[Key, Counter[str]] = {}
    for (service, _, module, _, sha), t in traffic.truth.items():
        c = out.setdefault((service, module, sha), Counter())
        c["spans"] += t.spans
        c["errors"] += t.errors
        c["self_spans"] += t.spans  # every trace completes at the end of the file
        c["own_errors"] += t.own_errors
        c["exception_events"] += t.exception_events
        c["exceptions"] += t.exceptions
        for name, n in t.exception_types:
            c[f"type:{name}"] += n
    return out


def _shas(traffic: Traffic) -> tuple[str, str]:
    deploy = next(d for d in traffic.deploys if d["deploy_id"] == traffic.regressed[2])
    return deploy["previous_sha"], deploy["commit_sha"]


def test_the_store_holds_the_shops_errors_own_errors_and_exceptions(demo: Demo) -> None:
    got, truth = _sums(demo.rows), _truth(demo.traffic)
    assert {k: +v for k, v in got.items()} == {k: +v for k, v in truth.items()}
    # the shop recorded exceptions, and the store counted them where they were thrown
    assert sum(c["exceptions"] for c in truth.values()) > 200


def test_payments_api_fails_more_after_the_deploy_but_not_of_its_own(demo: Demo) -> None:
    before, after = _shas(demo.traffic)
    got, truth = _sums(demo.rows), _truth(demo.traffic)
    api0, api1 = got["payments", "payments/api", before], got["payments", "payments/api", after]
    # the shop made payments/api fail more, and only through its callees
    t0, t1 = truth["payments", "payments/api", before], truth["payments", "payments/api", after]
    assert t1["errors"] / t1["spans"] > 3 * t0["errors"] / t0["spans"] and t1["errors"] >= 20
    assert t0["own_errors"] == t1["own_errors"] == 0
    # the store sees the same
    assert api1["errors"] / api1["spans"] > 3 * api0["errors"] / api0["spans"]
    assert api0["own_errors"] == api1["own_errors"] == 0
    assert api0["self_spans"] == api0["spans"] and api1["self_spans"] == api1["spans"]
    # ... while payments/retry's own error rate rises
    r0, r1 = got["payments", "payments/retry", before], got["payments", "payments/retry", after]
    assert r1["own_errors"] / r1["self_spans"] > 3 * r0["own_errors"] / r0["self_spans"]


def test_only_the_throwing_module_gets_a_ticket(demo: Demo) -> None:
    service, module, deploy_id = demo.traffic.regressed
    opened = {(e["finding"]["service"], e["finding"]["module"]): e for e in demo.tickets}
    assert ("payments", "payments/api") not in opened
    ticket = opened[service, module]
    finding = ticket["finding"]
    assert finding["rule"] == "regression-after-deploy" and finding["deploy"]["deploy_id"] == deploy_id
    measured = {m["metric"]: m for m in finding["measurements"]}
    assert measured["p95"]["breached"]
    assert measured["own_error_rate"]["after"] > 3 * measured["own_error_rate"]["before"]


def test_exceptions_count_against_the_thrower_and_on_the_failing_spans(demo: Demo) -> None:
    before, after = _shas(demo.traffic)
    got, truth = _sums(demo.rows), _truth(demo.traffic)
    for sha in (before, after):
        api, retry = got["payments", "payments/api", sha], got["payments", "payments/retry", sha]
        t_api, t_retry = truth["payments", "payments/api", sha], truth["payments", "payments/retry", sha]
        # payments/api records exceptions (PaymentError) but throws none of its own
        assert api["exception_events"] == t_api["exception_events"] > 0
        assert api["exceptions"] == t_api["exceptions"] == 0
        # payments/retry threw what it recorded, and what payments/api recorded on top of it
        assert retry["exceptions"] == t_retry["exceptions"] > t_retry["exception_events"] > 0
        assert retry["type:shop.payments.api.errors.PaymentError"] > 0
        assert retry["type:shop.payments.retry.errors.IdempotencyStoreTimeout"] > 0
    assert (
        got["payments", "payments/retry", after]["exceptions"]
        > 3 * got["payments", "payments/retry", before]["exceptions"]
    )
