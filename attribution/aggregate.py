"""Windowed, mergeable per-module aggregates.  Pure.

Tumbling windows (60 s by default) keyed on the span's *start* time.  Per window the key is
the span's group (service, environment, repository, module, owners, commit, deploy,
unattributed reason; see :class:`attribution.attribute.GroupKey`).  Values:

* ``spans``, ``errors`` (status ERROR): raw counts;
* ``spans_adjusted_milli``, ``errors_adjusted_milli``: sampling-adjusted counts in
  thousandths.  Each span weighs ``round(1000 / p)`` for its keep-probability ``p`` (at most
  :data:`MAX_WEIGHT_MILLI`: a probability below 2^-32 counts as 2^-32); fixed
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
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from attribution.attribute import Attributor, GroupKey
from attribution.model import STATUS_ERROR, LogException, Span, Unattributed
from attribution.selftime import trace_self_times
from attribution.sketch import INV_LOG_GAMMA as _INV_LOG_GAMMA
from attribution.sketch import merge_bins

DEFAULT_WINDOW_NS = 60 * 1_000_000_000

NO_MIN = 2**64 - 1  # the min of no values: a row without self time carries it, so min() merges stay exact
# shared empty defaults, typed read-only (rows are never changed in place; they must pickle)
_NO_BINS: Mapping[int, int] = {}
_NO_TYPES: Mapping[str, int] = {}

# accumulator slots
_SPANS, _ADJ, _ERR, _ERR_ADJ, _DSUM, _DSUM_ADJ, _DMIN, _DMAX, _BINS, _CPU, _EXC = range(11)
_NO_EXTRA = (0, 0, 0, 0, 0, 0)


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
    # self time (attribution.selftime), from the trace buffer when the span's trace completes
    self_spans: int = 0
    self_spans_adjusted_milli: int = 0
    self_time_sum_ns: int = 0
    self_time_adjusted_sum_ns: int = 0
    self_time_min_ns: int = NO_MIN
    self_time_max_ns: int = 0
    self_bins: Mapping[int, int] = _NO_BINS
    own_errors: int = 0
    own_errors_adjusted_milli: int = 0
    cpu_time_sum_ns: int = 0
    exception_events: int = 0  # exception events on this row's spans
    exceptions: int = 0  # exceptions whose stack trace threw in this row's module
    exception_types: Mapping[str, int] = _NO_TYPES

    def key(self) -> tuple[object, ...]:
        return self[:9]


class NameRow(NamedTuple):
    """Unattributed spans of one window, service, environment, reason and span name (coverage)."""

    window_start_unix_nano: int
    service: str
    environment: str
    unattributed_reason: str
    span_name: str
    spans: int


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
        self_spans=a.self_spans + b.self_spans,
        self_spans_adjusted_milli=a.self_spans_adjusted_milli + b.self_spans_adjusted_milli,
        self_time_sum_ns=a.self_time_sum_ns + b.self_time_sum_ns,
        self_time_adjusted_sum_ns=a.self_time_adjusted_sum_ns + b.self_time_adjusted_sum_ns,
        self_time_min_ns=min(a.self_time_min_ns, b.self_time_min_ns),
        self_time_max_ns=max(a.self_time_max_ns, b.self_time_max_ns),
        self_bins=merge_bins(a.self_bins, b.self_bins),
        own_errors=a.own_errors + b.own_errors,
        own_errors_adjusted_milli=a.own_errors_adjusted_milli + b.own_errors_adjusted_milli,
        cpu_time_sum_ns=a.cpu_time_sum_ns + b.cpu_time_sum_ns,
        exception_events=a.exception_events + b.exception_events,
        exceptions=a.exceptions + b.exceptions,
        exception_types=merge_bins(a.exception_types, b.exception_types),
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
    log_exceptions: int = 0
    exceptions_unattributed: dict[str, int] = field(default_factory=dict)  # by reason


# The heaviest a span weighs: "1 in 2^32".  A tracestate threshold may claim 2^-56 and a
# sample-rate attribute anything; unbounded weights would overflow the trace buffer's int64s and
# the store's UInt64 sums, so one span could stop a stream.
MAX_WEIGHT_MILLI = 1000 << 32


def weight_milli(p: float) -> int:
    """A span's sampling-adjusted weight in thousandths: round(1000 / p), at most MAX_WEIGHT_MILLI."""
    if p >= 1.0 or not p > 0.0:
        return 1000
    return min(round(1000.0 / p), MAX_WEIGHT_MILLI)


# The most CPU time one span counts: 2^62 ns (146 years); a larger value is a broken client.
MAX_CPU_NS = 1 << 62


def cpu_time_ns(value: object, unit_ns: int) -> int:
    """A CPU-time attribute's nanoseconds: a positive finite number of ``unit_ns``, at most
    :data:`MAX_CPU_NS`; anything else (a bool, a string, infinity) counts 0."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf:
        return min(round(value * unit_ns), MAX_CPU_NS)
    return 0


class NativeWindows(Protocol):
    """The native twin of the Aggregator's per-span work and fold (``prodloop_native.Windows``,
    see ``collector.processing.native``): per window and group, the totals :meth:`Aggregator.fold`
    computes, identical."""

    def add(
        self,
        spans: Sequence[Span],
        gids: list[int],
        overflow: Callable[[int], int],
        cpu_ns: Callable[[object], int],
        thrown: Callable[[int, int, Span], None],
    ) -> int: ...

    def __len__(self) -> int: ...

    def windows(self) -> list[int]: ...

    def take(self, w: int) -> list[tuple[Any, ...]]: ...


def bins_of(values: Sequence[int]) -> dict[int, int]:
    """The sketch bins (bucket -> count) of ``values`` (ns)."""
    inv = _INV_LOG_GAMMA
    log = math.log
    ceil = math.ceil
    return dict(Counter([ceil(log(d) * inv) + 1 if d > 0 else 0 for d in values]))


def _empty_row(w: int, k: GroupKey) -> AggregateRow:
    """A row of key ``(w, k)`` with no spans, to carry self time or thrown exceptions."""
    return AggregateRow(w, *k, 0, 0, 0, 0, 0, 0, NO_MIN, 0, {})


def merge_sorted(*parts: Iterable[AggregateRow]) -> list[AggregateRow]:
    """Merge rows of equal keys, in key order (the deterministic order writes rely on)."""
    merged = merge_all(r for part in parts for r in part)
    return [merged[k] for k in sorted(merged)]


_GROUP_BITS = 32
_GROUP_MASK = (1 << _GROUP_BITS) - 1
_ROOT_ID = bytes(8)  # the parent id of a root span, as the trace buffer packs it
_ONE = 1


# what a self-time accumulator drains, per (window, group index): (window start, group index,
# spans, adjusted spans in thousandths, self time sum, adjusted sum, min, max, bins, own errors,
# adjusted own errors in thousandths); the native trace core drains the same
SelfTimeTotals = tuple[int, int, int, int, int, int, int, int, dict[int, int], int, int]


class SelfTimes:
    """Accumulates completed traces' self times and own errors per (window, group index), from
    the trace buffer's packed data (:meth:`add_packed`); :func:`self_time_rows` turns what it
    drains back into rows."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        # (window index << _GROUP_BITS | group index) -> [self times, adj delta, adj sum delta, own errors, own errors adj]
        self._acc: dict[int, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._acc)

    def add_packed(self, ids: bytes | bytearray, nums: array[int]) -> int:
        """One completed trace: ``ids`` holds per span its 8-byte id and parent id (zeroes for
        none), ``nums`` per span start, end, group index * 2 (+1 for an error) and weight in
        thousandths.  Returns the number of orphans (:func:`attribution.selftime.trace_self_times`)."""
        starts = nums[0::4].tolist()  # lists: the ints are boxed once, not on every read
        ends = nums[1::4].tolist()
        ge = nums[2::4]
        if len(ge) == 1:  # what trace_self_times gives for one span, without its setup
            pid = ids[8:16]
            self._add(ge, starts, [ends[0] - starts[0]], nums[3::4], [True] if ge[0] & 1 else None)
            return int(pid != _ROOT_ID and pid != ids[:8])
        id64 = array("q")  # the 8-byte ids as int64s: equal exactly when the bytes are, cheaper to hash
        id64.frombytes(ids)
        errors = list(map(_ONE.__and__, ge)) if any(map(_ONE.__and__, ge)) else None
        selfs, own, orphans = trace_self_times(id64[0::2], id64[1::2], starts, ends, errors, root=0)
        self._add(ge, starts, selfs, nums[3::4], own)
        return orphans

    def _add(
        self,
        group_flags: Sequence[int],
        starts: Sequence[int],
        selfs: Sequence[int],
        weights: Sequence[int],
        own: Sequence[bool] | None,
    ) -> None:
        acc = self._acc
        wns = self.window_ns
        for i, gf in enumerate(group_flags):
            key = (starts[i] // wns << _GROUP_BITS) | (gf >> 1)  # (window, group) as one int: hashes fast
            a = acc.get(key)
            if a is None:
                a = acc[key] = [[], 0, 0, 0, 0]
            v = selfs[i]
            a[0].append(v)
            w = weights[i]
            if w != 1000:
                a[1] += w - 1000
                a[2] += v * w // 1000 - v
            if own is not None and own[i]:
                a[3] += 1
                a[4] += w

    def drain(self) -> list[SelfTimeTotals]:
        """The totals per (window, group index), in the order first seen; then empty."""
        out: list[SelfTimeTotals] = []
        for key, (vals, adj, sum_adj, own, own_adj) in self._acc.items():
            n = len(vals)
            total = sum(vals)
            out.append(
                (
                    (key >> _GROUP_BITS) * self.window_ns,
                    key & _GROUP_MASK,
                    n,
                    1000 * n + adj,
                    total,
                    total + sum_adj,
                    min(vals),
                    max(vals),
                    bins_of(vals),
                    own,
                    own_adj,
                )
            )
        self._acc.clear()
        return out


def self_time_rows(totals: Iterable[SelfTimeTotals], groups: Sequence[GroupKey]) -> list[AggregateRow]:
    """One row per (window, group) of drained self-time totals, with only those columns set."""
    return [
        _empty_row(w, groups[g])._replace(
            self_spans=n,
            self_spans_adjusted_milli=n_adj,
            self_time_sum_ns=total,
            self_time_adjusted_sum_ns=total_adj,
            self_time_min_ns=lo,
            self_time_max_ns=hi,
            self_bins=bins,
            own_errors=own,
            own_errors_adjusted_milli=own_adj,
        )
        for w, g, n, n_adj, total, total_adj, lo, hi, bins, own, own_adj in totals
    ]


class Aggregator:
    """Accumulates spans into windowed partial aggregates.

    ``add(spans)`` attributes and accumulates; ``collect(now_unix_nano)`` drains windows
    that closed at least ``allowed_lateness_ns`` before ``now``; ``drain()`` drains all.

    The hot path appends each span's duration to its (window, group) list; counts, sums,
    min/max and sketch bins are computed in bulk when lists are folded (every
    ``fold_every`` spans, and on drain).  Errors, sampled spans, spans with CPU time or
    exceptions, which are rarer, are accounted for as they come.  After ``add``,
    :attr:`last_gids` holds each span's group id (after the cardinality cap), for the trace
    buffer.

    Exceptions: each recorded exception counts on its span's row (``exception_events``) and,
    when its stack trace leads to a module, on that module's row (``exceptions``, at most
    ``max_exception_types`` types per row, the rest as ``(other)``); ones that lead nowhere
    are counted by reason in :attr:`BatchStats.exceptions_unattributed`.  Unattributed spans
    are also counted by name (:class:`NameRow`, at most ``max_names_per_window`` names per
    window and service, the rest as ``(other)``).

    ``native_windows``: a factory ``(window_ns, max_groups_per_window, cpu_time_attribute)`` of
    the native twin of the per-span loop and the fold (:class:`NativeWindows`); it then holds
    the windows, and ``fold_every`` does not apply.
    """

    def __init__(
        self,
        attributor: Attributor,
        *,
        window_ns: int = DEFAULT_WINDOW_NS,
        max_groups_per_window: int = 10_000,
        allowed_lateness_ns: int = 0,
        fold_every: int = 200_000,
        cpu_time_attribute: str = "",
        cpu_time_unit_ns: int = 1_000_000_000,
        max_exception_types: int = 10,
        max_names_per_window: int = 100,
        native_windows: Callable[[int, int, str], NativeWindows] | None = None,
    ) -> None:
        if window_ns <= 0:
            raise ValueError("window_ns must be positive")
        self.attributor = attributor
        self.window_ns = window_ns
        self.max_groups_per_window = max_groups_per_window
        self.allowed_lateness_ns = allowed_lateness_ns
        self.fold_every = fold_every
        self.cpu_time_attribute = cpu_time_attribute
        self.cpu_time_unit_ns = cpu_time_unit_ns
        self.max_exception_types = max_exception_types
        self.max_names_per_window = max_names_per_window
        # window -> gid -> pending durations (ns)
        self._pending: dict[int, dict[int, list[int]]] = {}
        # window -> gid -> [errors, adj_delta, err_adj_delta, dsum_adj_delta, cpu_ns, exception events]
        self._extra: dict[int, dict[int, list[int]]] = {}
        # window -> gid -> folded accumulator
        self._folded: dict[int, dict[int, list[Any]]] = {}
        # window -> the groups it holds (pending or folded), for the cardinality cap
        self._known: dict[int, set[int]] = {}
        # (window, throwing code's group) -> exception types -> count
        self._thrown: dict[tuple[int, GroupKey], Counter[str]] = {}
        # (window, service, environment, reason) -> span name -> count
        self._names: dict[tuple[int, str, str, str], Counter[str]] = {}
        self._pending_count = 0
        self.overflowed_spans = 0
        self.last_gids: list[int] = []
        self._stats = BatchStats()  # of the add in progress
        self._native = (
            None
            if native_windows is None
            else native_windows(window_ns, max_groups_per_window, cpu_time_attribute)
        )

    def __len__(self) -> int:
        if self._native is not None:
            return len(self._native)
        keys: set[tuple[int, int]] = set()
        for d in (self._pending, self._folded):
            for w, groups in d.items():
                keys.update((w, g) for g in groups)
        return len(keys)

    def add(self, spans: Sequence[Span], stats: BatchStats | None = None) -> BatchStats:
        st = self._stats = stats if stats is not None else BatchStats()
        attributor = self.attributor
        gids = attributor.group_ids(spans)
        if self._native is not None:
            over = self._native.add(spans, gids, self._overflow, self._cpu_ns, self._account_thrown)
            st.overflow += over
            self.overflowed_spans += over
        else:
            self._add_pending(spans, gids)
        n = len(spans)
        st.spans += n
        if attributor.unattributed.isdisjoint(gids):  # the common case: one pass in C
            st.attributed += n
        else:
            unattributed: set[int] = set()
            for gid, count in Counter(gids).items():
                if attributor.is_attributed(gid):
                    st.attributed += count
                else:
                    reason = attributor.group(gid).unattributed_reason
                    st.unattributed_by_reason[reason] = st.unattributed_by_reason.get(reason, 0) + count
                    unattributed.add(gid)
            self._count_names(spans, gids, unattributed)
        self._pending_count += n
        self.last_gids = gids
        if self._pending_count >= self.fold_every:
            self.fold()
        return st

    def _add_pending(self, spans: Sequence[Span], gids: list[int]) -> None:
        """The Python path's per-span loop: durations appended per (window, group), the rest
        accounted as it comes (see :meth:`fold`)."""
        st = self._stats
        window_ns = self.window_ns
        cap = self.max_groups_per_window
        pending = self._pending
        cpu_attr = self.cpu_time_attribute
        last_w = -1
        win: dict[int, list[int]] = {}
        for i, (span, gid) in enumerate(zip(spans, gids, strict=True)):
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
                    gid = gids[i] = self._overflow(gid)
                    st.overflow += 1
                    self.overflowed_spans += 1
                    durations = win.get(gid)
                if durations is None:
                    durations = win[gid] = []
                    known.add(gid)
            d = span.end_unix_nano - start
            durations.append(d)
            if (
                span.status_code == STATUS_ERROR
                or span.sample_probability != 1.0
                or span.exceptions
                or (cpu_attr and cpu_attr in span.attributes)
            ):
                self._account_extra(w, gid, d, span)

    def _overflow(self, gid: int) -> int:
        return self.attributor.overflow_group(self.attributor.group(gid))

    def _cpu_ns(self, value: object) -> int:
        return cpu_time_ns(value, self.cpu_time_unit_ns)

    def _count_names(self, spans: Sequence[Span], gids: Sequence[int], unattributed: set[int]) -> None:
        group = self.attributor.group
        window_ns = self.window_ns
        for span, g in zip(spans, gids, strict=True):
            if g not in unattributed:
                continue
            k = group(g)
            start = span.start_unix_nano
            key = (start - start % window_ns, k.service, k.environment, k.unattributed_reason)
            names = self._names.get(key)
            if names is None:
                names = self._names[key] = Counter()
            name = span.name
            if name not in names and len(names) >= self.max_names_per_window:
                name = "(other)"
            names[name] += 1

    def _account_extra(self, w: int, gid: int, d: int, span: Span) -> None:
        groups = self._extra.get(w)
        if groups is None:
            groups = self._extra[w] = {}
        x = groups.get(gid)
        if x is None:
            x = groups[gid] = [0, 0, 0, 0, 0, 0]
        wt = weight_milli(span.sample_probability)
        if span.status_code == STATUS_ERROR:
            x[0] += 1
            x[2] += wt - 1000
        x[1] += wt - 1000
        x[3] += d * wt // 1000 - d
        if self.cpu_time_attribute:
            x[4] += cpu_time_ns(span.attributes.get(self.cpu_time_attribute), self.cpu_time_unit_ns)
        if span.exceptions:
            x[5] += len(span.exceptions)
            self._account_thrown(w, gid, span)

    def _account_thrown(self, w: int, gid: int, span: Span) -> None:
        attributor = self.attributor
        k = attributor.group(gid)
        for exc in span.exceptions:
            site = attributor.throw_site(span.resource, exc)
            if isinstance(site, Unattributed):
                reasons = self._stats.exceptions_unattributed
                reasons[site.reason] = reasons.get(site.reason, 0) + 1
                continue
            thrower = k._replace(
                repository=site.repository, module=site.module, owners=site.owners, unattributed_reason=""
            )
            self._count_thrown(w, thrower, exc.type or "(unknown)")

    def _count_thrown(self, w: int, thrower: GroupKey, exc_type: str) -> None:
        types = self._thrown.get((w, thrower))
        if types is None:
            types = self._thrown[(w, thrower)] = Counter()
        if exc_type not in types and len(types) >= self.max_exception_types:
            exc_type = "(other)"
        types[exc_type] += 1

    def add_log_exceptions(
        self, items: Sequence[LogException], stats: BatchStats | None = None
    ) -> BatchStats:
        """Exceptions recorded as OTLP log records: each counts on the module its stack trace
        threw in, with the commit and deploy live at its time (there is no span to count on)."""
        st = stats if stats is not None else BatchStats()
        attributor = self.attributor
        window_ns = self.window_ns
        for item in items:
            res = item.resource
            t = item.time_unix_nano
            site = attributor.throw_site(res, item.exception)
            st.log_exceptions += 1
            if isinstance(site, Unattributed):
                st.exceptions_unattributed[site.reason] = st.exceptions_unattributed.get(site.reason, 0) + 1
                continue
            commit = attributor.static_commit(res)
            dep_commit, dep_id = attributor.deploy_at(res.service, res.environment, t)
            if not commit:
                commit, deploy_id = dep_commit, dep_id
            else:
                deploy_id = dep_id if dep_commit == commit else ""
            thrower = GroupKey(
                res.service, res.environment, site.repository, site.module, site.owners, commit, deploy_id, ""
            )
            self._count_thrown(t - t % window_ns, thrower, item.exception.type or "(unknown)")
        return st

    def fold(self) -> None:
        """Fold pending durations into accumulators (bounded memory; same results).  The native
        windows accumulate as spans come: nothing is pending."""
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
                errors, adj_d, err_adj_d, dsum_adj_d, cpu, exc_events = x if x is not None else _NO_EXTRA
                bins = bins_of(ds)
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
                        bins,
                        cpu,
                        exc_events,
                    ]
                else:
                    acc[_SPANS] += n
                    acc[_ADJ] += 1000 * n + adj_d
                    acc[_ERR] += errors
                    acc[_ERR_ADJ] += 1000 * errors + err_adj_d
                    acc[_DSUM] += dsum
                    acc[_DSUM_ADJ] += dsum + dsum_adj_d
                    acc[_DMIN] = min(acc[_DMIN], min(ds))
                    acc[_DMAX] = max(acc[_DMAX], max(ds))
                    b: dict[int, int] = acc[_BINS]
                    for k, v in bins.items():
                        b[k] = b.get(k, 0) + v
                    acc[_CPU] += cpu
                    acc[_EXC] += exc_events
        self._pending.clear()
        self._extra.clear()
        self._pending_count = 0

    def _windows(self) -> Iterable[int]:
        return self._folded if self._native is None else self._native.windows()

    def _take_rows(self, w: int) -> list[AggregateRow]:
        """Window ``w``'s rows, taken out of the accumulators (of either path)."""
        accs: Iterable[tuple[int, Any]]
        if self._native is None:
            accs = self._folded.pop(w, {}).items()
        else:
            accs = ((t[0], t[1:]) for t in self._native.take(w))
        group = self.attributor.group
        # an accumulator: spans, adjusted, errors, adjusted errors, duration sum, adjusted sum,
        # min, max, bins (AggregateRow's order), then CPU time and exception events
        out = []
        for gid, (n, adj, err, err_adj, dsum, dsum_adj, dmin, dmax, bins, cpu, exc) in accs:
            row = AggregateRow(w, *group(gid), n, adj, err, err_adj, dsum, dsum_adj, dmin, dmax, bins)
            out.append(row._replace(cpu_time_sum_ns=cpu, exception_events=exc) if cpu or exc else row)
        return out

    def _thrown_rows(self, windows: Iterable[int] | None) -> list[AggregateRow]:
        keys = [k for k in self._thrown if windows is None or k[0] in windows]
        out = []
        for w, thrower in keys:
            types = self._thrown.pop((w, thrower))
            out.append(
                _empty_row(w, thrower)._replace(exceptions=sum(types.values()), exception_types=dict(types))
            )
        return out

    def _name_rows(self, windows: Iterable[int] | None) -> list[NameRow]:
        keys = [k for k in self._names if windows is None or k[0] in windows]
        out = []
        for key in sorted(keys):
            for name, n in sorted(self._names.pop(key).items()):
                out.append(NameRow(*key, name, n))
        return out

    def collect(self, now_unix_nano: int) -> list[AggregateRow]:
        """Drain the windows that ended at least ``allowed_lateness_ns`` before ``now``."""
        self.fold()
        limit = now_unix_nano - self.allowed_lateness_ns - self.window_ns
        done = {w for w in self._windows() if w <= limit} | {w for w, _ in self._thrown if w <= limit}
        out: list[AggregateRow] = []
        for w in sorted(done):
            out.extend(self._take_rows(w))
            self._known.pop(w, None)
        return merge_sorted(out, self._thrown_rows(done))

    def drain(self) -> list[AggregateRow]:
        """Drain every window, in a deterministic order."""
        self.fold()
        out: list[AggregateRow] = []
        for w in sorted(self._windows()):
            out.extend(self._take_rows(w))
        self._known.clear()
        return merge_sorted(out, self._thrown_rows(None))

    def drain_names(self) -> list[NameRow]:
        """The unattributed span names counted so far (every window), in a deterministic order."""
        return self._name_rows(None)
