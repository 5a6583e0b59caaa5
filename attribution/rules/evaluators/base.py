"""What every evaluator shares: the evaluator interface, merged row numbers, a row index by window."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Collection, Iterable

from attribution.aggregate import AggregateRow
from attribution.rules.findings import FindingKey, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import Rule
from attribution.rules.values import LATENCY_QUANTILES
from attribution.sketch import quantile


class Pool:
    """Merged numbers of some rows."""

    __slots__ = ("bins", "dmax", "dmin", "dsum_adj", "err_adj", "owners", "repository", "spans", "spans_adj")

    def __init__(self) -> None:
        self.spans = 0
        self.spans_adj = 0
        self.err_adj = 0
        self.dsum_adj = 0
        self.dmin = 1 << 63
        self.dmax = -1
        self.bins: dict[int, int] = {}
        self.owners: set[str] = set()
        self.repository = ""

    def add(self, r: AggregateRow) -> None:
        self.spans += r.spans
        self.spans_adj += r.spans_adjusted_milli
        self.err_adj += r.errors_adjusted_milli
        self.dsum_adj += r.duration_adjusted_sum_ns
        self.dmin = min(self.dmin, r.duration_min_ns)
        self.dmax = max(self.dmax, r.duration_max_ns)
        b = self.bins
        for k, v in r.latency_bins.items():
            b[k] = b.get(k, 0) + v
        self.owners.update(r.owners)
        self.repository = self.repository or r.repository

    @property
    def error_rate(self) -> float:
        return self.err_adj / self.spans_adj if self.spans_adj else 0.0

    def metric(self, name: str, seconds: float) -> float:
        if name in LATENCY_QUANTILES:
            if not self.spans:
                return math.nan
            return quantile(self.bins, LATENCY_QUANTILES[name], minimum=self.dmin, maximum=self.dmax)
        if name == "error_rate":
            return self.error_rate
        return self.spans_adj / 1000.0 / seconds if seconds > 0 else math.nan


class RowIndex:
    """Rows by window start, for range scans."""

    def __init__(self, rows: Iterable[AggregateRow]) -> None:
        by: dict[int, list[AggregateRow]] = {}
        for r in rows:
            by.setdefault(r.window_start_unix_nano, []).append(r)
        self.windows = sorted(by)
        self.by_window = by

    def scan(self, start: int, end: int) -> Iterable[AggregateRow]:
        """Rows of windows starting in ``[start, end)``."""
        i = bisect_left(self.windows, start)
        ws = self.windows
        while i < len(ws) and ws[i] < end:
            yield from self.by_window[ws[i]]
            i += 1


def relative_change(before: float, after: float) -> float:
    if math.isnan(before) or math.isnan(after):
        return math.nan
    if before == 0:
        return math.inf if after > 0 else 0.0
    return after / before - 1.0


def percent(x: float) -> str:
    return "inf" if math.isinf(x) else f"{100 * x:+.0f}%"


Verdicts = dict[FindingKey, Observation]


class Evaluator:
    """A kind's evaluator: built once over the data, asked for the verdicts at instants ``t``."""

    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        self.rule = rule
        self.data = data

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        raise NotImplementedError

    def key(self, service: str, environment: str, module: str) -> FindingKey:
        return FindingKey(self.rule.name, service, environment, module)
