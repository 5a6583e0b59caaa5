"""The ``cost_share`` kind: a module's share of its service's resources over its share of the traffic."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from attribution.rules.evaluators.base import Evaluator, RowIndex, Verdicts
from attribution.rules.findings import BREACH, NO_DATA, OK, FindingKey, Measurement, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import (
    RESOURCE_MEASURES,
    CostShare,
    Rule,
)


class CostShareEvaluator(Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        scope = rule.scope
        # the denominators are the whole service, so rows are filtered by service/env only
        self.index = RowIndex(
            r for r in data.rows if scope.match_service(r.service) and scope.match_environment(r.environment)
        )

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, CostShare)
        measure = RESOURCE_MEASURES[p.resource]
        start = t - rule.window_ns
        totals: dict[tuple[str, str], list[int]] = {}
        per: dict[FindingKey, list[Any]] = {}
        for r in self.index.scan(start, t):
            if r.window_start_unix_nano + self.data.window_ns > t:
                continue
            amount = measure(r)
            tot = totals.setdefault((r.service, r.environment), [0, 0])
            tot[0] += amount
            tot[1] += r.spans_adjusted_milli
            if r.unattributed_reason or not rule.scope.match(r.service, r.environment, r.module, r.owners):
                continue
            k = self.key(r.service, r.environment, r.module)
            acc = per.setdefault(k, [0, 0, 0, set(), ""])
            acc[0] += amount
            acc[1] += r.spans_adjusted_milli
            acc[2] += r.spans
            acc[3].update(r.owners)
            acc[4] = acc[4] or r.repository
        for k in only or ():
            per.setdefault(k, [0, 0, 0, set(), ""])
        out: Verdicts = {}
        for k, (amount, traffic, spans, owners, repo) in per.items():
            if only is not None and k not in only:
                continue
            tot_amount, tot_traffic = totals.get((k.service, k.environment), [0, 0])
            common: dict[str, Any] = {
                "owners": tuple(sorted(owners)),
                "range_from_unix_nano": start,
                "range_to_unix_nano": t,
                "samples": spans,
                "repository": repo,
            }
            if spans < rule.min_samples or not tot_amount or not tot_traffic or not traffic:
                out[k] = Observation(NO_DATA, f"{spans} spans (< {rule.min_samples})", **common)
                continue
            resource_share = amount / tot_amount
            traffic_share = traffic / tot_traffic
            ratio = resource_share / traffic_share
            breached = ratio >= p.min_ratio and resource_share >= p.min_resource_share
            ms = (
                Measurement(
                    "resource_share", value=resource_share, threshold=p.min_resource_share, note=p.resource
                ),
                Measurement("traffic_share", value=traffic_share),
                Measurement("ratio", value=ratio, threshold=p.min_ratio, breached=breached),
            )
            out[k] = Observation(
                BREACH if breached else OK,
                f"{100 * traffic_share:.1f}% of {k.service}'s traffic, {100 * resource_share:.1f}% of its "
                f"{p.resource.replace('_', ' ')} (x{ratio:.1f}, limit x{p.min_ratio:g})",
                ms,
                **common,
            )
        return out
