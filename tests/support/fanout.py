"""Traces with async fan-out, made by the real OpenTelemetry SDK, and their ground truth.

Each trace has a root span (module ``api``: this file) that fans out, from threads, to 2-4
``worker`` spans whose intervals overlap; each worker span has one ``store`` child.  Some
store lookups fail: the store's code (tests/support/fanout_code/store.py) really raises, and
the store span and the worker span record the exception (``record_exception``) and are
errors, as is the root.  Every span's times are set explicitly, so the truth is known by
construction: per module its spans, self time (duration minus the union of its children's
intervals, by this file's own sweep), errors, own errors (errors without an errored child),
exception events on its spans, and exceptions its code threw (all of them: the store's).

The OTLP requests split each trace over 2-3 records, interleaved with other traces' records;
all records of a trace go to one partition (as the Collector's ``partition_traces_by_id``).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.support.fanout_code import store as store_code
from tests.support.fanout_code import worker as worker_code
from tests.support.fanout_code.store import RecordMissing

REPO = Path(__file__).resolve().parents[2]
SERVICE = "fanout"
ENVIRONMENT = "test"
FILES = {
    "api": Path(__file__).resolve(),
    "worker": Path(worker_code.__file__).resolve(),
    "store": Path(store_code.__file__).resolve(),
}
OWNERS = {"api": "@acme/api", "worker": "@acme/workers", "store": "@acme/data"}
_MS = 1_000_000


def modules_yaml() -> str:
    """The module rules of this generator's code (its files, under the repository root)."""
    lines = [f"source_roots: [{str(REPO)!r}]", "modules:"]
    for name, path in FILES.items():
        lines += [f"  - name: {name}", f"    paths: [{str(path.relative_to(REPO))!r}]"]
    return "\n".join(lines) + "\n"


def codeowners() -> str:
    return "".join(f"/{p.relative_to(REPO)} {OWNERS[m]}\n" for m, p in FILES.items())


@dataclass
class ModuleTruth:
    spans: int = 0
    duration_ns: int = 0
    self_ns: int = 0
    errors: int = 0
    own_errors: int = 0
    exception_events: int = 0  # recorded on this module's spans
    exceptions: int = 0  # thrown by this module's code


@dataclass
class FanoutTraffic:
    records: list[bytes]
    partition_of: list[int]
    truth: dict[str, ModuleTruth] = field(default_factory=dict)
    traces: int = 0


def _union(lo: int, hi: int, intervals: list[tuple[int, int]]) -> int:
    """The length of the union of ``intervals`` clipped to [lo, hi), by a plain sweep."""
    total, cur_s, cur_e = 0, None, None
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= a:
            continue
        if cur_e is None or a > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def generate(*, traces: int, seed: int, partitions: int, start_unix_nano: int) -> FanoutTraffic:
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": SERVICE,
                "deployment.environment.name": ENVIRONMENT,
                "telemetry.sdk.language": "python",
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.support.fanout")
    truth: dict[str, ModuleTruth] = defaultdict(ModuleTruth)
    table = {f"k{i}": json.dumps({"v": i}) for i in range(50)}
    # (module, start, end, parent index or -1, error) per span, per trace: what self time is made of
    plan: list[list[tuple[str, int, int, int, bool]]] = []
    with ThreadPoolExecutor(4) as pool:
        for t in range(traces):
            t0 = start_unix_nano + t * 7 * _MS
            root_end = t0 + rng.randint(60, 140) * _MS
            n = rng.randint(2, 4)
            workers = []
            for i in range(n):
                ws = t0 + rng.randint(1, 20) * _MS + i * _MS
                we = ws + rng.randint(15, 70) * _MS
                ss = ws + rng.randint(1, 5) * _MS
                se = ss + rng.randint(1, (we - ss) // _MS) * _MS
                key = f"k{rng.randint(0, 60)}"  # keys past k49 are missing: the store raises
                workers.append((ws, min(we, root_end + 30 * _MS), ss, se, key))
            root = tracer.start_span(
                "GET /orders", start_time=t0, attributes={"code.file.path": str(FILES["api"])}
            )
            ctx = trace.set_span_in_context(root)

            def work(w: tuple[int, int, int, int, str], ctx: object = ctx) -> bool:
                ws, we, ss, se, key = w
                span = tracer.start_span(
                    "worker.handle",
                    context=ctx,  # type: ignore[arg-type]
                    start_time=ws,
                    attributes={"code.file.path": str(FILES["worker"])},
                )
                child = tracer.start_span(
                    "store.fetch",
                    context=trace.set_span_in_context(span),
                    start_time=ss,
                    attributes={"code.file.path": str(FILES["store"])},
                )
                failed = False
                try:
                    worker_code.handle(table, key)
                except RecordMissing as exc:
                    failed = True
                    for s in (child, span):
                        s.record_exception(exc)
                        s.set_status(Status(StatusCode.ERROR, str(exc)))
                child.end(end_time=se)
                span.end(end_time=we)
                return failed

            failures = list(pool.map(work, workers))
            if any(failures):
                root.set_status(Status(StatusCode.ERROR, "a worker failed"))
            root.end(end_time=root_end)
            spans = [("api", t0, root_end, -1, any(failures))]
            for (ws, we, ss, se, _), failed in zip(workers, failures, strict=True):
                spans.append(("worker", ws, we, 0, failed))
                spans.append(("store", ss, se, len(spans) - 1, failed))
            plan.append(spans)
    for spans in plan:
        for i, (module, start, end, _, error) in enumerate(spans):
            kids = [(s, e) for s, e, p, _ in ((x[1], x[2], x[3], x[4]) for x in spans) if p == i]
            kid_errors = [x[4] for x in spans if x[3] == i]
            m = truth[module]
            m.spans += 1
            m.duration_ns += end - start
            m.self_ns += end - start - _union(start, end, kids)
            m.errors += error
            m.own_errors += error and not any(kid_errors)
            if error and module != "api":
                m.exception_events += 1
                truth["store"].exceptions += 1  # both recorded exceptions were raised by the store's code
    finished = exporter.get_finished_spans()
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for s in finished:
        assert s.context is not None
        by_trace[s.context.trace_id].append(s)
    assert len(by_trace) == traces
    # split each trace into 2-3 parts and interleave the parts of neighbouring traces per partition
    pending: dict[int, list[list[ReadableSpan]]] = defaultdict(list)
    records: list[bytes] = []
    partition_of: list[int] = []
    for trace_id, spans in by_trace.items():
        rng.shuffle(spans)
        cuts = sorted(rng.sample(range(1, len(spans)), rng.randint(1, 2)))
        parts = [spans[a:b] for a, b in zip([0, *cuts], [*cuts, len(spans)], strict=True)]
        p = trace_id % partitions
        pending[p].extend(parts)
        while len(pending[p]) >= 4:
            rng.shuffle(pending[p])
            take, pending[p] = pending[p][:2], pending[p][2:]
            records.append(encode_spans([s for part in take for s in part]).SerializeToString())
            partition_of.append(p)
    for p, parts in pending.items():
        for part in parts:
            records.append(encode_spans(part).SerializeToString())
            partition_of.append(p)
    provider.shutdown()
    return FanoutTraffic(records, partition_of, dict(truth), traces)
