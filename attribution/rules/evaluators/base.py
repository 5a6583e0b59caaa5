"""What every evaluator shares: the evaluator interface, merged row numbers, a row index by window."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Collection, Iterable

from attribution.aggregate import NO_MIN, AggregateRow
from attribution.rules.findings import FindingKey, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import Rule
from attribution.rules.values import LATENCY_QUANTILES, SELF_QUANTILES
from attribution.sketch import quantile

# metrics measured only over the spans whose self data is known
SELF_METRICS = frozenset({*SELF_QUANTILES, "own_error_rate"})


class Pool:
    """Merged numbers of some rows."""

    __slots__ = (
        "bins",
        "dmax",
        "dmin",
        "dsum_adj",
        "err_adj",
        "own_err_adj",
        "owners",
        "repository",
        "self_bins",
        "self_max",
        "self_min",
        "self_spans",
        "self_spans_adj",
        "spans",
        "spans_adj",
    )

    def __init__(self) -> None:
        self.spans = 0
        self.spans_adj = 0
        self.err_adj = 0
        self.dsum_adj = 0
        self.dmin = 1 << 63
        self.dmax = -1
        self.bins: dict[int, int] = {}
        # spans whose self time and own errors are known (their trace completed)
        self.self_spans = 0
        self.self_spans_adj = 0
        self.own_err_adj = 0
        self.self_min = NO_MIN
        self.self_max = 0
        self.self_bins: dict[int, int] = {}
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
        if r.self_spans:
            self.self_spans += r.self_spans
            self.self_spans_adj += r.self_spans_adjusted_milli
            self.own_err_adj += r.own_errors_adjusted_milli
            self.self_min = min(self.self_min, r.self_time_min_ns)
            self.self_max = max(self.self_max, r.self_time_max_ns)
            sb = self.self_bins
            for k, v in r.self_bins.items():
                sb[k] = sb.get(k, 0) + v
        self.owners.update(r.owners)
        self.repository = self.repository or r.repository

    @property
    def error_rate(self) -> float:
        return self.err_adj / self.spans_adj if self.spans_adj else 0.0

    @property
    def own_error_rate(self) -> float:
        """Own errors (errored spans with no errored child) over the spans whose trace completed."""
        return self.own_err_adj / self.self_spans_adj if self.self_spans_adj else 0.0

    def samples(self, name: str) -> int:
        """The spans ``name`` is measured over: self metrics count only spans with self data."""
        return self.self_spans if name in SELF_METRICS else self.spans

    def sketch(self, name: str) -> dict[int, int]:
        """The histogram a quantile metric reads: of durations, or of self times."""
        return self.self_bins if name in SELF_QUANTILES else self.bins

    def metric(self, name: str, seconds: float) -> float:
        if name in LATENCY_QUANTILES:
            if not self.spans:
                return math.nan
            return quantile(self.bins, LATENCY_QUANTILES[name], minimum=self.dmin, maximum=self.dmax)
        if name in SELF_QUANTILES:
            if not self.self_spans:
                return math.nan
            return quantile(
                self.self_bins, SELF_QUANTILES[name], minimum=self.self_min, maximum=self.self_max
            )
        if name == "error_rate":
            return self.error_rate
        if name == "own_error_rate":
            return self.own_error_rate if self.self_spans_adj else math.nan
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
