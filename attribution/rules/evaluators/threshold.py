"""The ``threshold`` kind: a latency or self-time quantile, an error rate or the span rate above or below a value."""

from __future__ import annotations

import math
from collections.abc import Collection

from attribution.rules.evaluators.base import Evaluator, Pool, RowIndex, Verdicts
from attribution.rules.findings import BREACH, NO_DATA, OK, FindingKey, Measurement, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import (
    Rule,
    Threshold,
)
from attribution.rules.values import S, format_duration, format_value


class ThresholdEvaluator(Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        self.index = RowIndex(
            r
            for r in data.rows
            if not r.unattributed_reason and rule.scope.match(r.service, r.environment, r.module, r.owners)
        )

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, Threshold)
        start = t - rule.window_ns
        pools: dict[FindingKey, Pool] = {}
        for r in self.index.scan(start, t):
            if r.window_start_unix_nano + self.data.window_ns > t:
                continue  # an incomplete window
            k = self.key(r.service, r.environment, r.module)
            if only is not None and k not in only:
                continue
            pool = pools.get(k)
            if pool is None:
                pool = pools[k] = Pool()
            pool.add(r)
        for k in only or ():
            pools.setdefault(k, Pool())
        out: Verdicts = {}
        seconds = rule.window_ns / S
        for k, pool in pools.items():
            value = pool.metric(p.metric, seconds)
            n = pool.samples(p.metric)  # self metrics: the spans whose trace completed
            enough = n >= rule.min_samples or (p.metric == "span_rate" and p.op == "below")
            shown = format_value(p.metric, value)
            limit = format_value(p.metric, p.value)
            if not enough or math.isnan(value):
                out[k] = Observation(
                    NO_DATA,
                    f"{n} spans in {format_duration(rule.window_ns)} (< {rule.min_samples})",
                    samples=n,
                    owners=tuple(sorted(pool.owners)),
                    range_from_unix_nano=start,
                    range_to_unix_nano=t,
                )
                continue
            breached = value > p.value if p.op == "above" else value < p.value
            sign = (">" if p.op == "above" else "<") if breached else ("<=" if p.op == "above" else ">=")
            out[k] = Observation(
                BREACH if breached else OK,
                f"{p.metric} {shown} {sign} {limit}",
                (Measurement(p.metric, value=value, threshold=p.value, breached=breached),),
                samples=n,
                owners=tuple(sorted(pool.owners)),
                range_from_unix_nano=start,
                range_to_unix_nano=t,
                repository=pool.repository,
            )
        return out
