"""The ``regression_after_deploy`` kind: a module's metrics before vs after a live deploy, tested one-sided."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from attribution.deploys import DeployTimeline
from attribution.model import DeployEvent
from attribution.rules.evaluators.base import Evaluator, Pool, RowIndex, Verdicts, percent, relative_change
from attribution.rules.findings import BREACH, NO_DATA, OK, FindingKey, Measurement, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import (
    MetricChange,
    Regression,
    Rule,
)
from attribution.rules.values import LATENCY_QUANTILES, SELF_QUANTILES, format_value
from attribution.stats import TestResult, mann_whitney_bins, quantile_exceedance_bins, two_proportion_z


def latency_test(before: Mapping[int, int], after: Mapping[int, int], q: float, test: str) -> TestResult:
    """The one-sided latency test a regression rule uses.

    ``auto`` runs both the Mann-Whitney test (a shift of the whole distribution) and the
    quantile-exceedance test at ``q`` (a slower tail), and reports the smaller p-value
    doubled (Bonferroni), so the false-positive rate stays at most ``alpha``.
    """
    if test == "mann_whitney":
        return mann_whitney_bins(before, after)
    if test == "quantile":
        return quantile_exceedance_bins(before, after, q)
    mw = mann_whitney_bins(before, after)
    qe = quantile_exceedance_bins(before, after, q)
    best = mw if mw.p_value <= qe.p_value else qe
    return TestResult(
        f"min({mw.name}, {qe.name}) x2", best.statistic, min(1.0, 2 * best.p_value), mw.n_before, mw.n_after
    )


def compare(
    before: Pool, after: Pool, change: MetricChange, alpha: float, test: str, min_samples: int = 0
) -> Measurement:
    """One metric of a before/after comparison: relative change and significance.

    A metric with fewer than ``min_samples`` samples on a side (self metrics count only the
    spans whose trace completed) is reported but never breaches.
    """
    metric = change.metric
    n = min(before.samples(metric), after.samples(metric))
    if metric in LATENCY_QUANTILES or metric in SELF_QUANTILES:
        b = before.metric(metric, 0)
        a = after.metric(metric, 0)
        q = LATENCY_QUANTILES.get(metric) or SELF_QUANTILES[metric]
        result = (
            latency_test(before.sketch(metric), after.sketch(metric), q, test)
            if n
            else TestResult("none", math.nan, 1.0, before.samples(metric), after.samples(metric))
        )
    elif metric == "own_error_rate":
        b, a = before.own_error_rate, after.own_error_rate
        result = two_proportion_z(b, before.self_spans, a, after.self_spans)
    else:
        b, a = before.error_rate, after.error_rate
        result = two_proportion_z(b, before.spans, a, after.spans)
    rel = relative_change(b, a)
    enough = n >= max(min_samples, 1)
    breached = (
        enough
        and not math.isnan(rel)
        and rel >= change.min_relative_change
        and (a - b) >= change.min_absolute_change
        and result.p_value < alpha
    )
    return Measurement(
        metric,
        before=b,
        after=a,
        relative_change=rel,
        threshold=change.min_relative_change,
        p_value=result.p_value,
        test=result.name,
        breached=breached,
        note="" if enough else f"{n} spans with self data (< {min_samples})",
    )


class RegressionEvaluator(Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        scope = rule.scope
        self.timeline = DeployTimeline(
            d
            for d in data.deploys
            if scope.match_service(d.service) and scope.match_environment(d.environment)
        )
        self.pairs = sorted({(d.service, d.environment) for d in self.timeline.events()})
        self.index = RowIndex(
            r
            for r in data.rows
            if not r.unattributed_reason
            and scope.match(r.service, r.environment, r.module, r.owners)
            and (r.service, r.environment) in set(self.pairs)
        )

    def sides(
        self, t: int, service: str, environment: str
    ) -> tuple[DeployEvent, DeployEvent, int, int] | None:
        """The live deploy at ``t``, its predecessor, and the compared length ``[d - L, d + L)``."""
        p = self.rule.params
        assert isinstance(p, Regression)
        deploy = self.timeline.deploy_at(service, environment, t - 1)
        if deploy is None or t - deploy.deployed_at_unix_nano > p.max_deploy_age_ns:
            return None
        previous = self.timeline.previous(deploy)
        if previous is None:
            return None
        d = deploy.deployed_at_unix_nano
        length = min(t - d, self.rule.window_ns, d - previous.deployed_at_unix_nano)
        # whole aggregation windows only: the window holding d splits by deploy id
        w = self.data.window_ns
        length -= length % w
        return deploy, previous, d, length

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, Regression)
        w = self.data.window_ns
        out: Verdicts = {}
        for service, environment in self.pairs:
            sides = self.sides(t, service, environment)
            if sides is None:
                continue
            deploy, previous, d, length = sides
            before: dict[str, Pool] = {}
            after: dict[str, Pool] = {}
            if length > 0:
                # windows overlapping [d - length, d) that ran the previous deploy, and
                # [d, d + length) that ran this one; the window holding d splits by deploy id
                d_floor = d - d % w
                for r in self.index.scan(d_floor - length, d_floor + length + w):
                    if r.service != service or r.environment != environment:
                        continue
                    if only is not None and self.key(service, environment, r.module) not in only:
                        continue
                    ws = r.window_start_unix_nano
                    if r.deploy_id == deploy.deploy_id and ws < d + length and ws + w > d:
                        after.setdefault(r.module, Pool()).add(r)
                    elif r.deploy_id == previous.deploy_id and ws < d and ws + w > d - length:
                        before.setdefault(r.module, Pool()).add(r)
            modules = set(before) | set(after)
            if only is not None:
                modules |= {k.module for k in only if (k.service, k.environment) == (service, environment)}
            for module in sorted(modules):
                k = self.key(service, environment, module)
                if only is not None and k not in only:
                    continue
                b = before.get(module, Pool())
                a = after.get(module, Pool())
                owners = tuple(sorted(a.owners | b.owners))
                common = {
                    "owners": owners,
                    "range_from_unix_nano": d - max(length, rule.window_ns),
                    "range_to_unix_nano": d + max(length, rule.window_ns),
                    "deploy": deploy,
                    "previous_deploy": previous,
                    "repository": a.repository or b.repository or deploy.repository,
                    "before_window": (d - length, d),
                    "after_window": (d, d + length),
                }
                # the most sampled of the rule's metrics (self metrics count spans with self data)
                samples = max(min(b.samples(c.metric), a.samples(c.metric)) for c in p.changes)
                if samples < rule.min_samples:
                    out[k] = Observation(
                        NO_DATA,
                        f"{b.spans} spans before, {a.spans} after {deploy.deploy_id} (< {rule.min_samples} each side)",
                        samples=samples,
                        **common,  # type: ignore[arg-type]
                    )
                    continue
                ms = tuple(compare(b, a, c, p.alpha, p.test, rule.min_samples) for c in p.changes)
                hit = [m for m in ms if m.breached]
                shown = hit or list(ms)
                text = ", ".join(
                    f"{m.metric} {format_value(m.metric, m.before)} → {format_value(m.metric, m.after)} "
                    f"({percent(m.relative_change)}, p={m.p_value:.2g})"
                    for m in shown
                )
                summary = (
                    f"regressed after {deploy.deploy_id}: "
                    if hit
                    else f"no regression after {deploy.deploy_id}: "
                ) + text
                out[k] = Observation(
                    BREACH if hit else OK,
                    summary,
                    ms,
                    samples=samples,
                    **common,  # type: ignore[arg-type]
                )
        return out
