"""A mergeable latency sketch: a fixed log-bucket histogram with a relative-error guarantee.  Pure.

Bucket ``0`` holds zero-length spans.  A duration ``d >= 1`` ns goes to bucket
``ceil(log_gamma(d)) + 1`` with ``gamma = (1 + a) / (1 - a)`` and ``a = 0.01``, so bucket
``i >= 1`` covers ``(gamma**(i-2), gamma**(i-1)]``.  Its representative value
``2 * gamma**(i-1) / (gamma + 1)`` is within ``a`` (1%) of every value in the bucket.

The buckets are fixed (not data-dependent), so two sketches merge by adding counts per
bucket: exactly, associatively and commutatively, in Python or in ClickHouse
(``Map(UInt16, UInt64)`` summed with ``sumMap``).  One hour of nanoseconds is bucket ~1,500;
the index fits a UInt16 for any duration below 10**280 ns.

Quantiles are rank-based: the q-quantile of n values is the value of rank
``max(1, ceil(q * n))`` in ascending order.  The sketch returns the representative of the
bucket holding that rank, clamped to the exact [min, max] kept alongside.  The ClickHouse
view ``module_stats`` computes the very same formula (see ``schemas/clickhouse``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, TypeVar

RELATIVE_ACCURACY: Final = 0.01
GAMMA: Final = 1.01 / 0.99  # (1 + a) / (1 - a), written as ClickHouse reads it
LOG_GAMMA: Final = math.log(GAMMA)
INV_LOG_GAMMA: Final = 1.0 / LOG_GAMMA

K = TypeVar("K")


def bucket_of(duration_ns: int) -> int:
    if duration_ns <= 0:
        return 0
    return math.ceil(math.log(duration_ns) * INV_LOG_GAMMA) + 1


def bucket_value(index: int) -> float:
    """The representative duration (ns) of a bucket."""
    if index <= 0:
        return 0.0
    return 2.0 * GAMMA ** (index - 1) / (GAMMA + 1.0)


def rank_of(q: float, count: int) -> int:
    """The 1-based nearest rank of quantile ``q`` among ``count`` values."""
    return max(1, math.ceil(q * count))


def quantile(
    bins: Mapping[int, int], q: float, *, minimum: int | None = None, maximum: int | None = None
) -> float:
    """Rank-based quantile ``q`` in ``[0, 1]`` of the sketch, in ns (nan when empty)."""
    count = sum(bins.values())
    if count == 0:
        return math.nan
    rank = rank_of(q, count)
    seen = 0
    value = 0.0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            value = bucket_value(index)
            break
    if minimum is not None and value < minimum:
        value = float(minimum)
    if maximum is not None and value > maximum:
        value = float(maximum)
    return value


def exact_quantile(sorted_values: list[int], q: float) -> int:
    """The exact rank-based quantile of sorted values, for tests and benchmarks."""
    return sorted_values[rank_of(q, len(sorted_values)) - 1]


def merge_bins(a: Mapping[K, int], b: Mapping[K, int]) -> dict[K, int]:
    """Sum two count maps (sketch bins, or counts by any key)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out
