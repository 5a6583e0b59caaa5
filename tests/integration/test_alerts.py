"""The alert engine on the real engine (chDB): rules over stored aggregates, the ticket
lifecycle on a validated GitHub server and the file sink, crash safety, and the lease."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from ruamel.yaml import YAML

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules.inputs import DeclaredModule
from attribution.rules.parse import parse_rules
from attribution.sketch import bucket_of
from collector.app.rules_file import load_rules
from collector.errors import ConfigError
from collector.exporters.clickhouse.alert_state import ClickHouseAlertState, Lease, TicketBook
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.tickets.file import FileSink
from collector.exporters.tickets.github import GitHubSink
from collector.exporters.tickets.http import RetryPolicy
from collector.pipelines.alerts import AlertEngine
from collector.ports import TicketDraft, TicketRef
from tests.conftest import run_prodloop
from tests.integration.ticket_servers import FakeServer, GitHubApi, serve

NS = 1_000_000_000
MIN = 60 * NS
HOUR = 60 * MIN
T0 = 1_767_225_600 * NS
DEPLOY_AT = T0 + 60 * MIN
TOKEN = "ghp_alerts_test"
REPO = "https://github.com/acme/shop"
OLD_SHA = "0a" * 20
NEW_SHA = "9f" * 20
FIX_SHA = "5c" * 20
D0 = DeployEvent("deploy-payments-2.7.1", "payments", "prod", OLD_SHA, T0 - HOUR, REPO)
D1 = DeployEvent(
    "deploy-payments-2.8.0",
    "payments",
    "prod",
    NEW_SHA,
    DEPLOY_AT,
    REPO,
    OLD_SHA,
    url=f"{REPO}/actions/runs/7",
)

RULES = """
rules:
  - name: payments-regression
    kind: regression_after_deploy
    window: 30m
    for: 5m
    min_samples: 100
    severity: high
    scope: {services: [payments], environments: [prod]}
    metrics:
      - {metric: p95, min_relative_change: 50%}
      - {metric: error_rate, min_relative_change: 100%, min_absolute_change: 1%}
    ticket:
      labels: [perf]
      cooldown: 30m
      recover_after: 20m
"""


def row(
    rng: random.Random, start: int, n: int, deploy: DeployEvent, module: str, scale: float, err: float
) -> AggregateRow:
    bins: dict[int, int] = {}
    ds = []
    errors = 0
    for _ in range(n):
        d = max(1, int(rng.lognormvariate(math.log(20e6), 0.5) * scale))
        ds.append(d)
        bins[bucket_of(d)] = bins.get(bucket_of(d), 0) + 1
        errors += rng.random() < err
    owners = ("@acme/payments", "@carol") if module == "payments/retry" else ("@acme/risk",)
    return AggregateRow(
        start, "payments", "prod", REPO, module, owners, deploy.commit_sha, deploy.deploy_id, "",
        n, 1000 * n, errors, 1000 * errors, sum(ds), sum(ds), min(ds), max(ds), bins,
    )  # fmt: skip


def seed(store: ClickHouseStore, *, fix_at: int | None = None, minutes_after: int = 90) -> list[DeployEvent]:
    rng = random.Random(42)
    rows = []
    deploys = [D0, D1]
    fix = (
        DeployEvent("deploy-payments-2.8.1", "payments", "prod", FIX_SHA, fix_at or 0, REPO, NEW_SHA)
        if fix_at
        else None
    )
    for i in range(-60, minutes_after):
        t = DEPLOY_AT + i * MIN
        live = D0 if t < DEPLOY_AT else (fix if fix is not None and t >= fix.deployed_at_unix_nano else D1)
        bad = live is D1
        rows.append(row(rng, t, 25, live, "payments/retry", 2.3 if bad else 1.0, 0.06 if bad else 0.01))
        rows.append(row(rng, t, 25, live, "payments/fraud", 1.0, 0.01))
    if fix is not None:
        deploys.append(fix)
    store.write_aggregates(rows, MIN, dedup_token=f"seed-{fix_at}")
    store.write_deploys(deploys, T0)
    return deploys


@pytest.fixture
def github() -> Iterator[tuple[FakeServer, GitHubApi]]:
    api = GitHubApi("acme", "shop", TOKEN)
    yield from ((server, api) for server in serve(api))


class Crash(Exception):
    """Stands for the process dying."""


def engine(store: ClickHouseStore, sinks: list[Any], rules: str = RULES, **kw: Any) -> AlertEngine:
    return AlertEngine(
        ClickHouseAlertState(store),
        parse_rules(YAML(typ="safe").load(rules), "rules.yaml"),
        sinks,
        window_ns=MIN,
        declared=[DeclaredModule("payments/retry", frozenset({"payments"}), ("services/payments/retry/**",))],
        dashboard_url="https://grafana.acme.test/d/prodloop?var-module={module}&var-service={service}&from={from_ms}&to={to_ms}",
        **kw,
    )


def gh_sink(server: FakeServer) -> GitHubSink:
    return GitHubSink(
        "acme/shop", SecretStr(TOKEN), api_url=server.url, policy=RetryPolicy(backoff_initial_s=0.01)
    )


def test_regression_ticket_lifecycle_on_github(
    store: ClickHouseStore, github: tuple[FakeServer, GitHubApi]
) -> None:
    server, api = github
    seed(store)
    sink = gh_sink(server)
    try:
        eng = engine(store, [sink])
        # 3 minutes after the deploy: breaching, but not for 5 minutes yet
        early = eng.evaluate_once(DEPLOY_AT + 7 * MIN)
        assert [a.action for a in early.actions] == ["pending"] and not api.issues
        report = eng.evaluate_once(DEPLOY_AT + 20 * MIN)
        assert [(a.action, a.module) for a in report.actions] == [("open", "payments/retry")]
        assert len(api.issues) == 1
        issue = api.issues[1]
        body = issue["body"]
        for expected in (
            "payments/retry",
            "deploy-payments-2.8.0",
            f"`{OLD_SHA[:12]}` → `{NEW_SHA[:12]}`",
            f"{REPO}/compare/{OLD_SHA}...{NEW_SHA}",
            "@acme/payments, @carol",
            "`services/payments/retry/**`",
            "Breaching since 2026-01-01T01:",
            "| p95 |",
            "| error\\_rate |",
            "payments-regression",
            "https://grafana.acme.test/d/prodloop?var-module=payments%2Fretry&var-service=payments&from=",
        ):
            assert expected in body, expected
        assert [x["login"] for x in issue["assignees"]] == ["carol"]
        labels = {x["name"] for x in issue["labels"]}
        assert {"prodloop", "perf"} < labels and any(x.startswith("prodloop:") for x in labels)
        # within the cooldown: nothing; after it: one comment with fresh numbers, no second issue
        assert eng.evaluate_once(DEPLOY_AT + 30 * MIN).actions == []
        again = eng.evaluate_once(DEPLOY_AT + 51 * MIN)
        assert [a.action for a in again.actions] == ["comment"]
        assert len(api.issues) == 1 and len(api.comments[1]) == 1
        assert "Still breaching" in api.comments[1][0]
        # people close it; the breach persists past the cooldown: a new issue linking the old one
        api.close_by_hand(1, closed_at="2026-01-01T01:55:00Z")
        waiting = eng.evaluate_once(DEPLOY_AT + 82 * MIN)  # closed 27 min before
        assert [a.action for a in waiting.actions] == ["wait"] and len(api.issues) == 1
        reopened = eng.evaluate_once(DEPLOY_AT + 86 * MIN)
        assert [a.action for a in reopened.actions] == ["reopen"]
        assert len(api.issues) == 2
        assert "https://github.com/acme/shop/issues/1" in api.issues[2]["body"]
        assert "ticket #2" in api.issues[2]["body"]
        book = TicketBook(store).latest()
        (rec,) = book.values()
        assert (rec.generation, rec.state, rec.ticket_key, rec.previous_url) == (
            2, "open", "2", "https://github.com/acme/shop/issues/1",
        )  # fmt: skip
    finally:
        sink.close()


def test_no_duplicate_after_a_crash_between_created_and_recorded(
    store: ClickHouseStore, github: tuple[FakeServer, GitHubApi]
) -> None:
    server, api = github
    seed(store)
    sink = gh_sink(server)

    class CrashAfterCreate:
        name = "github"

        def __getattr__(self, attr: str) -> Any:
            return getattr(sink, attr)

        def create(self, draft: TicketDraft) -> TicketRef:
            sink.create(draft)
            raise Crash("killed after the issue was created, before it was recorded")

    try:
        with pytest.raises(Crash):
            engine(store, [CrashAfterCreate()]).evaluate_once(DEPLOY_AT + 20 * MIN)
        assert len(api.issues) == 1
        (rec,) = TicketBook(store).latest().values()
        assert rec.state == "intent"
        # the restarted process finds the issue by its fingerprint label
        report = engine(store, [sink]).evaluate_once(DEPLOY_AT + 21 * MIN)
        assert [a.action for a in report.actions] == ["resolve_intent"]
        assert len(api.issues) == 1 and len(server.of("POST", "/repos/acme/shop/issues")) == 1
        (rec,) = TicketBook(store).latest().values()
        assert (rec.state, rec.ticket_key) == ("open", "1")
        # a crash *before* the create leaves an intent that finds nothing: created once, then
        store.command("TRUNCATE TABLE tickets")
        api.issues.clear()

        class CrashBeforeCreate(CrashAfterCreate):
            def create(self, draft: TicketDraft) -> TicketRef:
                raise Crash("killed before the create")

        with pytest.raises(Crash):
            engine(store, [CrashBeforeCreate()]).evaluate_once(DEPLOY_AT + 20 * MIN)
        assert not api.issues
        engine(store, [sink]).evaluate_once(DEPLOY_AT + 21 * MIN)
        assert len(api.issues) == 1
    finally:
        sink.close()


def test_recovery_comment_and_optional_close_with_the_file_sink(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    fix_at = DEPLOY_AT + 40 * MIN
    seed(store, fix_at=fix_at, minutes_after=120)
    path = tmp_path / "tickets.jsonl"
    rules = RULES.replace("recover_after: 20m", "recover_after: 20m\n      close_on_recovery: true")
    eng = engine(store, [FileSink(path)], rules)
    assert [a.action for a in eng.evaluate_once(DEPLOY_AT + 20 * MIN).actions] == ["open"]
    # the fix is live at +40; it is clear from about +45 on; recovered 20 minutes later
    assert eng.evaluate_once(DEPLOY_AT + 55 * MIN).actions == []
    report = eng.evaluate_once(DEPLOY_AT + 70 * MIN)
    assert [a.action for a in report.actions] == ["close"]
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["opened", "comment", "closed"]
    assert events[1]["kind"] == "recovered" and "Recovered" in events[1]["markdown"]
    assert events[0]["assignees"] == ["carol"] and events[0]["owners"] == ["@acme/payments", "@carol"]
    (rec,) = TicketBook(store).latest().values()
    assert (rec.state, rec.closed_by) == ("closed", "prodloop")


def test_dry_run_reports_without_side_effects(store: ClickHouseStore, tmp_path: Path) -> None:
    seed(store)
    path = tmp_path / "t.jsonl"
    report = engine(store, [FileSink(path)]).evaluate_once(DEPLOY_AT + 20 * MIN, dry_run=True)
    assert [(a.action, a.done) for a in report.actions] == [("open", False)]
    assert [f.key.module for f in report.firing] == ["payments/retry"]
    assert not path.exists() and TicketBook(store).latest() == {}
    data = report.to_json()
    assert data["findings"][0]["deploy"]["commit_sha"] == NEW_SHA
    assert data["findings"][0]["deploy"]["previous_sha"] == OLD_SHA


def test_incident_recurrence_and_threshold_rules_over_the_store(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    seed(store)
    store.write_incidents(
        [
            IncidentEvent(
                f"INC-{i}", ("payments",), DEPLOY_AT - i * HOUR, "sev2", modules=("payments/retry",)
            )
            for i in range(3)
        ],
        T0,
    )
    rules = """
rules:
  - {name: flaky, kind: incident_recurrence, min_incidents: 3, window: 7d}
  - {name: slow, kind: threshold, metric: p95, value: 60ms, window: 10m, min_samples: 100, scope: {modules: ["payments/*"]}}
"""
    report = engine(store, [FileSink(tmp_path / "t.jsonl")], rules).evaluate_once(DEPLOY_AT + 30 * MIN)
    fired = sorted((a.rule, a.module) for a in report.actions if a.action == "open")
    assert fired == [("flaky", "payments/retry"), ("slow", "payments/retry")]


def test_only_one_replica_evaluates(store: ClickHouseStore, tmp_path: Path) -> None:
    seed(store)
    a = engine(store, [FileSink(tmp_path / "a.jsonl")], lease=Lease(store, "replica-a", 3 * MIN))
    b = engine(store, [FileSink(tmp_path / "b.jsonl")], lease=Lease(store, "replica-b", 3 * MIN))
    now = DEPLOY_AT + 20 * MIN
    assert a.evaluate_once(now).leader
    assert not b.evaluate_once(now + MIN).leader  # a's lease stands
    assert a.evaluate_once(now + 2 * MIN).leader  # a renews
    assert not b.evaluate_once(now + 4 * MIN).leader
    assert b.evaluate_once(now + 6 * MIN).leader  # a stopped renewing: b takes over
    assert not a.lease.held() and not a.evaluate_once(now + 7 * MIN).leader  # type: ignore[union-attr]
    assert (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()  # opened once, by a


def test_racing_claims_of_one_term_have_one_winner(store: ClickHouseStore) -> None:
    a = Lease(store, "replica-a", MIN)
    b = Lease(store, "replica-b", MIN)
    stale = b.current()  # both read "no lease" ...
    assert a.acquire(T0)  # ... a's claim of term 1 lands first
    b.current = lambda: stale  # type: ignore[method-assign]
    assert not b.acquire(T0)  # b claims term 1 too: dropped by the deduplication token
    assert a.held() and not b.held()
    assert Lease(store, "x", MIN).current() == (1, "replica-a", T0 + MIN)
    a.release(T0 + 10 * NS)
    assert Lease(store, "replica-c", MIN).acquire(T0 + 11 * NS)


def test_rules_file_errors_and_unknown_sinks(tmp_path: Path, store: ClickHouseStore) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: x, kind: threshold, metric: p95, value: fast}\n")
    with pytest.raises(ConfigError, match=r"rules\.yaml:2:52: error: rules\[0\] \(x\): value:"):
        load_rules(bad)
    with pytest.raises(ConfigError, match=r"ticket\.sinks: jira not configured"):
        engine(store, [FileSink(tmp_path / "t.jsonl")], RULES.replace("labels: [perf]", "sinks: [jira]"))


def test_cli_alerts_evaluate_prints_what_would_fire(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    code = (
        "from collector.exporters.clickhouse.store import ClickHouseStore\n"
        "from tests.integration.test_alerts import seed\n"
        f"s = ClickHouseStore('chdb://{store_dir}'); s.apply_migrations(); seed(s); s.close()\n"
    )
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2], timeout=180
    )
    now = str((DEPLOY_AT + 20 * MIN) // NS)
    args = [
        "alerts",
        "evaluate",
        "--store",
        f"chdb://{store_dir}",
        "--rules",
        str(rules),
        "--now",
        now,
        "--settle-seconds",
        "0",
    ]
    tickets = tmp_path / "tickets.jsonl"
    env = {"PRODLOOP_ALERTS__FILE__PATH": str(tickets)}
    res = run_prodloop(*args, "--dry-run", "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(f["rule"], f["module"], f["firing"]) for f in out["findings"]] == [
        ("payments-regression", "payments/retry", True)
    ]
    assert out["actions"][0]["action"] == "open" and out["dry_run"] and not tickets.exists()
    res = run_prodloop(*args, "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert "payments/retry" in res.stdout and "FIRING" in res.stdout and "would open" in res.stdout
    # for real, with the file sink from the environment
    res = run_prodloop(*args, env=env)
    assert res.returncode == 0, res.stderr
    (opened,) = [json.loads(line) for line in tickets.read_text().splitlines()]
    assert opened["event"] == "opened" and "deploy-payments-2.8.0" in opened["markdown"]


def test_demo_files_a_regression_ticket_for_payments_retry(tmp_path: Path) -> None:
    res = run_prodloop("demo", cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    data = tmp_path / ".prodloop" / "demo-data"
    deploy = next(
        d
        for d in (json.loads(line) for line in (data / "deploys.jsonl").read_text().splitlines())
        if d["deploy_id"] == "deploy-payments-2.8.0"
    )
    opened = [json.loads(line) for line in (data / "tickets.jsonl").read_text().splitlines()]
    (ticket,) = [e for e in opened if e["event"] == "opened" and e["finding"]["module"] == "payments/retry"]
    finding = ticket["finding"]
    assert finding["rule"] == "regression-after-deploy" and finding["service"] == "payments"
    assert finding["deploy"]["deploy_id"] == "deploy-payments-2.8.0"
    assert finding["deploy"]["commit_sha"] == deploy["commit_sha"]
    assert finding["deploy"]["previous_sha"] == deploy["previous_sha"]
    assert ticket["owners"] == ["@acme/payments", "@carol"]  # CODEOWNERS: the backoff.py override adds Carol
    md = ticket["markdown"]
    assert f"`{deploy['previous_sha'][:12]}` → `{deploy['commit_sha'][:12]}`" in md
    p95 = next(m for m in finding["measurements"] if m["metric"] == "p95")
    assert p95["breached"] and 1.8 < p95["after"] / p95["before"] < 3.5
    assert "payments/retry" in res.stdout and ticket["title"] in res.stdout
