"""Windowed, mergeable per-module aggregates.  Pure.

Tumbling windows (60 s by default) keyed on the span's *start* time.  Per window the key is
the span's group (service, environment, repository, module, owners, commit, deploy,
unattributed reason; see :class:`attribution.attribute.GroupKey`).  Values:

* ``spans``, ``errors`` (status ERROR): raw counts;
* ``spans_adjusted_milli``, ``errors_adjusted_milli``: sampling-adjusted counts in
  thousandths.  Each span weighs ``round(1000 / p)`` for its keep-probability ``p``; fixed
  point keeps merges exact (float sums are not associative);
* ``duration_sum_ns`` (exact), ``duration_adjusted_sum_ns`` (each span adds
  ``d * weight // 1000``), ``duration_min_ns``, ``duration_max_ns``;
* ``latency_bins``: the :mod:`attribution.sketch` histogram (bucket -> raw count).

Every value merges by ``+`` (or min/max), so partial aggregates for one key merge exactly,
in any order and grouping, in Python (:func:`merge_rows`) or in ClickHouse.  Late spans
simply create another partial row for their window.

**Cardinality cap.**  At most ``max_groups_per_window`` keys per window; spans past the
cap go to an ``(overflow)`` row of their service and environment, and are counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from attribution.attribute import Attributor, GroupKey
from attribution.model import STATUS_ERROR, Span
from attribution.sketch import INV_LOG_GAMMA as _INV_LOG_GAMMA

DEFAULT_WINDOW_NS = 60 * 1_000_000_000

# accumulator slots
_SPANS, _ADJ, _ERR, _ERR_ADJ, _DSUM, _DSUM_ADJ, _DMIN, _DMAX, _BINS = range(9)


class AggregateRow(NamedTuple):
    """One partial aggregate; the columns of the ClickHouse ``module_aggregates`` table."""

    window_start_unix_nano: int
    service: str
    environment: str
    repository: str
    module: str
    owners: tuple[str, ...]
    commit_sha: str
    deploy_id: str
    unattributed_reason: str
    spans: int
    spans_adjusted_milli: int
    errors: int
    errors_adjusted_milli: int
    duration_sum_ns: int
    duration_adjusted_sum_ns: int
    duration_min_ns: int
    duration_max_ns: int
    latency_bins: dict[int, int]

    def key(self) -> tuple[object, ...]:
        return self[:9]


def merge_rows(a: AggregateRow, b: AggregateRow) -> AggregateRow:
    """Merge two partial aggregates of the same key.  Associative and commutative."""
    if a.key() != b.key():
        raise ValueError(f"cannot merge rows of different keys: {a.key()} vs {b.key()}")
    bins = dict(a.latency_bins)
    for k, v in b.latency_bins.items():
        bins[k] = bins.get(k, 0) + v
    return a._replace(
        spans=a.spans + b.spans,
        spans_adjusted_milli=a.spans_adjusted_milli + b.spans_adjusted_milli,
        errors=a.errors + b.errors,
        errors_adjusted_milli=a.errors_adjusted_milli + b.errors_adjusted_milli,
        duration_sum_ns=a.duration_sum_ns + b.duration_sum_ns,
        duration_adjusted_sum_ns=a.duration_adjusted_sum_ns + b.duration_adjusted_sum_ns,
        duration_min_ns=min(a.duration_min_ns, b.duration_min_ns),
        duration_max_ns=max(a.duration_max_ns, b.duration_max_ns),
        latency_bins=bins,
    )


def merge_all(rows: Iterable[AggregateRow]) -> dict[tuple[object, ...], AggregateRow]:
    out: dict[tuple[object, ...], AggregateRow] = {}
    for r in rows:
        k = r.key()
        prev = out.get(k)
        out[k] = r if prev is None else merge_rows(prev, r)
    return out


@dataclass
class BatchStats:
    spans: int = 0
    attributed: int = 0
    overflow: int = 0
    unattributed_by_reason: dict[str, int] = field(default_factory=dict)


def weight_milli(p: float) -> int:
    """A span's sampling-adjusted weight in thousandths: round(1000 / p)."""
    if p >= 1.0 or not p > 0.0:
        return 1000
    return round(1000.0 / p)


class Aggregator:
    """Accumulates spans into windowed partial aggregates.

    ``add(spans)`` attributes and accumulates; ``collect(now_unix_nano)`` drains windows
    that closed at least ``allowed_lateness_ns`` before ``now``; ``drain()`` drains all.

    The hot path appends each span's duration to its (window, group) list; counts, sums,
    min/max and sketch bins are computed in bulk when lists are folded (every
    ``fold_every`` spans, and on drain).  Errors and sampled spans, which are rarer, are
    accounted for as they come.
    """

    def __init__(
        self,
        attributor: Attributor,
        *,
        window_ns: int = DEFAULT_WINDOW_NS,
        max_groups_per_window: int = 10_000,
        allowed_lateness_ns: int = 0,
        fold_every: int = 200_000,
    ) -> None:
        if window_ns <= 0:
            raise ValueError("window_ns must be positive")
        self.attributor = attributor
        self.window_ns = window_ns
        self.max_groups_per_window = max_groups_per_window
        self.allowed_lateness_ns = allowed_lateness_ns
        self.fold_every = fold_every
        # window -> gid -> pending durations (ns)
        self._pending: dict[int, dict[int, list[int]]] = {}
        # window -> gid -> [errors, adj_delta, err_adj_delta, dsum_adj_delta] for errors / sampled spans
        self._extra: dict[int, dict[int, list[int]]] = {}
        # window -> gid -> folded accumulator
        self._folded: dict[int, dict[int, list[object]]] = {}
        # window -> the groups it holds (pending or folded), for the cardinality cap
        self._known: dict[int, set[int]] = {}
        self._pending_count = 0
        self.overflowed_spans = 0

    def __len__(self) -> int:
        keys: set[tuple[int, int]] = set()
        for d in (self._pending, self._folded):
            for w, groups in d.items():
                keys.update((w, g) for g in groups)
        return len(keys)

    def add(self, spans: Sequence[Span], stats: BatchStats | None = None) -> BatchStats:
        st = stats if stats is not None else BatchStats()
        attributor = self.attributor
        gids = attributor.group_ids(spans)
        window_ns = self.window_ns
        cap = self.max_groups_per_window
        pending = self._pending
        last_w = -1
        win: dict[int, list[int]] = {}
        for span, gid in zip(spans, gids, strict=True):
            start = span.start_unix_nano
            w = start - start % window_ns
            if w != last_w:
                win_opt = pending.get(w)
                if win_opt is None:
                    win_opt = pending[w] = {}
                win = win_opt
                last_w = w
            durations = win.get(gid)
            if durations is None:
                known = self._known.get(w)
                if known is None:
                    known = self._known[w] = set()
                if gid not in known and len(known) >= cap:
                    gid = attributor.overflow_group(attributor.group(gid))
                    st.overflow += 1
                    self.overflowed_spans += 1
                    durations = win.get(gid)
                if durations is None:
                    durations = win[gid] = []
                    known.add(gid)
            d = span.end_unix_nano - start
            durations.append(d)
            if span.status_code == STATUS_ERROR or span.sample_probability != 1.0:
                self._account_extra(w, gid, d, span)
        n = len(spans)
        st.spans += n
        for gid, count in Counter(gids).items():
            if attributor.is_attributed(gid):
                st.attributed += count
            else:
                reason = attributor.group(gid).unattributed_reason
                st.unattributed_by_reason[reason] = st.unattributed_by_reason.get(reason, 0) + count
        self._pending_count += n
        if self._pending_count >= self.fold_every:
            self.fold()
        return st

    def _account_extra(self, w: int, gid: int, d: int, span: Span) -> None:
        groups = self._extra.get(w)
        if groups is None:
            groups = self._extra[w] = {}
        x = groups.get(gid)
        if x is None:
            x = groups[gid] = [0, 0, 0, 0]
        wt = weight_milli(span.sample_probability)
        if span.status_code == STATUS_ERROR:
            x[0] += 1
            x[2] += wt - 1000
        x[1] += wt - 1000
        x[3] += d * wt // 1000 - d

    def fold(self) -> None:
        """Fold pending durations into accumulators (bounded memory; same results)."""
        inv = _INV_LOG_GAMMA
        log = math.log
        ceil = math.ceil
        for w, groups in self._pending.items():
            folded = self._folded.get(w)
            if folded is None:
                folded = self._folded[w] = {}
            extra = self._extra.get(w, {})
            for gid, ds in groups.items():
                if not ds:
                    continue
                n = len(ds)
                dsum = sum(ds)
                x = extra.pop(gid, None)
                errors, adj_d, err_adj_d, dsum_adj_d = x if x is not None else (0, 0, 0, 0)
                bins = Counter([ceil(log(d) * inv) + 1 if d > 0 else 0 for d in ds])
                acc = folded.get(gid)
                if acc is None:
                    folded[gid] = [
                        n,
                        1000 * n + adj_d,
                        errors,
                        1000 * errors + err_adj_d,
                        dsum,
                        dsum + dsum_adj_d,
                        min(ds),
                        max(ds),
                        dict(bins),
                    ]
                else:
                    acc[_SPANS] += n  # type: ignore[operator]
                    acc[_ADJ] += 1000 * n + adj_d  # type: ignore[operator]
                    acc[_ERR] += errors  # type: ignore[operator]
                    acc[_ERR_ADJ] += 1000 * errors + err_adj_d  # type: ignore[operator]
                    acc[_DSUM] += dsum  # type: ignore[operator]
                    acc[_DSUM_ADJ] += dsum + dsum_adj_d  # type: ignore[operator]
                    acc[_DMIN] = min(acc[_DMIN], min(ds))  # type: ignore[call-overload]
                    acc[_DMAX] = max(acc[_DMAX], max(ds))  # type: ignore[call-overload]
                    b: dict[int, int] = acc[_BINS]  # type: ignore[assignment]
                    for k, v in bins.items():
                        b[k] = b.get(k, 0) + v
        self._pending.clear()
        self._extra.clear()
        self._pending_count = 0

    def _rows(self, w: int, groups: dict[int, list[object]]) -> list[AggregateRow]:
        out = []
        group = self.attributor.group
        for gid, acc in groups.items():
            k: GroupKey = group(gid)
            out.append(
                AggregateRow(
                    w,
                    k.service,
                    k.environment,
                    k.repository,
                    k.module,
                    k.owners,
                    k.commit_sha,
                    k.deploy_id,
                    k.unattributed_reason,
                    acc[_SPANS],  # type: ignore[arg-type]
                    acc[_ADJ],  # type: ignore[arg-type]
                    acc[_ERR],  # type: ignore[arg-type]
                    acc[_ERR_ADJ],  # type: ignore[arg-type]
                    acc[_DSUM],  # type: ignore[arg-type]
                    acc[_DSUM_ADJ],  # type: ignore[arg-type]
                    acc[_DMIN],  # type: ignore[arg-type]
                    acc[_DMAX],  # type: ignore[arg-type]
                    acc[_BINS],  # type: ignore[arg-type]
                )
            )
        out.sort(key=lambda r: r[:9])
        return out

    def collect(self, now_unix_nano: int) -> list[AggregateRow]:
        """Drain the windows that ended at least ``allowed_lateness_ns`` before ``now``."""
        self.fold()
        limit = now_unix_nano - self.allowed_lateness_ns - self.window_ns
        out: list[AggregateRow] = []
        for w in sorted(self._folded):
            if w <= limit:
                out.extend(self._rows(w, self._folded.pop(w)))
                self._known.pop(w, None)
        return out

    def drain(self) -> list[AggregateRow]:
        """Drain every window, in a deterministic order."""
        self.fold()
        out: list[AggregateRow] = []
        for w in sorted(self._folded):
            out.extend(self._rows(w, self._folded[w]))
        self._folded.clear()
        self._known.clear()
        return out
