"""The latency sketch (attribution/sketch.py): 1% relative error against exact rank-based quantiles.

Property tests over many random distributions and seeds: lognormal, uniform, bimodal, heavy
tails, constant, tiny and huge durations, with and without zero-length spans.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from attribution.sketch import (
    GAMMA,
    RELATIVE_ACCURACY,
    bucket_of,
    bucket_value,
    exact_quantile,
    merge_bins,
    quantile,
    rank_of,
)

QUANTILES = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)  # 1%, plus float rounding at bucket edges

Dist = Callable[[random.Random], int]


def _lognormal(median_ns: float, sigma: float) -> Dist:
    return lambda r: int(r.lognormvariate(math.log(median_ns), sigma))


def _bimodal(r: random.Random) -> int:
    # a fast cache hit or a slow database round trip
    return int(r.gauss(2e5, 2e4)) if r.random() < 0.7 else int(r.gauss(8e7, 1e7))


def _with_zeros(base: Dist, share: float) -> Dist:
    return lambda r: 0 if r.random() < share else base(r)


DISTRIBUTIONS: dict[str, Dist] = {
    "lognormal-20ms": _lognormal(20e6, 0.5),
    "lognormal-wide": _lognormal(1e6, 2.5),
    "uniform-1ms-1s": lambda r: r.randint(1_000_000, 1_000_000_000),
    "uniform-tiny": lambda r: r.randint(1, 50),
    "bimodal": _bimodal,
    "exponential": lambda r: int(r.expovariate(1 / 5e6)),
    "pareto-tail": lambda r: int(1e5 * r.paretovariate(1.2)),
    "constant": lambda r: 123_456_789,
    "hours": lambda r: r.randint(3_600 * 10**9, 5 * 3_600 * 10**9),
    "zeros-10pct": _with_zeros(_lognormal(20e6, 0.5), 0.10),
    "zeros-60pct": _with_zeros(_bimodal, 0.60),
    "all-zero": lambda r: 0,
}


def sketch(values: list[int]) -> dict[int, int]:
    return dict(Counter(bucket_of(v) for v in values))


def assert_within_one_percent(values: list[int], label: str) -> None:
    bins = sketch(values)
    ordered = sorted(values)
    for q in QUANTILES:
        exact = exact_quantile(ordered, q)
        got = quantile(bins, q, minimum=ordered[0], maximum=ordered[-1])
        if exact == 0:
            assert got == 0.0, (label, q)
        else:
            assert abs(got - exact) <= TOLERANCE * exact, (label, q, got, exact, abs(got - exact) / exact)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("seed", range(6))
def test_quantiles_within_one_percent(name: str, seed: int) -> None:
    rng = random.Random(f"{name}/{seed}")
    n = rng.choice([1, 2, 3, 10, 101, 1000, 2500])
    values = [max(0, DISTRIBUTIONS[name](rng)) for _ in range(n)]
    assert_within_one_percent(values, f"{name} seed={seed} n={n}")


def test_quantiles_within_one_percent_without_min_max_clamp() -> None:
    """The bucket representative alone (no clamp) is already within 1% for durations >= 1 ns."""
    for seed in range(10):
        rng = random.Random(seed)
        values = [max(1, int(rng.lognormvariate(math.log(5e6), 1.5))) for _ in range(500)]
        bins = sketch(values)
        ordered = sorted(values)
        for q in QUANTILES:
            exact = exact_quantile(ordered, q)
            assert abs(quantile(bins, q) - exact) <= TOLERANCE * exact


def test_every_duration_is_within_one_percent_of_its_bucket_value() -> None:
    rng = random.Random(99)
    samples = list(range(1, 2000))
    samples += [rng.randrange(1, 10**13) for _ in range(5000)]
    # integers right at and around the bucket edges gamma**k
    for k in range(0, 1500, 7):
        edge = GAMMA**k
        samples += [max(1, math.floor(edge) + d) for d in (-1, 0, 1)]
    for d in samples:
        b = bucket_of(d)
        assert b >= 1
        assert abs(bucket_value(b) - d) <= TOLERANCE * d, (d, b)


def test_bucket_covers_the_documented_interval() -> None:
    rng = random.Random(3)
    for _ in range(5000):
        d = rng.randrange(1, 10**12)
        i = bucket_of(d)
        lo, hi = GAMMA ** (i - 2), GAMMA ** (i - 1)
        assert lo * (1 - 1e-12) < d <= hi * (1 + 1e-12), (d, i)


def test_buckets_are_monotone() -> None:
    rng = random.Random(4)
    values = sorted(rng.randrange(0, 10**11) for _ in range(5000)) + list(range(0, 500))
    values.sort()
    buckets = [bucket_of(v) for v in values]
    assert buckets == sorted(buckets)


def test_zero_length_spans_go_to_bucket_zero() -> None:
    assert bucket_of(0) == 0
    assert bucket_value(0) == 0.0
    assert bucket_of(1) >= 1
    # negative durations (clock skew) are treated as zero-length, not as an error
    assert bucket_of(-5) == 0


def test_buckets_fit_uint16_for_realistic_durations() -> None:
    assert bucket_of(3_600 * 10**9) < 2_000  # one hour
    assert bucket_of(365 * 86_400 * 10**9) < 65_535  # one year


def test_empty_sketch_has_no_quantile() -> None:
    assert math.isnan(quantile({}, 0.5))
    assert math.isnan(quantile({5: 0}, 0.5))


def test_quantile_is_clamped_to_min_and_max() -> None:
    # one value: the bucket representative differs from it, the clamp makes it exact
    for v in (1, 7, 1_000_003, 987_654_321):
        bins = sketch([v])
        assert quantile(bins, 0.5, minimum=v, maximum=v) == v
    # a representative above every value is pulled down to the maximum, and up to the minimum
    bins = sketch([1_000_000, 1_000_001])
    assert quantile(bins, 1.0, minimum=1_000_000, maximum=1_000_001) <= 1_000_001
    assert quantile(bins, 0.0, minimum=1_000_000, maximum=1_000_001) >= 1_000_000


@pytest.mark.parametrize(
    ("q", "n", "rank"),
    [
        (0.0, 10, 1),
        (0.5, 4, 2),  # nearest rank: ceil(q * n)
        (0.5, 5, 3),
        (0.25, 8, 2),
        (0.75, 8, 6),
        (0.875, 8, 7),
        (1.0, 7, 7),
        (0.5, 1, 1),
        (0.001, 10, 1),
    ],
)
def test_rank_of_is_the_nearest_rank(q: float, n: int, rank: int) -> None:
    assert rank_of(q, n) == rank


def test_exact_quantile_against_a_brute_force_definition() -> None:
    """The smallest value v such that at least q*n values are <= v (dyadic q: exact in floats)."""
    rng = random.Random(5)
    for _ in range(200):
        values = sorted(rng.randrange(0, 100) for _ in range(rng.randrange(1, 40)))
        n = len(values)
        for q in (0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0):
            want = min(v for v in values if sum(1 for x in values if x <= v) >= max(1, q * n))
            assert exact_quantile(values, q) == want


# ------------------------------------------------------------------------- merging sketches


def test_merge_bins_is_exact_associative_and_commutative() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        values = [max(0, DISTRIBUTIONS["zeros-10pct"](rng)) for _ in range(rng.randrange(1, 400))]
        cuts = sorted(rng.sample(range(len(values) + 1), 2))
        a, b, c = (sketch(part) for part in (values[: cuts[0]], values[cuts[0] : cuts[1]], values[cuts[1] :]))
        whole = sketch(values)
        assert merge_bins(merge_bins(a, b), c) == whole
        assert merge_bins(a, merge_bins(b, c)) == whole
        assert merge_bins(c, merge_bins(a, b)) == whole
        assert merge_bins(b, a) == merge_bins(a, b)
        for q in QUANTILES:
            assert quantile(merge_bins(merge_bins(a, b), c), q) == quantile(whole, q)


def test_merge_bins_does_not_mutate_its_inputs() -> None:
    a, b = {1: 2, 5: 1}, {5: 3, 9: 1}
    merged = merge_bins(a, b)
    assert merged == {1: 2, 5: 4, 9: 1}
    assert (a, b) == ({1: 2, 5: 1}, {5: 3, 9: 1})
