"""Deploy impact (attribution/analysis.py) on aggregates of real SDK spans.

The workload is built so that the answer is known by construction: after deploy ``d2`` the
module ``checkout/api`` runs exactly twice as slow, ``checkout/pay`` starts failing 5% of its
calls, ``checkout/db`` does not change, and ``checkout/rare`` has too few spans to judge.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
from opentelemetry.trace import StatusCode

from attribution.aggregate import AggregateRow
from attribution.analysis import ModuleImpact, deploy_impact
from attribution.attribute import Attributor
from attribution.deploys import DeployTimeline
from attribution.model import DeployEvent, Span
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from tests.support.twin import TwinAggregator

if TYPE_CHECKING:
    from conftest import Otel

T0 = 1_700_000_040 * 1_000_000_000
MS = 1_000_000
SECOND = 1_000_000_000
WINDOW = 60 * SECOND
SPAN = 5 * WINDOW  # compare five minutes before with five minutes after

D1 = DeployEvent("d1", "checkout", "prod", "1" * 40, T0)
D2 = DeployEvent("d2", "checkout", "prod", "2" * 40, T0 + 10 * WINDOW)
REPO = Repository(
    name="shop",
    modules=ModuleConfig.from_mapping(
        {
            "modules": [
                {"name": f"checkout/{m}", "paths": [f"checkout/{m}/**"]} for m in ("api", "db", "pay", "rare")
            ]
        }
    ),
)


def durations(n: int, base_ms: float) -> list[int]:
    """n deterministic latencies spread over [base, 3 * base)."""
    return [int(base_ms * MS * (1 + 2 * i / n)) for i in range(n)]


def spans_between(
    otel: Otel,
    module: str,
    start: int,
    end: int,
    lat: list[int],
    errors_every: int = 0,
    service: str = "checkout",
) -> list[Span]:
    batch = otel.batch({"service.name": service, "deployment.environment.name": "prod"})
    step = (end - start) // len(lat)
    for i, d in enumerate(lat):
        t = start + i * step
        status = StatusCode.ERROR if errors_every and i % errors_every == 0 else StatusCode.UNSET
        batch.add("op", t, t + d, attributes={"code.file.path": f"checkout/{module}/h.py"}, status=status)
    return otel.decode(batch.spans)


def rows_of(spans: list[Span], timeline: DeployTimeline) -> list[AggregateRow]:
    agg = TwinAggregator(Attributor([REPO], timeline), window_ns=WINDOW)
    agg.add(spans)
    return agg.drain()


@pytest.fixture
def scenario(otel: Otel) -> list[AggregateRow]:
    t = D2.deployed_at_unix_nano
    before, after = (t - SPAN, t), (t, t + SPAN)
    spans: list[Span] = []
    # api: exactly twice as slow after the deploy
    spans += spans_between(otel, "api", *before, durations(200, 20))
    spans += spans_between(otel, "api", *after, durations(200, 40))
    # db: unchanged
    spans += spans_between(otel, "db", *before, durations(150, 5))
    spans += spans_between(otel, "db", *after, durations(150, 5))
    # pay: same latency, 0% -> 5% errors
    spans += spans_between(otel, "pay", *before, durations(100, 10))
    spans += spans_between(otel, "pay", *after, durations(100, 10), errors_every=20)
    # rare: too few spans on each side
    spans += spans_between(otel, "rare", *before, durations(5, 10))
    spans += spans_between(otel, "rare", *after, durations(5, 100))
    # outside the compared windows: must not count (same-length windows on both sides)
    spans += spans_between(otel, "db", T0, t - SPAN, durations(50, 500))
    spans += spans_between(otel, "db", t + SPAN, t + 2 * SPAN, durations(50, 500))
    # another service at the same moments: must not count
    spans += spans_between(otel, "db", *after, durations(50, 500), service="search")
    return rows_of(spans, DeployTimeline([D1, D2]))


def by_module(impacts: list[ModuleImpact]) -> dict[str, ModuleImpact]:
    return {m.module: m for m in impacts}


def test_finds_the_module_whose_latency_doubled(scenario: list[AggregateRow]) -> None:
    impacts = deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW)
    assert impacts[0].module == "checkout/api"
    api = impacts[0]
    # both p95s are within 1% of the exact ones, whose ratio is exactly 2
    assert 2 * 0.99 / 1.01 <= api.p95_ratio <= 2 * 1.01 / 0.99
    exact_before = sorted(durations(200, 20))[math.ceil(0.95 * 200) - 1]
    assert abs(api.p95_before_ms * MS - exact_before) <= 0.01 * exact_before
    assert abs(api.p95_after_ms * MS - 2 * exact_before) <= 0.02 * exact_before
    assert api.score == pytest.approx(abs(math.log(api.p95_ratio)))


def test_unchanged_and_error_modules(scenario: list[AggregateRow]) -> None:
    impacts = by_module(deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW))
    db = impacts["checkout/db"]
    assert 0.99 / 1.01 <= db.p95_ratio <= 1.01 / 0.99
    assert db.error_rate_delta == 0.0
    pay = impacts["checkout/pay"]
    assert pay.before.error_rate == 0.0
    assert pay.after.error_rate == pytest.approx(5 / 100)
    assert pay.error_rate_delta == pytest.approx(0.05)
    # most changed first: api (|log 2| = 0.69) > pay (10 x 0.05 = 0.5) > db (~0)
    order = [m.module for m in deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW)]
    assert order == ["checkout/api", "checkout/pay", "checkout/db"]


def test_same_length_windows_on_both_sides(scenario: list[AggregateRow]) -> None:
    impacts = by_module(deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW))
    # only the spans made inside [t - SPAN, t) and [t, t + SPAN), and only checkout's
    assert (impacts["checkout/api"].before.spans, impacts["checkout/api"].after.spans) == (200, 200)
    assert (impacts["checkout/db"].before.spans, impacts["checkout/db"].after.spans) == (150, 150)
    assert impacts["checkout/db"].after.duration_max_ns < 500 * MS
    # a shorter span looks at fewer windows, on both sides alike
    short = by_module(deploy_impact(scenario, D2, D1, WINDOW, window_ns=WINDOW))
    assert short["checkout/api"].before.spans == short["checkout/api"].after.spans == 40


def test_min_spans(scenario: list[AggregateRow]) -> None:
    assert "checkout/rare" not in by_module(deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW))
    rare = by_module(deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW, min_spans=5))["checkout/rare"]
    assert (rare.before.spans, rare.after.spans) == (5, 5)
    assert set(by_module(deploy_impact(scenario, D2, D1, SPAN, window_ns=WINDOW, min_spans=151))) == {
        "checkout/api"
    }


def test_no_previous_deploy_means_nothing_to_compare(scenario: list[AggregateRow]) -> None:
    assert deploy_impact(scenario, D2, None, SPAN, window_ns=WINDOW) == []


def test_deploy_of_another_environment_sees_nothing(scenario: list[AggregateRow]) -> None:
    staging = DeployEvent("d2", "checkout", "staging", "2" * 40, D2.deployed_at_unix_nano)
    assert deploy_impact(scenario, staging, D1, SPAN, window_ns=WINDOW) == []


def test_deploy_inside_a_window_splits_it_by_deploy(otel: Otel) -> None:
    t = T0 + 10 * WINDOW + 30 * SECOND  # mid-window
    d1 = DeployEvent("d1", "checkout", "prod", "1" * 40, T0)
    d2 = DeployEvent("d2", "checkout", "prod", "2" * 40, t)
    spans = spans_between(otel, "api", t - 20 * SECOND, t, durations(40, 10))
    spans += spans_between(otel, "api", t, t + 20 * SECOND, durations(60, 30))
    rows = rows_of(spans, DeployTimeline([d1, d2]))
    assert {r.window_start_unix_nano for r in rows} == {T0 + 10 * WINDOW}  # one window ...
    assert {r.deploy_id for r in rows} == {"d1", "d2"}  # ... two rows
    (api,) = deploy_impact(rows, d2, d1, WINDOW, window_ns=WINDOW)
    assert (api.before.spans, api.after.spans) == (40, 60)
    assert 3 * 0.99 / 1.01 <= api.p95_ratio <= 3 * 1.01 / 0.99
