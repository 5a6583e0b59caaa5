"""Benchmark: decode + attribute + aggregate + self time throughput on length-prefixed OTLP
protobuf, one core.

Workload (issue #2's, with issue #12's trace trees): ~200 spans per request, ~10 attributes
per span, 1,000+ distinct files over 50 modules, 2% errors, 5 services with a deploy
timeline and a CODEOWNERS file; the spans are whole trace trees (bench/tracegen.py: depth 3-6,
fan-out, overlapping async siblings, every parent present), each trace split over 2-4
requests that interleave with other traces' parts, as a Collector's batch processor emits
them.  Requests are built with the real ``opentelemetry-proto`` messages, written to a
length-prefixed file, and read back.  100 template requests repeat with fresh ids (the copy
number stamped into every trace, span and parent id), so no trace crosses a copy.

Two figures from the same run and the same bytes (a third isolates the trace buffer):

* **ceiling**: parse each request with the generated ``ExportTraceServiceRequest`` class
  and run a minimal Python loop that reads one attribute per span (``code.file.path``,
  found by key) and adds into a dict;
* **prodloop**: ``BatchProcessor``'s open batch, as ``prodloop ingest`` and direct mode use
  it: its decoder's ``decode_proto`` -> ``BatchProcessor.add(spans, timestamp_ms)`` (attribution,
  aggregation and the trace buffer; request timestamps advance at ``--rate`` spans/s, so traces
  complete as they would at that rate), then ``complete_traces()`` and ``drain()``.  A checksum of
  the drained rows is printed, so speed cannot come from skipping work (it must be identical
  across runs with the same seed), with the buffer's counts (orphans, late spans, traces
  completed early by the span cap) and the self time summed over the rows against the
  generator's own sum;
* **without the trace buffer**: the decoder and an ``Aggregator`` alone (the loop this bench
  measured before issue #12).

On a tree without the trace buffer (``PYTHONPATH=<old checkout>``), ``add`` takes no timestamp
and there is no buffer: the script uses what exists.

``--rss-spans N`` runs prodloop alone over N spans, streaming requests with fresh ids, and
reports the process's peak RSS (ru_maxrss).

``--buffer-memory`` feeds ``--memory-seconds`` (default 40) of simulated time at ``--rate``
spans/s through the open batch with ``trace_wait`` 10 s and reports the trace buffer's peak
(spans, ``TraceBuffer.nbytes()``), then the bytes per buffered span with all per-trace overhead
(the entry dict, its lists, heap and deque items, the recent-ids memory) from tracemalloc.

Run: ``python bench/ingest.py`` (pin to one core with ``taskset -c 0`` for the issue's figure);
bench/README.md lists the commands of the issue notes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import inspect
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# the code measured: PYTHONPATH's checkout when set (a before/after comparison), else this one
sys.path.append(str(Path(__file__).resolve().parent.parent))

import tracegen
from tracegen import FILES_PER_MODULE, N_MODULES, SERVICES, T0, module_path

from attribution.aggregate import Aggregator
from attribution.codeowners import CodeOwners
from attribution.model import DeployEvent
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from collector.codec.framing import iter_length_prefixed
from collector.processing.batch import BatchProcessor, ProcessorConfig
from collector.processing.runtime import tune_gc

CODE = Path(inspect.getfile(BatchProcessor)).resolve().parents[2]  # the checkout measured

__all__ = ["FILES_PER_MODULE", "N_MODULES", "SERVICES", "T0", "module_path"]

SPANS_PER_REQUEST = 200
TEMPLATES = 100
DEFAULT_RATE = 75_000  # spans/s: what prodloop (with the trace buffer) measured here on one core
SPAN_TIME_NS = 1800 * 10**9  # the templates' traces start over 30 minutes


def build_config() -> tuple[Repository, list[DeployEvent]]:
    modules = {
        "source_roots": ["/srv/app"],
        "modules": [
            {"name": f"{SERVICES[m % 5]}/mod{m:02d}", "paths": [module_path(m) + "/**"]}
            for m in range(N_MODULES)
        ],
    }
    co_lines = ["* @acme/platform"]
    for m in range(N_MODULES):
        co_lines.append(f"/{module_path(m)}/ @acme/team{m % 12}")
        if m % 5 == 0:
            co_lines.append(f"/{module_path(m)}/file0*.py @acme/team{m % 12} @dev{m}")
    repo = Repository(
        name="app",
        url="https://github.com/acme/app",
        codeowners=CodeOwners.parse("\n".join(co_lines) + "\n"),
        modules=ModuleConfig.from_mapping(modules, "bench-modules.yaml"),
    )
    rng = random.Random(99)
    events = []
    for s in SERVICES:
        for k in range(3):
            events.append(
                DeployEvent(
                    deploy_id=f"{s}-{k}",
                    service=s,
                    environment="prod",
                    commit_sha=f"{rng.getrandbits(160):040x}",
                    deployed_at_unix_nano=T0 + k * 600 * 1_000_000_000 - (1 if k == 0 else 0),
                )
            )
    return repo, events


@dataclasses.dataclass
class Templates:
    requests: list[tracegen.Encoded]
    traces: list[tracegen.Trace]
    self_time_ns: int  # the generator's sum of every span's self time, one copy


def build_templates(seed: int, n: int = TEMPLATES, size: int = SPANS_PER_REQUEST) -> Templates:
    """``n`` serialized requests of ``size`` spans (the last may hold a few more), whole traces."""
    batches, traces = tracegen.gen_batches(seed, [size] * n, lambda b: T0 + b * SPAN_TIME_NS // n)
    requests = [tracegen.encode(b, seed * 100_003 + i) for i, b in enumerate(batches)]
    return Templates(requests, traces, tracegen.expected_self_time(traces))


def stream(templates: Templates, n_requests: int) -> Iterator[bytes]:
    """Requests with ids made unique by stamping the copy number into every id."""
    reqs = templates.requests
    for i in range(n_requests):
        yield tracegen.stamp(reqs[i % len(reqs)], i // len(reqs))


def write_file(path: Path, frames: Iterable[bytes]) -> int:
    n = 0
    with path.open("wb") as fh:
        for f in frames:
            fh.write(len(f).to_bytes(4, "big"))
            fh.write(f)
            n += 1
    return n


def ceiling(frames: list[bytes]) -> tuple[float, int]:
    counts: dict[str, int] = {}
    t = time.perf_counter()
    n = 0
    for data in frames:
        req = ExportTraceServiceRequest.FromString(data)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    n += 1
                    for kv in sp.attributes:
                        if kv.key == "code.file.path":
                            v = kv.value.string_value
                            counts[v] = counts.get(v, 0) + 1
                            break
    return time.perf_counter() - t, n


@dataclasses.dataclass
class Run:
    elapsed: float
    spans: int
    checksum: str
    rows: int
    buffer: Any = None  # BufferStats of the trace buffer (None: this tree has none)
    self_time_ns: int | None = None  # summed over the drained rows


HOT_PATH = "auto"  # aggregation.hot_path (--hot-path); a tree from before the native path runs Python


def hot_path() -> str:
    """Which path the measured processor runs."""
    if "native" not in {f.name for f in dataclasses.fields(ProcessorConfig)}:
        return "python (a tree without the native path)"
    from collector.processing.native import resolve

    return "native" if resolve(HOT_PATH) else "python"  # type: ignore[arg-type]


def new_processor(max_buffered: int | None = None, wait_ms: int | None = None) -> BatchProcessor:
    """The open batch of ``prodloop ingest``, with the settings' defaults but what is given."""
    repo, events = build_config()
    have = {f.name for f in dataclasses.fields(ProcessorConfig)}
    kw: dict[str, int | bool] = {}
    if "native" in have:
        kw["native"] = hot_path() == "native"
    if max_buffered is not None and "max_buffered_spans" in have:
        kw["max_buffered_spans"] = max_buffered
    if wait_ms is not None and "trace_wait_ms" in have:
        kw["trace_wait_ms"] = wait_ms
    return BatchProcessor(ProcessorConfig(**kw), [repo], events)  # type: ignore[arg-type]


def checksum(rows: Iterable[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(tuple(sorted(v.items()) if isinstance(v, Mapping) else v for v in r)).encode())
    return h.hexdigest()[:16]


def prodloop(frames: Iterable[bytes], rate: int, max_buffered: int | None = None) -> Run:
    """decode -> ``BatchProcessor.add`` (-> the trace buffer), request ``i`` arriving when the
    spans before it would have at ``rate`` spans/s; then complete the traces and drain."""
    proc = new_processor(max_buffered)
    buffered = hasattr(proc, "complete_traces")  # False: a tree from before the trace buffer
    decode = proc.decoder.decode_proto
    add = proc.add
    ms0 = T0 // 1_000_000
    t = time.perf_counter()
    n = 0
    for data in frames:
        spans = decode(data).spans
        if buffered:
            add(spans, ms0 + n * 1000 // rate)
        else:
            add(spans)
        n += len(spans)
    if buffered:
        proc.complete_traces()
    rows, _ = proc.drain()
    elapsed = time.perf_counter() - t
    run = Run(elapsed, n, checksum(rows), len(rows))
    if buffered:
        run.buffer = proc.traces.take_stats()
        run.self_time_ns = sum(r.self_time_sum_ns for r in rows)
    return run


def aggregate_only(frames: Iterable[bytes]) -> Run:
    """The decoder and an ``Aggregator``, no trace buffer (this bench's loop before issue #12)."""
    proc = new_processor()
    decode = proc.decoder.decode_proto
    aggregator: Aggregator = proc.new_aggregator(proc.attributor)
    t = time.perf_counter()
    n = 0
    for data in frames:
        spans = decode(data).spans
        aggregator.add(spans)
        n += len(spans)
    rows = aggregator.drain()
    return Run(time.perf_counter() - t, n, checksum(rows), len(rows))


def _describe(templates: Templates, cycles: int) -> str:
    hist = tracegen.parts_histogram(templates.traces)
    sizes = [len(tr.spans) for tr in templates.traces]
    return (
        f"{len(templates.traces) * cycles:,} traces ({statistics.median(sizes):.0f} spans median, "
        f"{min(sizes)}-{max(sizes)}; requests per trace: "
        + ", ".join(f"{k}: {100 * v / len(templates.traces):.0f}%" for k, v in hist.items())
        + ")"
    )


def _buffer_line(run: Run, expected_self_ns: int) -> str:
    st = run.buffer
    if st is None:
        return "trace buffer: none in this tree (no self time)"
    check = (
        "= the generator's"
        if run.self_time_ns == expected_self_ns
        else f"!= the generator's {expected_self_ns}"
    )
    return (
        f"trace buffer: {st.traces:,} traces completed ({st.traces - st.early - st.idle:,} by trace_wait, "
        f"{st.early:,} early by the span cap, {st.idle:,} at the end), {st.orphans} orphan spans, "
        f"{st.late} late spans, peak {st.peak_spans:,} spans buffered; self time summed {run.self_time_ns} ns {check}"
    )


def _vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def buffer_memory(templates: Templates, rate: int, seconds: int, wait_ms: int, max_buffered: int) -> None:
    """The trace buffer's peak at ``rate`` spans/s and its bytes per buffered span."""
    proc = new_processor(max_buffered, wait_ms)
    if not hasattr(proc, "traces"):
        raise SystemExit("this tree has no trace buffer")
    buf = proc.traces
    per_cycle = sum(r.spans for r in templates.requests)
    cycles = max(1, math.ceil(rate * seconds / per_cycle))
    n_req = cycles * len(templates.requests)
    decode = proc.decoder.decode_proto
    ms0 = T0 // 1_000_000
    n = 0
    sampled = peak_nbytes = peak_at = 0
    rss0 = _vm_rss_kb()
    rss_at_peak = rss0
    t = time.perf_counter()
    for i, data in enumerate(stream(templates, n_req)):
        spans = decode(data).spans
        proc.add(spans, ms0 + n * 1000 // rate)
        n += len(spans)
        if i % 20 == 0 and buf.buffered > sampled * 1.01:  # nbytes() walks every trace: sample
            sampled = buf.buffered
            peak_nbytes, peak_at, rss_at_peak = buf.nbytes(), sampled, _vm_rss_kb()
        if i % 500 == 0:
            proc.drain()  # the open batch's rows would be flushed to the store
    elapsed = time.perf_counter() - t
    st = buf.take_stats()
    print(
        f"buffer memory: {n:,} spans over {n * 1000 // rate / 1000:.0f} s of record time at {rate:,} spans/s "
        f"(fed in {elapsed:.0f} s), trace_wait {wait_ms} ms, max_buffered_spans {max_buffered:,}"
    )
    print(
        f"  completed {st.traces:,} traces: {st.traces - st.early - st.idle:,} by trace_wait, "
        f"{st.early:,} early by the span cap; orphans {st.orphans}, late {st.late}"
    )
    print(
        f"  peak buffered: {st.peak_spans:,} spans; nbytes() {peak_nbytes / 1e6:.1f} MB at {peak_at:,} spans "
        f"= {peak_nbytes / max(peak_at, 1):.1f} B/span (span data only); "
        f"VmRSS +{(rss_at_peak - rss0) / 1024:.0f} MB then (buffer, aggregator, allocator slack)"
    )
    # all the buffer allocates per buffered span, from tracemalloc: nothing completes meanwhile
    target = min(st.peak_spans, 300_000)
    decoded = []
    k = 0
    for data in stream(templates, n_req):
        spans = decode(data).spans
        decoded.append(spans)
        k += len(spans)
        if k >= target:
            break
    from attribution.tracebuffer import TraceBuffer  # this tree's: the buffer's core is chosen
    from collector.processing import native

    cfg = proc.cfg
    on = hot_path() == "native"
    probe = TraceBuffer(
        window_ns=cfg.window_ns, wait_ms=10**12, max_spans=10**12, core=native.trace_core(on)
    )  # nothing completes
    gidx = [[0] * len(s) for s in decoded]
    gc.collect()
    # the native core's memory is not Python's: its cost shows in the RSS (glibc returns large
    # freed blocks, so the delta is what it holds); the Python core's in tracemalloc, which is
    # not started for the native one (its own bookkeeping would show in the RSS)
    meter = "VmRSS" if on else "tracemalloc"
    if not on:
        tracemalloc.start()
    m0 = _vm_rss_kb() * 1024 if on else tracemalloc.get_traced_memory()[0]
    for j, spans in enumerate(decoded):
        probe.add_record(j, ms0 + j, spans, gidx[j])
    m1 = _vm_rss_kb() * 1024 if on else tracemalloc.get_traced_memory()[0]
    traces = len(probe)
    # trace ids: the Python core keeps the decoder's bytes objects alive after their spans go
    tid = 0 if on else sys.getsizeof(decoded[0][0].trace_id)
    full = (m1 - m0 + traces * tid) / probe.buffered
    nb = probe.nbytes() / probe.buffered
    probe.complete_all()
    m2 = _vm_rss_kb() * 1024 if on else tracemalloc.get_traced_memory()[0]
    if not on:
        tracemalloc.stop()
    recent = (m2 - m0) / max(traces, 1)
    print(
        f"  {meter}, {probe.buffered if probe.buffered else k:,} spans of {traces:,} traces buffered: "
        f"{full:.0f} B/span with every per-trace cost ({nb:.0f} B/span of span data, "
        f"{(full - nb) * k / traces:.0f} B/trace besides); after completion {recent:.0f} B/trace stay "
        "(recent ids, up to 100,000 traces, and the self-time accumulators)"
    )
    print(
        f"  => peak at this rate: {st.peak_spans:,} spans x {full:.0f} B = {st.peak_spans * full / 1e6:.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans in the throughput file")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (the best is reported)")
    ap.add_argument(
        "--rss-spans", type=int, default=0, help="only: stream N spans through prodloop, report peak RSS"
    )
    ap.add_argument(
        "--rate",
        type=int,
        default=DEFAULT_RATE,
        help="spans/s the request timestamps advance at (the trace buffer completes by them)",
    )
    ap.add_argument(
        "--max-buffered-spans",
        type=int,
        default=None,
        help="the trace buffer's cap (default: the settings' default; --buffer-memory: 10^9, no cap)",
    )
    ap.add_argument(
        "--buffer-memory", action="store_true", help="only: the trace buffer's peak and bytes/span"
    )
    ap.add_argument("--memory-seconds", type=int, default=40, help="--buffer-memory: seconds of record time")
    ap.add_argument("--trace-wait-ms", type=int, default=10_000, help="--buffer-memory: trace_wait")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--hot-path",
        choices=["auto", "native", "python"],
        default="auto",
        help="aggregation.hot_path: the native extension's pieces, or the pure-Python reference",
    )
    ap.add_argument("--no-gc-tuning", action="store_true", help="keep CPython's default GC thresholds")
    args = ap.parse_args()
    global HOT_PATH
    HOT_PATH = args.hot_path
    if not args.no_gc_tuning:
        tune_gc()  # as `prodloop ingest` and `prodloop run` do; applies to both measured loops

    templates = build_templates(args.seed)
    per_cycle = sum(r.spans for r in templates.requests)
    if args.buffer_memory:
        cap = args.max_buffered_spans if args.max_buffered_spans is not None else 10**9
        buffer_memory(templates, args.rate, args.memory_seconds, args.trace_wait_ms, cap)
        return
    if args.rss_spans:
        cycles = max(1, round(args.rss_spans / per_cycle))
        run = prodloop(stream(templates, cycles * TEMPLATES), args.rate, args.max_buffered_spans)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"rss run: {run.spans} spans in {run.elapsed:.1f}s = {run.spans / run.elapsed:,.0f} spans/s; "
            f"rows={run.rows} checksum={run.checksum}"
        )
        print(_buffer_line(run, cycles * templates.self_time_ns))
        print(f"peak RSS: {rss_mb:.0f} MB (whole process, incl. interpreter and request generation)")
        return

    cycles = max(1, round(args.spans / per_cycle))  # whole copies: no trace is cut off
    n_req = cycles * TEMPLATES
    n = cycles * per_cycle
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.lpb"
        write_file(path, stream(templates, n_req))
        size = path.stat().st_size
        frames = [payload for _, payload in iter_length_prefixed(path)]
    print(
        f"workload: {n_req} requests x ~{SPANS_PER_REQUEST} spans = {n:,} spans, {size / 1e6:.0f} MB "
        f"length-prefixed protobuf, {N_MODULES} modules, {N_MODULES * FILES_PER_MODULE} files, "
        f"{_describe(templates, cycles)}; timestamps at {args.rate:,} spans/s; code from {CODE}; "
        f"cpu affinity {sorted(os.sched_getaffinity(0))}; hot path {hot_path()}"
    )
    best_c = best_p = best_a = math.inf
    sums: set[str] = set()
    last: Run | None = None
    for i in range(args.repeat):
        tc, nc = ceiling(frames)
        run = prodloop(frames, args.rate, args.max_buffered_spans)
        agg = aggregate_only(frames)
        assert nc == run.spans == agg.spans == n, (nc, run.spans, agg.spans, n)
        sums.add(run.checksum)
        best_c, best_p, best_a = min(best_c, tc), min(best_p, run.elapsed), min(best_a, agg.elapsed)
        last = run
        print(  # every repetition: the machine's noise shows as the spread
            f"  repeat {i + 1}: ceiling {n / tc:,.0f}, prodloop {n / run.elapsed:,.0f}, "
            f"without the buffer {n / agg.elapsed:,.0f} spans/s; buffer cost {100 * (1 - agg.elapsed / run.elapsed):.0f}%"
        )
    assert last is not None
    print(f"ceiling  (parse + one attribute into a dict): {n / best_c:>10,.0f} spans/s")
    print(
        f"prodloop (decode + attribute + aggregate{' + trace buffer' if last.buffer else ', no buffer'}): "
        f"{n / best_p:>10,.0f} spans/s  "
        f"= {100 * best_c / best_p:.0f}% of the ceiling"
    )
    print(
        f"without the trace buffer (decode + Aggregator): {n / best_a:>10,.0f} spans/s  "
        f"= {100 * best_c / best_a:.0f}% of the ceiling; the buffer costs {100 * (1 - best_a / best_p):.0f}% (best of each)"
    )
    print(f"aggregate rows: {last.rows}; checksum: {', '.join(sorted(sums))}")
    print(_buffer_line(last, cycles * templates.self_time_ns))


if __name__ == "__main__":
    main()
