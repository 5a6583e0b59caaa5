"""Rules: validation (errors name the rule and the field) and each kind evaluated over seeded
aggregates built with the real sketch, including the significance test end to end."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

import pytest
from ruamel.yaml import YAML

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules.errors import RulesFileError
from attribution.rules.evaluate import evaluate_rule, module_paths, required_ranges
from attribution.rules.findings import BREACH, NO_DATA, OK, FindingKey
from attribution.rules.inputs import DeclaredModule, EvaluationData
from attribution.rules.parse import parse_rules
from attribution.rules.schema import CostShare, Regression, Threshold
from attribution.rules.values import DAY, HOUR, MINUTE, parse_duration
from attribution.sketch import bucket_of

T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
W = MINUTE  # aggregation window
MS = 1_000_000


def rules(text: str) -> Any:
    return parse_rules(YAML(typ="safe").load(text), "rules.yaml")


def window_row(
    rng: random.Random,
    start: int,
    n: int,
    *,
    service: str = "payments",
    module: str = "payments/retry",
    owners: tuple[str, ...] = ("@acme/payments", "@carol"),
    deploy: str = "d1",
    commit: str = "a" * 40,
    median_ms: float = 20.0,
    sigma: float = 0.5,
    error_rate: float = 0.01,
    scale: float = 1.0,
    tail_share: float = 0.0,
    tail_scale: float = 1.0,
    environment: str = "prod",
    reason: str = "",
) -> AggregateRow:
    bins: dict[int, int] = {}
    ds = []
    errors = 0
    for _ in range(n):
        d = rng.lognormvariate(math.log(median_ms * MS), sigma) * scale
        if tail_share and rng.random() < tail_share:
            d *= tail_scale
        di = max(1, int(d))
        ds.append(di)
        k = bucket_of(di)
        bins[k] = bins.get(k, 0) + 1
        errors += rng.random() < error_rate
    return AggregateRow(
        start,
        service,
        environment,
        "https://github.com/acme/shop",
        module,
        owners,
        commit,
        deploy,
        reason,
        n,
        1000 * n,
        errors,
        1000 * errors,
        sum(ds),
        sum(ds),
        min(ds, default=0),
        max(ds, default=0),
        bins,
    )


def series(rng: random.Random, start: int, minutes: int, per_minute: int, **kw: Any) -> list[AggregateRow]:
    return [window_row(rng, start + i * W, per_minute, **kw) for i in range(minutes)]


def by_key(findings: Iterable[Any]) -> dict[tuple[str, str, str], Any]:
    return {(f.key.service, f.key.environment, f.key.module): f for f in findings}


# -- parsing ------------------------------------------------------------------------------------


def test_parse_a_full_file_with_defaults() -> None:
    rs = rules(
        """
version: 1
defaults:
  scope: {environments: [prod]}
  ticket: {labels: [perf], cooldown: 2h}
rules:
  - name: retry-p95
    kind: threshold
    scope: {services: [payments], modules: ["payments/**"]}
    metric: p95
    op: above
    value: 250ms
    window: 10m
    for: 5m
    min_samples: 50
    severity: high
    ticket: {title: "{module} is slow: {summary}"}
  - name: regressions
    kind: regression_after_deploy
    metrics:
      - {metric: p95, min_relative_change: 50%}
      - {metric: error_rate, min_relative_change: 1.0, min_absolute_change: 1%}
  - name: hogs
    kind: cost_share
    min_ratio: 4
  - name: flaky
    kind: incident_recurrence
    min_incidents: 3
    window: 14d
  - name: dead-code
    kind: unused
    window: 30d
"""
    )
    assert [r.name for r in rs] == ["retry-p95", "regressions", "hogs", "flaky", "dead-code"]
    r0 = rs.rules[0]
    assert isinstance(r0.params, Threshold)
    assert r0.params.value == 250 * MS
    assert r0.scope.environments == ("prod",) and r0.scope.services == ("payments",)
    assert r0.scope.match("payments", "prod", "payments/retry", ())
    assert not r0.scope.match("payments", "prod", "checkout/api", ())
    assert r0.for_ns == 5 * MINUTE and r0.window_ns == 10 * MINUTE and r0.severity == "high"
    assert r0.ticket.labels == ("perf",) and r0.ticket.cooldown_ns == 2 * HOUR
    assert r0.ticket.title == "{module} is slow: {summary}"
    reg = rs.rules[1].params
    assert isinstance(reg, Regression)
    assert [(c.metric, c.min_relative_change, c.min_absolute_change) for c in reg.changes] == [
        ("p95", 0.5, 0.0),
        ("error_rate", 1.0, 0.01),
    ]
    assert isinstance(rs.rules[2].params, CostShare) and rs.rules[2].params.resource == "self_time"
    assert rs.rules[3].window_ns == 14 * DAY


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{name: x, kind: threshold, metric: p95, value: 250}", "rules[0] (x): value: 250: give a unit"),
        ("{name: x, kind: threshold, metric: p42, value: 1s}", "rules[0] (x): metric: is required, one of"),
        (
            "{name: x, kind: threshold, metric: p95, value: 1s, window: soon}",
            "rules[0] (x): window: 'soon' is not a duration",
        ),
        (
            "{name: x, kind: threshold, metric: error_rate, value: 150%}",
            "rules[0] (x): value: an error rate is at most 1",
        ),
        (
            "{name: x, kind: thresold, metric: p95, value: 1s}",
            "rules[0] (x): kind: is required, one of threshold",
        ),
        (
            "{name: x, kind: threshold, metric: p95, value: 1s, severity: urgent}",
            "rules[0] (x): severity: must be one of",
        ),
        (
            "{name: x, kind: threshold, metric: p95, value: 1s, min_ratio: 3}",
            "rules[0] (x): min_ratio: does not apply to kind threshold",
        ),
        (
            "{name: x, kind: threshold, metric: p95, value: 1s, scope: {team: a}}",
            "rules[0] (x): scope.team: unknown field",
        ),
        (
            "{name: x, kind: threshold, metric: p95, value: 1s, ticket: {title: '{modul}'}}",
            "rules[0] (x): ticket.title: unknown placeholder {modul}",
        ),
        (
            "{name: x, kind: cost_share, min_ratio: 3, resource: cost}",
            "rules[0] (x): resource: 'cost' is planned but not available yet",
        ),
        ("{name: x, kind: cost_share}", "rules[0] (x): min_ratio: is required"),
        (
            "{name: x, kind: regression_after_deploy, metrics: [{metric: p95, min_relative_change: lots}]}",
            "rules[0] (x): metrics[0].min_relative_change:",
        ),
        (
            "{name: x, kind: regression_after_deploy, alpha: 0.7}",
            "rules[0] (x): alpha: must be within (0, 0.5)",
        ),
        ("{name: 'bad name', kind: unused}", "rules[0] (bad name): name: 'bad name' must be: letters"),
    ],
)
def test_validation_errors_name_the_rule_and_the_field(rule: str, expected: str) -> None:
    with pytest.raises(RulesFileError) as exc:
        rules(f"rules:\n  - {rule}\n")
    assert f"rules.yaml: {expected}" in str(exc.value)


def test_all_errors_are_reported_at_once_and_duplicates_rejected() -> None:
    with pytest.raises(RulesFileError) as exc:
        rules(
            """
rules:
  - {name: a, kind: unused, window: -}
  - {kind: unused}
  - {name: b, kind: threshold, metric: p95}
  - 7
"""
        )
    messages = [str(e) for e in exc.value.errors]
    assert any("rules[0] (a): window:" in m for m in messages)
    assert any("rules[1]: name: is required" in m for m in messages)
    assert any("rules[2] (b): value: is required" in m for m in messages)
    assert any("rules[3]: must be a mapping" in m for m in messages)


def test_duplicate_names_are_an_error() -> None:
    with pytest.raises(RulesFileError, match=r"rules\[1\] \(a\): name: duplicate rule name"):
        rules("rules:\n  - {name: a, kind: unused}\n  - {name: a, kind: unused}\n")


def test_durations() -> None:
    assert parse_duration("1h30m") == 90 * MINUTE
    assert parse_duration("250ms") == 250 * MS
    assert parse_duration(90) == 90 * 1_000_000_000
    for bad in ("", "5 parsecs", "m5", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- threshold ----------------------------------------------------------------------------------


def test_threshold_fires_only_when_held_for_the_whole_for_duration() -> None:
    rule = rules(
        """
rules:
  - {name: slow, kind: threshold, metric: p95, op: above, value: 60ms, window: 5m, for: 10m, min_samples: 100,
     scope: {modules: ["payments/*"]}}
"""
    ).rules[0]
    rng = random.Random(1)
    # 30 minutes fine, then slow (2.5x) from minute 30 on
    rows = series(rng, T0, 30, 60) + series(rng, T0 + 30 * W, 30, 60, scale=2.5)
    rows += series(rng, T0, 60, 60, module="checkout/api", service="checkout", scale=2.5)  # out of scope
    data = EvaluationData(rows=rows, window_ns=W)
    # at minute 40: slow for 10 windows, but the 5-minute window has been all-slow only since minute 35
    f = by_key(evaluate_rule(rule, data, T0 + 40 * W))[("payments", "prod", "payments/retry")]
    assert f.status == BREACH and not f.firing
    assert ("checkout", "prod", "checkout/api") not in by_key(evaluate_rule(rule, data, T0 + 40 * W))
    # at minute 50 it has held for over 10 minutes
    f = by_key(evaluate_rule(rule, data, T0 + 50 * W))[("payments", "prod", "payments/retry")]
    assert f.firing
    assert T0 + 31 * W <= f.breach_since_unix_nano <= T0 + 35 * W
    assert f.observation.measurements[0].value > 60 * MS
    assert f.observation.owners == ("@acme/payments", "@carol")
    # before the regression: nothing
    assert evaluate_rule(rule, data, T0 + 29 * W) == []


def test_threshold_needs_min_samples_and_reports_recovery_for_tracked_keys() -> None:
    rule = rules(
        """
rules:
  - {name: errors, kind: threshold, metric: error_rate, value: 5%, window: 5m, min_samples: 200,
     ticket: {recover_after: 10m}}
"""
    ).rules[0]
    rng = random.Random(2)
    rows = series(rng, T0, 20, 50, error_rate=0.3)  # 250 spans / 5 min
    rows += series(rng, T0 + 20 * W, 20, 50, error_rate=0.0)
    rows += series(rng, T0, 40, 10, module="payments/fraud", error_rate=0.5)  # too few spans
    data = EvaluationData(rows=rows, window_ns=W)
    found = by_key(evaluate_rule(rule, data, T0 + 15 * W))
    assert found[("payments", "prod", "payments/retry")].firing
    assert ("payments", "prod", "payments/fraud") not in found
    key = FindingKey("errors", "payments", "prod", "payments/retry")
    fraud = FindingKey("errors", "payments", "prod", "payments/fraud")
    # minute 28: clear since minute 25 only -> not yet recovered
    f = by_key(evaluate_rule(rule, data, T0 + 28 * W, track=[key, fraud]))
    assert f[("payments", "prod", "payments/retry")].status == OK
    assert not f[("payments", "prod", "payments/retry")].recovered
    assert f[("payments", "prod", "payments/fraud")].status == NO_DATA
    f = by_key(evaluate_rule(rule, data, T0 + 38 * W, track=[key]))
    assert f[("payments", "prod", "payments/retry")].recovered


# -- regression after deploy --------------------------------------------------------------------

DEPLOY_AT = T0 + 60 * W
D0 = DeployEvent("d0", "payments", "prod", "0" * 40, T0 - HOUR, "https://github.com/acme/shop")
D1 = DeployEvent(
    "d1", "payments", "prod", "a" * 40, DEPLOY_AT, "https://github.com/acme/shop", previous_sha="0" * 40
)

REGRESSION = """
rules:
  - name: deploy-regression
    kind: regression_after_deploy
    window: 30m
    min_samples: {min_samples}
    ticket: {{recover_after: 30m}}
    metrics:
      - {{metric: p95, min_relative_change: 50%}}
      - {{metric: error_rate, min_relative_change: 100%, min_absolute_change: 1%}}
"""


def deploy_rows(rng: random.Random, per_minute: int, minutes: int = 30, **after: Any) -> list[AggregateRow]:
    before = series(rng, DEPLOY_AT - minutes * W, minutes, per_minute, deploy="d0", commit="0" * 40)
    return before + series(rng, DEPLOY_AT, minutes, per_minute, deploy="d1", commit="a" * 40, **after)


def test_regression_names_the_deploy_the_sha_range_and_the_owners() -> None:
    rule = rules(REGRESSION.format(min_samples=100)).rules[0]
    rng = random.Random(5)
    rows = deploy_rows(rng, 20, scale=2.3, error_rate=0.06)
    rows += deploy_rows(rng, 20, module="payments/fraud", owners=("@acme/risk",))  # unchanged
    data = EvaluationData(rows=rows, window_ns=W, deploys=[D0, D1])
    found = by_key(evaluate_rule(rule, data, DEPLOY_AT + 30 * W))
    assert set(found) == {("payments", "prod", "payments/retry")}
    f = found[("payments", "prod", "payments/retry")]
    assert f.firing and f.status == BREACH
    o = f.observation
    assert o.deploy == D1 and o.previous_deploy == D0
    assert o.owners == ("@acme/payments", "@carol")
    p95, err = o.measurements
    assert p95.breached and 1.8 < p95.after / p95.before < 2.9 and p95.p_value < 0.01
    assert err.breached and err.before < 0.03 and err.after > 0.04
    assert "regressed after d1" in o.summary
    # the breach started as soon as both sides had min_samples spans (5 minutes after the deploy)
    assert DEPLOY_AT + 5 * W <= f.breach_since_unix_nano <= DEPLOY_AT + 8 * W


def test_regression_compares_the_same_length_on_both_sides() -> None:
    rule = rules(REGRESSION.format(min_samples=10)).rules[0]
    rng = random.Random(6)
    # before the deploy the module ran 10x as many calls per minute for an hour
    rows = series(rng, DEPLOY_AT - 60 * W, 60, 50, deploy="d0", commit="0" * 40)
    rows += series(rng, DEPLOY_AT, 10, 5, deploy="d1", scale=2.0)
    data = EvaluationData(rows=rows, window_ns=W, deploys=[D0, D1])
    f = by_key(evaluate_rule(rule, data, DEPLOY_AT + 10 * W))[("payments", "prod", "payments/retry")]
    assert f.observation.samples == 50  # min(500 before over 10 minutes, 50 after)
    assert f.observation.range_from_unix_nano == DEPLOY_AT - 30 * W  # the link shows the rule's window


def test_regression_ignores_improvements_and_small_changes() -> None:
    rule = rules(REGRESSION.format(min_samples=100)).rules[0]
    data = EvaluationData(rows=deploy_rows(random.Random(7), 30, scale=0.5), window_ns=W, deploys=[D0, D1])
    assert evaluate_rule(rule, data, DEPLOY_AT + 30 * W) == []
    data = EvaluationData(rows=deploy_rows(random.Random(8), 100, scale=1.2), window_ns=W, deploys=[D0, D1])
    # +20 % is significant with 3000 spans a side, but under the 50 % the rule asks for
    assert evaluate_rule(rule, data, DEPLOY_AT + 30 * W) == []


def test_regression_clears_when_a_fix_is_deployed() -> None:
    rule = rules(REGRESSION.format(min_samples=100)).rules[0]
    rng = random.Random(9)
    fix_at = DEPLOY_AT + 30 * W
    d2 = DeployEvent("d2", "payments", "prod", "b" * 40, fix_at, previous_sha="a" * 40)
    rows = deploy_rows(rng, 20, scale=2.5) + series(rng, fix_at, 60, 20, deploy="d2", commit="b" * 40)
    data = EvaluationData(rows=rows, window_ns=W, deploys=[D0, D1, d2])
    key = FindingKey("deploy-regression", "payments", "prod", "payments/retry")
    f = by_key(evaluate_rule(rule, data, fix_at + 60 * W, track=[key]))[
        ("payments", "prod", "payments/retry")
    ]
    assert f.status == OK and f.recovered and f.observation.deploy == d2
    # right after the fix it is clear, but not for 30 minutes yet
    f = by_key(evaluate_rule(rule, data, fix_at + 20 * W, track=[key]))[
        ("payments", "prod", "payments/retry")
    ]
    assert f.status == OK and not f.recovered


# The rule-level false-positive rate and power, the numbers the issue asks for.
# Sizes: 20 spans a minute for a module, a 15-minute window each side: 300 spans a side.
SEEDS = 200
PER_MINUTE = 20
MINUTES = 15


def _regression_rule(min_relative: str) -> Any:
    return rules(
        f"""
rules:
  - name: r
    kind: regression_after_deploy
    window: {MINUTES}m
    min_samples: 100
    metrics: [{{metric: p95, min_relative_change: {min_relative}}}]
"""
    ).rules[0]


def _fires(rule: Any, seed: int, **after: Any) -> bool:
    rng = random.Random(seed)
    rows = deploy_rows(rng, PER_MINUTE, MINUTES, **after)
    data = EvaluationData(rows=rows, window_ns=W, deploys=[D0, D1])
    return any(f.status == BREACH for f in evaluate_rule(rule, data, DEPLOY_AT + MINUTES * W))


def test_regression_rule_false_positive_rate_on_pure_noise() -> None:
    # significance alone (no relative threshold) and the rule as configured in practice (+50 %)
    for min_relative, limit in (("0%", 0.05), ("50%", 0.05)):
        rule = _regression_rule(min_relative)
        fp = sum(_fires(rule, seed) for seed in range(SEEDS)) / SEEDS
        assert fp <= limit, f"min_relative_change {min_relative}: false-positive rate {fp:.3f}"


@pytest.mark.parametrize(
    "after",
    [
        {"scale": 2.0},  # every call 2x slower: p95 x2
        {"tail_share": 0.1, "tail_scale": 5.0},  # 10 % of calls 5x slower: p95 x2.1, median +5 %
    ],
)
def test_regression_rule_power_for_a_2x_p95_regression(after: dict[str, float]) -> None:
    rule = _regression_rule("50%")
    power = sum(_fires(rule, 50_000 + seed, **after) for seed in range(SEEDS)) / SEEDS
    assert power >= 0.9, f"power {power:.2f} with {PER_MINUTE * MINUTES} spans a side"


def test_required_ranges_cover_both_sides_of_recent_deploys() -> None:
    rule = rules(REGRESSION.format(min_samples=10)).rules[0]
    ranges = required_ranges(rule, DEPLOY_AT + 40 * W, W, [D0, D1])
    assert any(
        r.from_unix_nano <= DEPLOY_AT - 30 * W and r.to_unix_nano >= DEPLOY_AT + 30 * W for r in ranges
    )
    assert all(r.service == "payments" for r in ranges)


# -- cost share ---------------------------------------------------------------------------------


def test_cost_share_flags_a_module_with_a_small_share_of_traffic_and_a_large_share_of_time() -> None:
    rule = rules(
        "rules:\n  - {name: hog, kind: cost_share, resource: span_duration, min_ratio: 3, window: 10m,"
        " min_samples: 50}\n"
    ).rules[0]
    rng = random.Random(11)
    rows = series(rng, T0, 10, 90, module="payments/api", median_ms=5)  # 90 % of calls, fast
    rows += series(rng, T0, 10, 10, module="payments/ledger", median_ms=200)  # 10 % of calls, slow
    rows += series(rng, T0, 10, 5, module="(unattributed)", reason="external", median_ms=5)
    data = EvaluationData(rows=rows, window_ns=W)
    found = by_key(evaluate_rule(rule, data, T0 + 10 * W))
    assert set(found) == {("payments", "prod", "payments/ledger")}
    ratio = found[("payments", "prod", "payments/ledger")].observation.measurements[2]
    resource, traffic = (
        m.value for m in found[("payments", "prod", "payments/ledger")].observation.measurements[:2]
    )
    assert traffic == pytest.approx(100 / 1050, rel=1e-9)
    assert resource > 0.7
    assert ratio.value == pytest.approx(resource / traffic)


# -- incident recurrence ------------------------------------------------------------------------


def test_incident_recurrence_counts_incidents_per_module_within_the_window() -> None:
    rule = rules(
        "rules:\n  - {name: flaky, kind: incident_recurrence, min_incidents: 3, window: 7d, scope: {services: [payments]}}\n"
    ).rules[0]

    def inc(
        i: int, days_ago: float, modules: tuple[str, ...], services: tuple[str, ...] = ("payments",)
    ) -> IncidentEvent:
        return IncidentEvent(f"INC-{i}", services, T0 - int(days_ago * DAY), "sev2", modules=modules)

    incidents = [
        inc(1, 1, ("payments/retry",)),
        inc(2, 3, ("payments/retry", "payments/gateway")),
        inc(3, 6, ("payments/retry",)),
        inc(4, 9, ("payments/gateway",)),  # too old
        inc(5, 2, ("payments/gateway",)),
        inc(6, 2, ("checkout/api",), ("checkout",)),  # out of scope
    ]
    declared = [DeclaredModule("payments/retry", owners=("@acme/payments",))]
    data = EvaluationData(window_ns=W, incidents=incidents, declared_modules=declared)
    found = by_key(evaluate_rule(rule, data, T0))
    assert set(found) == {("", "", "payments/retry")}
    f = found[("", "", "payments/retry")]
    assert f.observation.incidents == ("INC-1", "INC-2", "INC-3")
    assert f.observation.owners == ("@acme/payments",)
    # a day later INC-3 is older than 7 days: 2 incidents, clear
    key = FindingKey("flaky", "", "", "payments/retry")
    later = by_key(evaluate_rule(rule, data, T0 + 2 * DAY, track=[key]))
    assert later[("", "", "payments/retry")].status == OK


# -- unused -------------------------------------------------------------------------------------


def test_unused_flags_declared_modules_without_spans_only_with_enough_history() -> None:
    rule = rules("rules:\n  - {name: dead, kind: unused, window: 30d}\n").rules[0]
    declared = [
        DeclaredModule("payments/retry", frozenset({"payments"}), ("services/payments/retry/**",)),
        DeclaredModule("inventory/legacy", frozenset(), ("services/inventory/legacy/**",)),
        DeclaredModule("checkout/old", frozenset(), ("services/checkout/old/**",), ("@acme/checkout",)),
    ]
    now = T0 + 60 * DAY
    last_seen = {
        ("payments", "prod", "payments/retry"): now - HOUR,
        ("inventory", "prod", "inventory/legacy"): now - 45 * DAY,
    }
    data = EvaluationData(
        window_ns=W, declared_modules=declared, last_seen=last_seen, data_since_unix_nano=T0
    )
    found = by_key(evaluate_rule(rule, data, now, code_paths=module_paths(declared)))
    assert set(found) == {("", "", "inventory/legacy"), ("", "", "checkout/old")}
    assert found[("", "", "checkout/old")].code_paths == ("services/checkout/old/**",)
    assert "never saw a span" in found[("", "", "checkout/old")].observation.summary
    # a store with 10 days of history cannot say a module went 30 days without spans
    young = EvaluationData(
        window_ns=W, declared_modules=declared, last_seen=last_seen, data_since_unix_nano=now - 10 * DAY
    )
    assert evaluate_rule(rule, young, now) == []


def test_findings_are_deterministic_and_fingerprints_stable() -> None:
    k = FindingKey("r", "payments", "prod", "payments/retry")
    assert k.fingerprint() == FindingKey("r", "payments", "prod", "payments/retry").fingerprint()
    assert k.fingerprint() != FindingKey("r", "payments", "staging", "payments/retry").fingerprint()
    assert len(k.fingerprint()) == 16


# -- self time and own errors -------------------------------------------------------------------
# A caller (payments/api) calls a callee (payments/ledger) once per request, and every request
# also hits a cheap payments/health span.  The generator knows each span's self time (the
# caller's duration is its own work plus the callee's) and whether an error is the span's own
# or propagated from the callee, and builds the rows from that knowledge.

Call = tuple[int, int, bool, bool]  # duration ns, self time ns, errored, own error


def module_row(start: int, module: str, calls: list[Call], *, deploy: str, commit: str) -> AggregateRow:
    bins: dict[int, int] = {}
    self_bins: dict[int, int] = {}
    for d, st, _, _ in calls:
        bins[bucket_of(d)] = bins.get(bucket_of(d), 0) + 1
        self_bins[bucket_of(st)] = self_bins.get(bucket_of(st), 0) + 1
    n = len(calls)
    errors = sum(e for _, _, e, _ in calls)
    own = sum(o for _, _, _, o in calls)
    durations = [c[0] for c in calls]
    selfs = [c[1] for c in calls]
    return AggregateRow(
        start,
        "payments",
        "prod",
        "https://github.com/acme/shop",
        module,
        ("@acme/payments",),
        commit,
        deploy,
        "",
        n,
        1000 * n,
        errors,
        1000 * errors,
        sum(durations),
        sum(durations),
        min(durations),
        max(durations),
        bins,
        self_spans=n,
        self_spans_adjusted_milli=1000 * n,
        self_time_sum_ns=sum(selfs),
        self_time_adjusted_sum_ns=sum(selfs),
        self_time_min_ns=min(selfs),
        self_time_max_ns=max(selfs),
        self_bins=self_bins,
        own_errors=own,
        own_errors_adjusted_milli=1000 * own,
    )


def call_tree_rows(
    rng: random.Random,
    start: int,
    minutes: int,
    per_minute: int,
    *,
    ledger_ms: float = 200.0,
    ledger_errors: float = 0.01,
    api_own_errors: float = 0.0,
    health_per_minute: int = 0,
    deploy: str = "d1",
    commit: str = "a" * 40,
) -> list[AggregateRow]:
    rows = []
    for i in range(minutes):
        api: list[Call] = []
        ledger: list[Call] = []
        for _ in range(per_minute):
            ledger_d = max(1, int(rng.lognormvariate(math.log(ledger_ms * MS), 0.3)))
            ledger_err = rng.random() < ledger_errors
            ledger.append((ledger_d, ledger_d, ledger_err, ledger_err))  # a leaf: all its time is its own
            api_self = max(1, int(rng.lognormvariate(math.log(5 * MS), 0.3)))
            api_own = not ledger_err and rng.random() < api_own_errors
            # the ledger's error propagates to the api span, which is then not its own error
            api.append((api_self + ledger_d, api_self, ledger_err or api_own, api_own))
        w = start + i * W
        rows.append(module_row(w, "payments/api", api, deploy=deploy, commit=commit))
        rows.append(module_row(w, "payments/ledger", ledger, deploy=deploy, commit=commit))
        if health_per_minute:
            health = [(MS, MS, False, False)] * health_per_minute
            rows.append(module_row(w, "payments/health", health, deploy=deploy, commit=commit))
    return rows


def test_own_error_rate_is_a_metric_of_threshold_and_regression_rules() -> None:
    rs = rules(
        """
rules:
  - {name: own, kind: threshold, metric: own_error_rate, value: 5%}
  - name: reg
    kind: regression_after_deploy
    metrics: [{metric: own_error_rate, min_relative_change: 100%, min_absolute_change: 1%}]
"""
    )
    assert isinstance(rs.rules[0].params, Threshold) and rs.rules[0].params.value == 0.05
    reg = rs.rules[1].params
    assert isinstance(reg, Regression) and reg.changes[0].min_absolute_change == 0.01
    with pytest.raises(RulesFileError, match=r"value: an error rate is at most 1"):
        rules("rules:\n  - {name: x, kind: threshold, metric: own_error_rate, value: 150%}\n")


def test_own_error_rate_breaches_on_own_errors_not_on_propagated_ones() -> None:
    rule = rules(
        "rules:\n  - {name: own, kind: threshold, metric: own_error_rate, value: 5%, window: 5m,"
        " min_samples: 100}\n  - {name: any, kind: threshold, metric: error_rate, value: 5%, window: 5m,"
        " min_samples: 100}\n"
    )
    own, anyerr = rule.rules
    # the ledger fails 30 % of calls; its errors propagate to every api span that called it
    propagated = call_tree_rows(random.Random(21), T0, 10, 40, ledger_errors=0.3)
    data = EvaluationData(rows=propagated, window_ns=W)
    assert set(by_key(evaluate_rule(anyerr, data, T0 + 10 * W))) == {
        ("payments", "prod", "payments/api"),
        ("payments", "prod", "payments/ledger"),
    }
    found = by_key(evaluate_rule(own, data, T0 + 10 * W))
    assert set(found) == {("payments", "prod", "payments/ledger")}
    assert found[("payments", "prod", "payments/ledger")].observation.measurements[0].value > 0.2
    # now the api fails on its own in 30 % of calls, the ledger almost never
    own_errors = call_tree_rows(random.Random(22), T0, 10, 40, ledger_errors=0.0, api_own_errors=0.3)
    found = by_key(evaluate_rule(own, EvaluationData(rows=own_errors, window_ns=W), T0 + 10 * W))
    assert set(found) == {("payments", "prod", "payments/api")}
    # rows without self data (written before self time existed) are no data, not a 0 % rate
    key = FindingKey("own", "payments", "prod", "payments/retry")
    old = EvaluationData(rows=series(random.Random(23), T0, 10, 40, error_rate=0.3), window_ns=W)
    (f,) = evaluate_rule(own, old, T0 + 10 * W, track=[key])
    assert f.status == NO_DATA


def test_own_error_rate_regression_ignores_errors_propagated_from_a_callee() -> None:
    rule = rules(
        """
rules:
  - name: reg
    kind: regression_after_deploy
    window: 30m
    min_samples: 100
    metrics: [{metric: own_error_rate, min_relative_change: 100%, min_absolute_change: 1%}]
"""
    ).rules[0]
    rng = random.Random(24)
    before = call_tree_rows(
        rng, DEPLOY_AT - 30 * W, 30, 20, ledger_errors=0.004, deploy="d0", commit="0" * 40
    )
    after = call_tree_rows(rng, DEPLOY_AT, 30, 20, ledger_errors=0.05)  # the deploy broke the ledger
    data = EvaluationData(rows=before + after, window_ns=W, deploys=[D0, D1])
    found = by_key(evaluate_rule(rule, data, DEPLOY_AT + 30 * W))
    assert set(found) == {("payments", "prod", "payments/ledger")}
    m = found[("payments", "prod", "payments/ledger")].observation.measurements[0]
    assert m.metric == "own_error_rate" and m.breached and m.after > 0.03 and m.p_value < 0.01


def test_self_p95_regression_blames_the_callee_not_its_caller() -> None:
    text = """
rules:
  - name: reg
    kind: regression_after_deploy
    window: 30m
    min_samples: 100
    metrics: [{{metric: {metric}, min_relative_change: 50%}}]
"""
    rng = random.Random(25)
    before = call_tree_rows(rng, DEPLOY_AT - 30 * W, 30, 20, ledger_ms=40, deploy="d0", commit="0" * 40)
    after = call_tree_rows(rng, DEPLOY_AT, 30, 20, ledger_ms=100)  # the ledger got 2.5x slower
    data = EvaluationData(rows=before + after, window_ns=W, deploys=[D0, D1])
    at = DEPLOY_AT + 30 * W
    # span duration: the api includes the ledger's time, so both regress
    p95 = by_key(evaluate_rule(rules(text.format(metric="p95")).rules[0], data, at))
    assert set(p95) == {("payments", "prod", "payments/api"), ("payments", "prod", "payments/ledger")}
    found = by_key(evaluate_rule(rules(text.format(metric="self_p95")).rules[0], data, at))
    assert set(found) == {("payments", "prod", "payments/ledger")}
    m = found[("payments", "prod", "payments/ledger")].observation.measurements[0]
    assert m.metric == "self_p95" and m.breached and 2.0 < m.after / m.before < 3.2
    # the api's own work did not change (5 ms median)
    key = FindingKey("reg", "payments", "prod", "payments/api")
    api = by_key(evaluate_rule(rules(text.format(metric="self_p95")).rules[0], data, at, track=[key]))[
        ("payments", "prod", "payments/api")
    ]
    ma = api.observation.measurements[0]
    assert api.status == OK and 4 * MS < ma.before < 12 * MS and abs(ma.relative_change) < 0.3


def test_cost_share_defaults_to_self_time_so_a_caller_is_not_charged_for_its_callee() -> None:
    # each minute: 20 requests through api -> ledger (200 ms), 200 cheap health spans
    rows = call_tree_rows(random.Random(26), T0, 10, 20, health_per_minute=200)
    data = EvaluationData(rows=rows, window_ns=W)
    rs = rules(
        """
rules:
  - {name: hog, kind: cost_share, min_ratio: 3, window: 10m, min_samples: 50}
  - {name: hog-wall, kind: cost_share, resource: span_duration, min_ratio: 3, window: 10m, min_samples: 50}
"""
    )
    by_self, by_duration = rs.rules
    assert isinstance(by_self.params, CostShare) and by_self.params.resource == "self_time"
    found = by_key(evaluate_rule(by_self, data, T0 + 10 * W))
    assert set(found) == {("payments", "prod", "payments/ledger")}
    resource, traffic, ratio = found[("payments", "prod", "payments/ledger")].observation.measurements
    assert resource.note == "self_time" and resource.value > 0.85
    assert traffic.value == pytest.approx(20 / 240, rel=1e-9)
    assert ratio.breached and ratio.value == pytest.approx(resource.value / traffic.value)
    assert "self time" in found[("payments", "prod", "payments/ledger")].observation.summary
    # by span duration the api (5 ms of its own, 205 ms with the ledger) looks as heavy as the ledger
    wall = by_key(evaluate_rule(by_duration, data, T0 + 10 * W))
    assert set(wall) == {("payments", "prod", "payments/api"), ("payments", "prod", "payments/ledger")}
    # and by self time the api is clear
    key = FindingKey("hog", "payments", "prod", "payments/api")
    api = by_key(evaluate_rule(by_self, data, T0 + 10 * W, track=[key]))[("payments", "prod", "payments/api")]
    assert api.status == OK and api.observation.measurements[0].value < 0.05


def test_cost_share_over_cpu_time() -> None:
    rule = rules(
        "rules:\n  - {name: cpu, kind: cost_share, resource: cpu_time, min_ratio: 3, window: 10m,"
        " min_samples: 50}\n"
    ).rules[0]
    rows = []
    for module, spans, cpu_ms in (("payments/api", 90, 1), ("payments/crypto", 10, 50)):
        for r in series(random.Random(27), T0, 10, spans, module=module):
            rows.append(r._replace(cpu_time_sum_ns=spans * cpu_ms * MS))
    found = by_key(evaluate_rule(rule, EvaluationData(rows=rows, window_ns=W), T0 + 10 * W))
    assert set(found) == {("payments", "prod", "payments/crypto")}
    resource = found[("payments", "prod", "payments/crypto")].observation.measurements[0]
    assert resource.note == "cpu_time" and resource.value == pytest.approx(500 / 590, rel=1e-9)
