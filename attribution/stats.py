"""Significance tests that work on merged sketches (bucket -> count) and on counts.  Pure.

Aggregates never keep raw durations, only :mod:`attribution.sketch` histograms.  The tests
here therefore take histograms; every value in one bucket is treated as a tie.

* :func:`mann_whitney_bins` - the Mann-Whitney U test (Wilcoxon rank-sum) computed directly
  on two histograms over the same buckets, with the tie correction of the variance and a
  continuity correction; normal approximation.  One-sided: "after is stochastically
  larger than before".  It detects a shift of the whole distribution.
* :func:`quantile_exceedance_bins` - a test aimed at one quantile (Mood's median test
  generalised to any quantile ``q``): split both samples at the pooled q-quantile bucket and
  compare the shares above it with Fisher's exact test.  It detects a regression of the tail
  that leaves the median alone (e.g. 5 % of calls hitting a slow path), which rank tests
  barely see.
* :func:`two_proportion_z` - the pooled two-proportion z-test (with Yates' continuity
  correction), for error rates.
* :func:`fisher_exact_greater` - one-sided Fisher exact test on a 2x2 table.

All p-values are one-sided ("after worse than before") unless the name says otherwise.
Everything is written with :mod:`math` only; no numpy/scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "TestResult",
    "fisher_exact_greater",
    "mann_whitney_bins",
    "normal_sf",
    "quantile_exceedance_bins",
    "two_proportion_z",
]


@dataclass(frozen=True, slots=True)
class TestResult:
    """The outcome of a one-sided test: ``p_value`` is P(as extreme | no change)."""

    name: str
    statistic: float
    p_value: float
    n_before: int
    n_after: int

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_bins(before: Mapping[int, int], after: Mapping[int, int]) -> TestResult:
    """One-sided Mann-Whitney U test that ``after`` is stochastically larger than ``before``.

    Ranks are mid-ranks over buckets (every value of a bucket is a tie); the variance of U
    carries the tie correction ``sum(t^3 - t) / (N (N - 1))``.  The statistic is the z-score
    of U_after with a continuity correction of 1/2.  p = 1 when either side is empty or
    every value ties.
    """
    n1 = sum(before.values())
    n2 = sum(after.values())
    if n1 == 0 or n2 == 0:
        return TestResult("mann_whitney", 0.0, 1.0, n1, n2)
    n = n1 + n2
    rank_sum_after = 0.0
    ties = 0.0
    below = 0
    for k in sorted(set(before) | set(after)):
        a = before.get(k, 0)
        b = after.get(k, 0)
        t = a + b
        if t == 0:
            continue
        mid_rank = below + (t + 1) / 2.0
        rank_sum_after += b * mid_rank
        ties += t * t * t - t
        below += t
    u_after = rank_sum_after - n2 * (n2 + 1) / 2.0
    mean = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0.0:
        return TestResult("mann_whitney", 0.0, 1.0, n1, n2)
    z = (u_after - mean - 0.5) / math.sqrt(var)
    return TestResult("mann_whitney", z, normal_sf(z), n1, n2)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_greater(x_before: int, n_before: int, x_after: int, n_after: int) -> float:
    """One-sided Fisher exact p-value that the after proportion exceeds the before one.

    Conditional on the margins, the count of successes among the ``n_after`` draws is
    hypergeometric; p = P(X >= x_after).
    """
    if not (0 <= x_before <= n_before and 0 <= x_after <= n_after):
        raise ValueError("counts must satisfy 0 <= x <= n")
    total = n_before + n_after
    k = x_before + x_after
    if n_before == 0 or n_after == 0 or k == 0 or k == total:
        return 1.0
    hi = min(k, n_after)
    lo = max(0, k - n_before)
    if x_after <= lo:
        return 1.0
    log_denominator = _log_comb(total, n_after)
    p = 0.0
    mode = (k + 1) * (n_after + 1) // (total + 2)
    for x in range(x_after, hi + 1):
        term = math.exp(_log_comb(k, x) + _log_comb(total - k, n_after - x) - log_denominator)
        p += term
        if x > mode and term < p * 1e-16:
            break  # the tail past the mode shrinks geometrically
    return min(1.0, p)


def quantile_exceedance_bins(before: Mapping[int, int], after: Mapping[int, int], q: float) -> TestResult:
    """Is the q-quantile of ``after`` larger?  Fisher's exact test on "above the pooled q-quantile".

    The split point is the bucket holding the pooled sample's q-quantile; values in higher
    buckets count as "above".  Under no change, before and after values are exchangeable,
    so how the "above" values divide between the two sides is hypergeometric whatever the
    split point: the test is exact (conservative with ties).  The statistic is the share of
    ``after`` above the split divided by the share of ``before`` above it (inf if 0).
    """
    if not 0.0 < q < 1.0:
        raise ValueError("q must be within (0, 1)")
    n1 = sum(before.values())
    n2 = sum(after.values())
    if n1 == 0 or n2 == 0:
        return TestResult(f"quantile_exceedance(q={q:g})", 0.0, 1.0, n1, n2)
    n = n1 + n2
    rank = max(1, math.ceil(q * n))
    seen = 0
    split = 0
    keys = sorted(set(before) | set(after))
    for k in keys:
        seen += before.get(k, 0) + after.get(k, 0)
        if seen >= rank:
            split = k
            break
    above_before = sum(v for k, v in before.items() if k > split)
    above_after = sum(v for k, v in after.items() if k > split)
    p = fisher_exact_greater(above_before, n1, above_after, n2)
    share_before = above_before / n1
    share_after = above_after / n2
    ratio = share_after / share_before if share_before else (math.inf if share_after else 1.0)
    return TestResult(f"quantile_exceedance(q={q:g})", ratio, p, n1, n2)


def two_proportion_z(rate_before: float, n_before: int, rate_after: float, n_after: int) -> TestResult:
    """One-sided pooled two-proportion z-test that the after rate is higher.

    Rates may be sampling-adjusted (``errors_adjusted / spans_adjusted``) while ``n`` is the
    number of spans actually observed: the evidence is what was seen.  Yates' continuity
    correction keeps the normal approximation conservative for rare errors.
    """
    if n_before <= 0 or n_after <= 0:
        return TestResult("two_proportion_z", 0.0, 1.0, max(n_before, 0), max(n_after, 0))
    pooled = (rate_before * n_before + rate_after * n_after) / (n_before + n_after)
    var = pooled * (1.0 - pooled) * (1.0 / n_before + 1.0 / n_after)
    if var <= 0.0:
        return TestResult("two_proportion_z", 0.0, 1.0, n_before, n_after)
    correction = 0.5 * (1.0 / n_before + 1.0 / n_after)
    diff = rate_after - rate_before
    z = (diff - correction) / math.sqrt(var) if diff > 0 else diff / math.sqrt(var)
    return TestResult("two_proportion_z", z, normal_sf(z), n_before, n_after)
