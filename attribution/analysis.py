"""Analytics over aggregates: deploy impact.  Pure functions of rows.

Deploy impact compares, for each module of the deployed service, the spans that ran the
new deploy in ``[deployed_at, deployed_at + span)`` with the spans that ran the previous
deploy in ``[deployed_at - span, deployed_at)``: the same length on each side.  Rows carry
their deploy id, so the window that straddles the deploy splits cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent
from attribution.sketch import quantile


@dataclass(frozen=True, slots=True)
class Side:
    spans: int = 0
    spans_adjusted_milli: int = 0
    errors_adjusted_milli: int = 0
    duration_min_ns: int = 1 << 63
    duration_max_ns: int = -1
    bins: tuple[tuple[int, int], ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors_adjusted_milli / self.spans_adjusted_milli if self.spans_adjusted_milli else 0.0

    def p(self, q: float) -> float:
        if not self.spans:
            return math.nan
        return quantile(dict(self.bins), q, minimum=self.duration_min_ns, maximum=self.duration_max_ns)


def _side(rows: list[AggregateRow]) -> Side:
    bins: dict[int, int] = {}
    for r in rows:
        for k, v in r.latency_bins.items():
            bins[k] = bins.get(k, 0) + v
    return Side(
        spans=sum(r.spans for r in rows),
        spans_adjusted_milli=sum(r.spans_adjusted_milli for r in rows),
        errors_adjusted_milli=sum(r.errors_adjusted_milli for r in rows),
        duration_min_ns=min((r.duration_min_ns for r in rows), default=1 << 63),
        duration_max_ns=max((r.duration_max_ns for r in rows), default=-1),
        bins=tuple(sorted(bins.items())),
    )


@dataclass(frozen=True, slots=True)
class ModuleImpact:
    module: str
    owners: tuple[str, ...]
    before: Side
    after: Side

    @property
    def p95_before_ms(self) -> float:
        return self.before.p(0.95) / 1e6

    @property
    def p95_after_ms(self) -> float:
        return self.after.p(0.95) / 1e6

    @property
    def p95_ratio(self) -> float:
        b, a = self.before.p(0.95), self.after.p(0.95)
        if not b or math.isnan(b) or math.isnan(a):
            return math.nan
        return a / b

    @property
    def error_rate_delta(self) -> float:
        return self.after.error_rate - self.before.error_rate

    @property
    def score(self) -> float:
        """How much this module changed: the larger of |log p95 ratio| and 10x the error-rate delta."""
        r = self.p95_ratio
        lat = abs(math.log(r)) if r and not math.isnan(r) else 0.0
        return max(lat, 10 * abs(self.error_rate_delta))


def deploy_impact(
    rows: Iterable[AggregateRow],
    deploy: DeployEvent,
    previous: DeployEvent | None,
    span_ns: int,
    *,
    window_ns: int,
    min_spans: int = 20,
) -> list[ModuleImpact]:
    """Per-module before/after comparison around ``deploy``, most changed first."""
    t = deploy.deployed_at_unix_nano
    before: dict[str, list[AggregateRow]] = {}
    after: dict[str, list[AggregateRow]] = {}
    owners: dict[str, set[str]] = {}
    for r in rows:
        if r.service != deploy.service or r.environment != deploy.environment or r.unattributed_reason:
            continue
        w = r.window_start_unix_nano
        if r.deploy_id == deploy.deploy_id and w < t + span_ns and w + window_ns > t:
            after.setdefault(r.module, []).append(r)
        elif (
            previous is not None
            and r.deploy_id == previous.deploy_id
            and w < t
            and w + window_ns > t - span_ns
        ):
            before.setdefault(r.module, []).append(r)
        else:
            continue
        owners.setdefault(r.module, set()).update(r.owners)
    out = []
    for module in sorted(set(before) & set(after)):
        b, a = _side(before[module]), _side(after[module])
        if b.spans < min_spans or a.spans < min_spans:
            continue
        out.append(ModuleImpact(module, tuple(sorted(owners[module])), b, a))
    out.sort(key=lambda m: (-m.score, m.module))
    return out
