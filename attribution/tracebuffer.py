"""The trace buffer: a trace's spans are held until the trace is complete, then their self
times and own errors (:mod:`attribution.selftime`) go to a :class:`~attribution.aggregate.SelfTimes`
(or its native twin).
Pure; one buffer per partition (stream), per receiver pipeline (direct) or per file (ingest).

**Completion is a pure function of the records**, so that a replay decides the same.  The
buffer sees records in order: ``add_record(offset, timestamp_ms, spans)``.  A trace's *entry*
opens with the first record holding one of its spans; its deadline is that record's
timestamp plus ``wait_ms``.  The *watermark* is the highest record timestamp seen.  An entry
completes when

* the watermark has reached its deadline (checked when a record raises the watermark, before
  its spans are added: they arrive after the deadline), or
* after a record's spans are added, more than ``max_spans`` spans were added to the buffer since its first record (the cap: the
  buffer never holds more than ``max_spans`` spans plus one record's, and the oldest traces
  complete early, counted in :attr:`BufferStats.early`).

Both rules look at one entry and the records after its first one only, never at what else is
buffered, so a replay that starts from the oldest buffered record decides the same (see
:meth:`TraceBuffer.rebuild_state`).  A span whose trace has already completed opens a new entry:
without its parent there, it keeps its whole duration as self time (counted as late).  An idle
stream is completed by :meth:`TraceBuffer.complete_all` (the caller records that decision).

**Two parts.**  :class:`TraceBuffer` maps the caller's group ids to its own group indices and
turns what completes into rows and rebuild states; its *core* does the per-record work above:
:class:`TraceCore` here (the reference), or ``prodloop_native.TraceCore``, its twin
(``tests/unit/test_native.py`` proves both decide the same).

**Memory.**  Per buffered span: 16 bytes of ids in a ``bytearray`` and four int64 (start, end,
group index and error flag, sampling weight) in an ``array``; per trace a small list (the
native core: the same 48 bytes per span in a packed struct, about 150 bytes per trace).
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias

from attribution.aggregate import AggregateRow, SelfTimes, SelfTimeTotals, self_time_rows, weight_milli
from attribution.attribute import GroupKey
from attribution.model import STATUS_ERROR, Span

_NO_PARENT = b"\0" * 8
_RECENT_KEPT = 100_000  # completed trace ids remembered to tell late spans from orphans (a metric only)

# entry slots
_IDS, _NUMS, _FIRST, _DEADLINE, _CREC, _WBEFORE, _LAST, _SEQ, _GHOST, _LATE = range(10)


class Ghost(NamedTuple):
    """A trace alive across a rebuild's start whose first record lies before it: during the
    rebuild its spans only keep it open (they were already counted), then it completes as before."""

    trace_id: bytes
    deadline_ms: int
    counted_from: int  # spans added before the rebuild's start since its first record, negated


class RebuildState(NamedTuple):
    """What a replay needs to rebuild the buffer of a committed position exactly: read the
    records from ``low_offset`` on, starting from this watermark, with these ghosts."""

    low_offset: int
    watermark_ms: int | None
    ghosts: tuple[Ghost, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "low": self.low_offset,
            "wm": self.watermark_ms,
            "ghosts": [[g.trace_id.hex(), g.deadline_ms, g.counted_from] for g in self.ghosts],
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> RebuildState:
        return RebuildState(
            int(doc["low"]),
            None if doc.get("wm") is None else int(doc["wm"]),
            tuple(Ghost(bytes.fromhex(t), int(d), int(c)) for t, d, c in doc.get("ghosts", ())),
        )


@dataclass
class BufferStats:
    """Counts since the last :meth:`TraceBuffer.take_stats`."""

    traces: int = 0  # completed traces
    spans: int = 0  # spans whose self time was computed
    orphans: int = 0  # spans whose parent is not in their trace (late spans excluded)
    late: int = 0  # spans of a trace that had already completed
    early: int = 0  # traces completed early by the span cap
    idle: int = 0  # traces completed by complete_all (an idle stream, the end of a file)
    peak_spans: int = 0  # the most spans buffered at once
    buffered: int = 0  # spans buffered when the counts were taken


# one run of a record's spans of one trace: (trace id, per span its id and parent id, per span
# start, end, group index * 2 + error and weight as native int64s, the number of spans)
PackedRun: TypeAlias = tuple[bytes, bytes | bytearray, bytes, int]


def pack_runs(spans: Sequence[Span], gidx: Sequence[int]) -> list[PackedRun]:
    """What the buffer keeps of a record's spans (``gidx``: each span's group index), per run
    of consecutive spans of one trace: a trace's spans mostly come in runs, so its entry is
    looked up once per run."""
    out: list[PackedRun] = []
    last_tid: bytes | None = None
    ids = bytearray()
    nums: array[int] = array("q")
    extend = nums.extend
    # unpacking the span tuple is faster than its attributes (12 fields: see Span)
    for (_, tid, sid, _, start, end, status, _, _, pid, p, _), g in zip(spans, gidx, strict=True):
        if tid != last_tid:
            if last_tid is not None:
                out.append((last_tid, ids, nums.tobytes(), len(nums) >> 2))
                ids = bytearray()
                nums = array("q")
                extend = nums.extend
            last_tid = tid
        ids += sid
        ids += pid or _NO_PARENT
        extend((start, end, g * 2 + (status == STATUS_ERROR), 1000 if p == 1.0 else weight_milli(p)))
    if last_tid is not None:
        out.append((last_tid, ids, nums.tobytes(), len(nums) >> 2))
    return out


class _GroupCache(dict[int, int]):
    """A caller's group id -> the buffer's group index; a miss resolves the id's group (one
    lookup per span, no second pass for misses)."""

    def __init__(self, index: Callable[[GroupKey], int], group: Callable[[int], GroupKey]) -> None:
        super().__init__()
        self._index = index
        self._group = group

    def __missing__(self, gid: int) -> int:
        gi = self[gid] = self._index(self._group(gid))
        return gi


class TraceCore:
    """The per-record work of a :class:`TraceBuffer` (see the module docstring for the rules):
    the reference of ``prodloop_native.TraceCore``, method for method (:class:`Core`)."""

    def __init__(self, window_ns: int, wait_ms: int, max_spans: int, exact: bool) -> None:
        """``exact``: keep what :meth:`rebuild_state` needs (the stream; it calls that after
        every batch, which also bounds what is kept)."""
        if wait_ms < 0 or max_spans < 1:
            raise ValueError("trace_wait must be >= 0 and max_buffered_spans >= 1")
        self.exact = exact
        self.wait_ms = wait_ms
        self.max_spans = max_spans
        self.selfs = SelfTimes(window_ns)
        self.stats = BufferStats()
        self.watermark: int | None = None  # ms
        self.buffered = 0  # spans held now
        self._count = 0  # spans added since this buffer started (or rebuilt)
        self._entries: dict[bytes, list[Any]] = {}
        self._deadlines: list[tuple[int, int, bytes]] = []  # heap of (deadline, seq, trace id)
        self._order: deque[tuple[int, int, bytes]] = deque()  # (count at its first record, seq, trace id)
        self._seq = 0
        # completed entries whose last record may lie at or after a future low offset:
        # (trace id, first offset, last offset, deadline, count at first record)
        self._completed: list[tuple[bytes, int, int, int, int]] = []
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        """The number of traces buffered."""
        return len(self._entries)

    def add(
        self, offset: int, timestamp_ms: int, spans: Sequence[Span], gidx: Sequence[int], emit: bool = True
    ) -> None:
        """Buffer one record's spans (``gidx``: each span's group index), then complete what is due.
        ``emit=False`` (a rebuild) completes without counting: it was counted before."""
        entries = self._entries
        w_before = self.watermark
        if timestamp_ms >= 0 and (w_before is None or timestamp_ms > w_before):
            self.watermark = timestamp_ms
            self._complete_deadlines(emit)  # before this record's spans: they arrive after that
        c_rec = self._count
        base = timestamp_ms if timestamp_ms >= 0 else (w_before if w_before is not None else 0)
        deadline = base + self.wait_ms
        for tid, ids, nums, k in pack_runs(spans, gidx):
            e = entries.get(tid)
            if e is None:
                self._seq += 1
                e = [bytearray(), array("q"), offset, deadline, c_rec, w_before, offset, self._seq, -1, False]
                e[_LATE] = tid in self._recent
                entries[tid] = e
                heapq.heappush(self._deadlines, (deadline, self._seq, tid))
                self._order.append((c_rec, self._seq, tid))
            e[_LAST] = offset
            if e[_GHOST] >= 0:
                e[_GHOST] += k
            else:
                e[_IDS] += ids
                e[_NUMS].frombytes(nums)
        n = len(spans)
        self._count += n
        self.buffered += n
        if self.buffered > self.stats.peak_spans:
            self.stats.peak_spans = self.buffered
        self._complete_capped(emit)

    def _complete_deadlines(self, emit: bool) -> None:
        entries = self._entries
        wm = self.watermark
        heap = self._deadlines
        if wm is not None:
            while heap and heap[0][0] <= wm:
                _, seq, tid = heapq.heappop(heap)
                e = entries.get(tid)
                if e is not None and e[_SEQ] == seq:
                    self._finish(tid, e, emit)

    def _complete_capped(self, emit: bool) -> None:
        entries = self._entries
        order = self._order
        limit = self._count - self.max_spans
        while order and order[0][0] < limit:
            _, seq, tid = order.popleft()
            e = entries.get(tid)
            if e is not None and e[_SEQ] == seq:
                if emit:
                    self.stats.early += 1
                self._finish(tid, e, emit)

    def advance(self, watermark_ms: int) -> None:
        """Move the watermark to ``watermark_ms`` (direct mode: the arrival clock) and complete
        what is due."""
        if self.watermark is None or watermark_ms > self.watermark:
            self.watermark = watermark_ms
        self._complete_deadlines(True)

    def complete_all(self, emit: bool = True) -> int:
        """Complete every buffered trace now (an idle stream, the end of a file); returns how many."""
        n = len(self._entries)
        for tid, e in list(self._entries.items()):
            self._finish(tid, e, emit)
        if emit:
            self.stats.idle += n
        self._deadlines.clear()
        self._order.clear()
        return n

    def _finish(self, tid: bytes, e: list[Any], emit: bool) -> None:
        del self._entries[tid]
        if self.exact:
            self._completed.append((tid, e[_FIRST], e[_LAST], e[_DEADLINE], e[_CREC]))
        recent = self._recent
        recent[tid] = None
        if len(recent) > _RECENT_KEPT:
            recent.popitem(last=False)
        if e[_GHOST] >= 0:
            self.buffered -= e[_GHOST]
            return
        nums: array[int] = e[_NUMS]
        n = len(nums) // 4
        self.buffered -= n
        if not emit:
            return
        st = self.stats
        st.traces += 1
        st.spans += n
        orphans = self.selfs.add_packed(e[_IDS], nums)
        if orphans:
            if e[_LATE]:
                st.late += orphans
            else:
                st.orphans += orphans

    # -- exactly once ----------------------------------------------------------------------

    def rebuild_state(self, end_offset: int) -> tuple[int, int | None, list[tuple[bytes, int, int]]]:
        """:meth:`TraceBuffer.rebuild_state`'s fields, the ghosts as tuples."""
        low, wm, counted = end_offset, self.watermark, self._count
        for e in self._entries.values():
            if e[_GHOST] < 0 and e[_FIRST] < low:
                low, wm, counted = e[_FIRST], e[_WBEFORE], e[_CREC]
        # entries completed before ``low`` whose last record lies before it can never matter again
        self._completed = kept = [c for c in self._completed if c[2] >= low]
        return low, wm, [(tid, dl, c - counted) for tid, first, _, dl, c in kept if first < low]

    def restore(self, watermark_ms: int | None, ghosts: Iterable[tuple[bytes, int, int]]) -> None:
        """Start a rebuild (an empty buffer) at ``watermark_ms`` with ``ghosts``
        ``(trace id, deadline, counted from)``, in the order given."""
        if self._entries:
            raise ValueError("restore needs an empty buffer")
        self.watermark = watermark_ms
        self._count = 0
        self._completed = []
        for trace_id, deadline_ms, counted_from in ghosts:
            self._seq += 1
            self._entries[trace_id] = [
                None,
                None,
                -1,
                deadline_ms,
                counted_from,
                None,
                -1,
                self._seq,
                0,
                False,
            ]
            heapq.heappush(self._deadlines, (deadline_ms, self._seq, trace_id))
            self._order.append((counted_from, self._seq, trace_id))

    def take_counts(self) -> tuple[int, int, int, int, int, int, int, int]:
        """The counts since the last call, as :class:`BufferStats`'s fields in order."""
        st, self.stats = self.stats, BufferStats(peak_spans=self.buffered)
        return st.traces, st.spans, st.orphans, st.late, st.early, st.idle, st.peak_spans, self.buffered

    def drain(self) -> list[SelfTimeTotals]:
        """The self-time totals of the traces completed since the last call."""
        return self.selfs.drain()

    def nbytes(self) -> int:
        """The bytes of span data held (ids and numbers), for the memory figures."""
        return sum(
            len(e[_IDS]) + e[_NUMS].itemsize * len(e[_NUMS]) for e in self._entries.values() if e[_GHOST] < 0
        )


class Core(Protocol):
    """What :class:`TraceBuffer` asks of its core: :class:`TraceCore` or its native twin."""

    @property
    def buffered(self) -> int: ...

    @property
    def watermark(self) -> int | None: ...

    def __len__(self) -> int: ...

    def add(
        self, offset: int, timestamp_ms: int, spans: Sequence[Span], gidx: Sequence[int], emit: bool = True
    ) -> None: ...

    def advance(self, watermark_ms: int) -> None: ...

    def complete_all(self, emit: bool = True) -> int: ...

    def rebuild_state(self, end_offset: int) -> tuple[int, int | None, list[tuple[bytes, int, int]]]: ...

    def restore(self, watermark_ms: int | None, ghosts: Iterable[tuple[bytes, int, int]]) -> None: ...

    def take_counts(self) -> tuple[int, int, int, int, int, int, int, int]: ...

    def drain(self) -> list[SelfTimeTotals]: ...

    def nbytes(self) -> int: ...


# how a core is made: (window_ns, wait_ms, max_spans, exact) -> core
CoreFactory: TypeAlias = Callable[[int, int, int, bool], Core]


class TraceBuffer:
    """Holds the spans of incomplete traces (see the module docstring for the rules) in its
    core, and keeps the group keys its rows name."""

    def __init__(
        self,
        *,
        window_ns: int,
        wait_ms: int,
        max_spans: int,
        exact: bool = False,
        core: CoreFactory = TraceCore,
    ) -> None:
        """``exact``: keep what :meth:`rebuild_state` needs (the stream); ``core``: what makes
        the core (:class:`TraceCore`, or ``prodloop_native.TraceCore``: see
        :func:`collector.processing.native.trace_core`)."""
        self.core = core(window_ns, wait_ms, max_spans, exact)
        # group keys by index (the core holds indices); the caller's group ids map to them
        self.groups: list[GroupKey] = []
        self._gindex: dict[GroupKey, int] = {}
        self._gcache: _GroupCache | None = None
        self._gcache_owner: object = None

    def __len__(self) -> int:
        """The number of traces buffered."""
        return len(self.core)

    @property
    def buffered(self) -> int:
        """The spans held now."""
        return self.core.buffered

    @property
    def watermark(self) -> int | None:
        """The highest record timestamp seen (ms), or the arrival clock (direct mode)."""
        return self.core.watermark

    def group_indices(
        self, gids: Sequence[int], group: Callable[[int], GroupKey], owner: object
    ) -> list[int]:
        """This buffer's indices of the caller's group ids (``group`` resolves one; ``owner``
        is what the ids belong to, e.g. the attributor)."""
        cache = self._gcache
        if cache is None or owner is not self._gcache_owner:
            cache = self._gcache = _GroupCache(self._group_index, group)
            self._gcache_owner = owner
        return list(map(cache.__getitem__, gids))

    def _group_index(self, k: GroupKey) -> int:
        gi = self._gindex.get(k)
        if gi is None:
            gi = self._gindex[k] = len(self.groups)
            self.groups.append(k)
        return gi

    def add_record(
        self, offset: int, timestamp_ms: int, spans: Sequence[Span], gidx: Sequence[int], emit: bool = True
    ) -> None:
        """Buffer one record's spans (``gidx``: each span's group index, from
        :meth:`group_indices`), then complete what is due.  ``emit=False`` (a rebuild)
        completes without counting: it was counted before."""
        self.core.add(offset, timestamp_ms, spans, gidx, emit)

    def advance(self, watermark_ms: int) -> None:
        """Move the watermark to ``watermark_ms`` (direct mode: the arrival clock) and complete
        what is due."""
        self.core.advance(watermark_ms)

    def complete_all(self, emit: bool = True) -> int:
        """Complete every buffered trace now (an idle stream, the end of a file); returns how many."""
        return self.core.complete_all(emit)

    def rebuild_state(self, end_offset: int) -> RebuildState:
        """The state to rebuild this buffer from, as of the record before ``end_offset``: its
        oldest buffered record (``end_offset`` when none), the watermark before that record, and
        the traces alive across it whose first record came before it (ghosts)."""
        low, wm, ghosts = self.core.rebuild_state(end_offset)
        return RebuildState(low, wm, tuple(Ghost(*g) for g in ghosts))

    def restore(self, state: RebuildState) -> None:
        """Start a rebuild from ``state`` (an empty buffer); then feed the records from
        ``state.low_offset`` with ``emit=False`` up to the committed end."""
        ghosts: list[Ghost] = sorted(state.ghosts, key=lambda g: g.counted_from)
        self.core.restore(state.watermark_ms, ghosts)

    def take_rows(self) -> list[AggregateRow]:
        """The self-time rows of the traces completed since the last call."""
        return self_time_rows(self.core.drain(), self.groups)

    def take_stats(self) -> BufferStats:
        """The counts since the last call, and the spans buffered now."""
        return BufferStats(*self.core.take_counts())

    def nbytes(self) -> int:
        """The bytes of span data held (ids and numbers), for the memory figures."""
        return self.core.nbytes()
