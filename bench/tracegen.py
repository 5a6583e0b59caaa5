"""The benches' trace trees: whole traces split over Collector-like batches (bench/ingest.py,
bench/kafka_e2e.py).

Each trace is a tree of depth 3-6 (a root, children with fan-out 1-4, some siblings
overlapping as in async fan-out, a few children outliving their parent), 8-150 spans, over
the bench's 5 services (a child stays in its parent's service or calls another).  A trace's
spans go out in end order (children before their parents, as SDKs export ended spans), in 2-4
parts that land in different, nearby batches, interleaved with other traces' parts: a
batch is what a Collector's batch processor sends.  Every parent id names a span of the
trace, so no span is an orphan.

The generator knows each span's self time (its duration minus the union of its children's
intervals clipped to it), so the benches can check what prodloop computed against it.

Serialised batches come with the byte offsets of every id (trace ids, span ids and parent
references) and of every start/end time, so a bench can stamp copies with fresh ids (the
copy number in an id's first 4 bytes) or move them in time without re-encoding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

SERVICES = ["frontend", "checkout", "payments", "inventory", "search"]
N_MODULES = 50
FILES_PER_MODULE = 24  # 1,200 files
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

_ATTR_KEYS = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "server.address",
    "network.peer.port",
    "thread.id",
    "user.tier",
]


def module_path(m: int) -> str:
    return f"services/{SERVICES[m % len(SERVICES)]}/mod{m:02d}"


@dataclass
class GenSpan:
    trace_id: bytes
    span_id: bytes
    parent_id: bytes  # b"" for the root
    service: int
    start: int
    end: int
    error: bool
    children: list[GenSpan] = field(default_factory=list)

    def self_time(self) -> int:
        """Duration minus the union of the children's intervals, clipped to this span."""
        cuts = sorted((max(c.start, self.start), min(c.end, self.end)) for c in self.children)
        covered, cur_s, cur_e = 0, self.start, self.start
        for a, b in cuts:
            if b <= a:
                continue
            if a > cur_e:
                covered += cur_e - cur_s
                cur_s, cur_e = a, b
            elif b > cur_e:
                cur_e = b
        covered += cur_e - cur_s
        return self.end - self.start - covered


@dataclass
class Trace:
    spans: list[GenSpan]  # in end order: children before their parents
    parts: int = 0  # batches it landed in


class _Unique:
    """Hands out values never handed out before (ids, times), so that byte offsets are exact."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[bytes | int] = set()

    def ident(self, n: int) -> bytes:
        while True:
            v = self.rng.randbytes(n)
            # unique past the 4 bytes a copy stamps over, so copies stay unique too
            if v[4:] not in self.seen and v[:4] != b"\0\0\0\0":
                self.seen.add(v[4:])
                return v

    def time(self, t: int) -> int:
        while t in self.seen:
            t += 1
        self.seen.add(t)
        return t


def gen_trace(rng: random.Random, uniq: _Unique, start: int) -> Trace:
    """One trace tree starting at ``start`` (ns)."""
    depth = rng.randint(3, 6)
    budget = min(150, max(8, int(math.exp(rng.gauss(3.4, 0.6)))))  # median ~30 spans
    tid = uniq.ident(16)
    root_dur = int(math.exp(rng.gauss(17.7, 0.8)))  # ~50 ms median
    root = GenSpan(tid, uniq.ident(8), b"", rng.randrange(len(SERVICES)), start, start + root_dur, False)
    spans = [root]
    level = [root]
    for _ in range(1, depth):
        nxt: list[GenSpan] = []
        for i, parent in enumerate(level):
            if len(spans) >= budget:
                break
            # the first node of each level always has children, so the tree reaches ``depth``
            k = rng.choice([1, 2, 2, 3, 4]) if i == 0 else rng.choice([0, 0, 1, 2, 3, 4])
            k = min(k, budget - len(spans))
            if k <= 0:
                continue
            s, e = parent.start, parent.end
            dur = e - s
            if rng.random() < 0.35:  # async fan-out: siblings overlap
                ivs = []
                for _ in range(k):
                    a = s + int(dur * rng.uniform(0.0, 0.3))
                    b = a + int(dur * rng.uniform(0.2, 0.65))
                    ivs.append((a, b))
            else:  # sequential calls with gaps between them
                pts = sorted(s + int(dur * rng.uniform(0.02, 0.98)) for _ in range(2 * k))
                ivs = [(pts[2 * j], pts[2 * j + 1]) for j in range(k)]
            for a, b in ivs:
                if rng.random() < 0.02:  # fire-and-forget: outlives its parent
                    b = e + int(dur * rng.uniform(0.05, 0.5))
                svc = parent.service if rng.random() < 0.7 else rng.randrange(len(SERVICES))
                c = GenSpan(tid, uniq.ident(8), parent.span_id, svc, a, max(b, a + 1), rng.random() < 0.02)
                parent.children.append(c)
                spans.append(c)
                nxt.append(c)
        level = nxt
        if not level or len(spans) >= budget:
            break
    for sp in spans:
        sp.start = uniq.time(sp.start)
        sp.end = uniq.time(max(sp.end, sp.start + 1))
    spans.sort(key=lambda sp: sp.end)
    return Trace(spans)


def gen_batches(
    seed: int, sizes: Sequence[int], start_of: Callable[[int], int]
) -> tuple[list[list[GenSpan]], list[Trace]]:
    """Batches of exactly ``sizes[i]`` spans (the last may hold more: no trace runs past the
    end), and the traces in them.  A trace begun in batch ``b`` starts at ``start_of(b)``; its
    2-4 parts go to batch ``b`` and the next 1-3 batches after each other (a part that does not
    fit where it lands moves on to the next batch)."""
    rng = random.Random(seed)
    uniq = _Unique(rng)
    n = len(sizes)
    pending: list[tuple[int, Trace, list[GenSpan]]] = []  # (ready at batch, trace, spans)
    batches: list[list[GenSpan]] = []
    traces: list[Trace] = []
    for b, size in enumerate(sizes):
        out: list[GenSpan] = []
        last = b == n - 1
        while True:
            ready = [p for p in pending if p[0] <= b]
            if not ready:
                if len(out) >= size:
                    break
                tr = gen_trace(rng, uniq, start_of(b) + rng.randrange(0, 2 * 10**9))
                traces.append(tr)
                k = min(rng.randint(2, 4), len(tr.spans))
                cuts = sorted(rng.sample(range(1, len(tr.spans)), k - 1))
                bounds = [0, *cuts, len(tr.spans)]
                at = b
                for j in range(k):
                    pending.append((min(at, n - 1), tr, tr.spans[bounds[j] : bounds[j + 1]]))
                    at += rng.randint(1, 2)
                continue
            item = ready[0]
            pending.remove(item)
            _, tr, part = item
            room = size - len(out)
            if room <= 0 and not last:
                pending.insert(0, (b + 1, tr, part))
                break
            if len(part) > room and not last:
                out.extend(part[:room])
                pending.insert(0, (b + 1, tr, part[room:]))
            else:
                out.extend(part)
        batches.append(out)
    assert not pending, "every part placed"
    seen: dict[bytes, set[int]] = {}
    for i, batch in enumerate(batches):
        for sp in batch:
            seen.setdefault(sp.trace_id, set()).add(i)
    for tr in traces:
        tr.parts = len(seen[tr.spans[0].trace_id])
    return batches, traces


@dataclass
class Encoded:
    """One serialised request, and where its ids and times are in it."""

    data: bytes
    id_offsets: list[int]  # every occurrence of a trace id, span id or parent id
    time_offsets: list[int]  # every start and end time (fixed64, little-endian)
    spans: int


def encode(spans: Sequence[GenSpan], seed: int) -> Encoded:
    """``spans`` as one ``ExportTraceServiceRequest``: a ``ResourceSpans`` per service, in
    the order they appear, ~10 attributes per span, as the bench's workload has had."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    by_svc: dict[int, list[GenSpan]] = {}
    for sp in spans:
        by_svc.setdefault(sp.service, []).append(sp)
    for svc_i, group in by_svc.items():
        rs = req.resource_spans.add()
        for k, v in (
            ("service.name", SERVICES[svc_i]),
            ("deployment.environment.name", "prod"),
            ("service.version", "1.4.2"),
        ):
            rs.resource.attributes.add(key=k, value=AnyValue(string_value=v))
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        for g in group:
            m = rng.randrange(N_MODULES)
            while m % len(SERVICES) != svc_i and rng.random() < 0.8:
                m = rng.randrange(N_MODULES)
            f = rng.randrange(FILES_PER_MODULE)
            sp = ss.spans.add()
            sp.trace_id = g.trace_id
            sp.span_id = g.span_id
            if g.parent_id:
                sp.parent_span_id = g.parent_id
            sp.name = f"op{m}.{f % 5}"
            sp.kind = PbSpan.SPAN_KIND_SERVER if not g.parent_id else PbSpan.SPAN_KIND_INTERNAL
            sp.start_time_unix_nano = g.start
            sp.end_time_unix_nano = g.end
            if g.error:
                sp.status.code = Status.STATUS_CODE_ERROR
            attrs = [
                KeyValue(
                    key="code.file.path",
                    value=AnyValue(string_value=f"/srv/app/{module_path(m)}/file{f:02d}.py"),
                ),
                KeyValue(key="code.function.name", value=AnyValue(string_value=f"handler_{f}")),
                KeyValue(key="code.line.number", value=AnyValue(int_value=10 + f)),
                KeyValue(key=_ATTR_KEYS[0], value=AnyValue(string_value=rng.choice(["GET", "POST"]))),
                KeyValue(key=_ATTR_KEYS[1], value=AnyValue(string_value=f"/api/v1/res{m}/{{id}}")),
                KeyValue(key=_ATTR_KEYS[2], value=AnyValue(int_value=rng.choice([200, 200, 200, 404, 500]))),
                KeyValue(key=_ATTR_KEYS[3], value=AnyValue(string_value=f"host-{rng.randrange(20)}")),
                KeyValue(key=_ATTR_KEYS[4], value=AnyValue(int_value=rng.randrange(1024, 65535))),
                KeyValue(key=_ATTR_KEYS[5], value=AnyValue(int_value=rng.randrange(1, 64))),
                KeyValue(key=_ATTR_KEYS[6], value=AnyValue(string_value=rng.choice(["free", "pro", "ent"]))),
            ]
            rng.shuffle(attrs)  # neutral: the key the ceiling looks for is anywhere
            sp.attributes.extend(attrs)
    data = req.SerializeToString()
    # where every id is: a trace id once per span, a span id once plus once per child in here
    expected: dict[bytes, int] = {}
    for g in spans:
        expected[g.trace_id] = expected.get(g.trace_id, 0) + 1
        expected[g.span_id] = expected.get(g.span_id, 0) + 1
        if g.parent_id:
            expected[g.parent_id] = expected.get(g.parent_id, 0) + 1
    id_offsets = []
    for ident, count in expected.items():
        found = _find_all(data, ident)
        assert len(found) == count, "ids must only occur where they are meant to"
        id_offsets.extend(found)
    time_offsets = []
    for g in spans:
        for t in (g.start, g.end):
            found = _find_all(data, t.to_bytes(8, "little"))
            assert len(found) == 1, "times must be unique"
            time_offsets.append(found[0])
    return Encoded(data, sorted(id_offsets), time_offsets, len(spans))


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out = []
    pos = data.find(needle)
    while pos >= 0:
        out.append(pos)
        pos = data.find(needle, pos + 1)
    return out


def stamp(enc: Encoded, copy: int, shift_ns: int = 0) -> bytes:
    """``enc`` with the copy number in every id's first 4 bytes (copy 0: the ids as generated,
    which never start with 4 zero bytes) and every time moved by ``shift_ns``."""
    if copy == 0 and shift_ns == 0:
        return enc.data
    buf = bytearray(enc.data)
    if copy:
        c = copy.to_bytes(4, "big")
        for pos in enc.id_offsets:
            buf[pos : pos + 4] = c
    if shift_ns:
        for pos in enc.time_offsets:
            buf[pos : pos + 8] = (int.from_bytes(buf[pos : pos + 8], "little") + shift_ns).to_bytes(
                8, "little"
            )
    return bytes(buf)


def expected_self_time(traces: Sequence[Trace]) -> int:
    """The sum of every span's self time, from the trees themselves."""
    return sum(sp.self_time() for tr in traces for sp in tr.spans)


def parts_histogram(traces: Sequence[Trace]) -> dict[int, int]:
    out: dict[int, int] = {}
    for tr in traces:
        out[tr.parts] = out.get(tr.parts, 0) + 1
    return dict(sorted(out.items()))
