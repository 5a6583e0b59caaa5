"""Benchmark: decode + attribute + aggregate throughput on length-prefixed OTLP protobuf, one core.

Workload (as issue #2 specifies): ~200 spans per request, ~10 attributes per span, 1,000+
distinct files over 50 modules, unique trace/span ids, lognormal durations, 2% errors,
5 services with a deploy timeline and a CODEOWNERS file.  Requests are built with the
real ``opentelemetry-proto`` messages, written to a length-prefixed file, and read back.

Two figures from the same run and the same bytes:

* **ceiling**: parse each request with the generated ``ExportTraceServiceRequest`` class
  and run a minimal Python loop that reads one attribute per span (``code.file.path``,
  found by key) and adds into a dict;
* **prodloop**: ``OtlpDecoder.decode_proto`` -> ``Aggregator.add`` (attribution included),
  then ``drain()``.  A checksum of the drained aggregates is printed, so speed cannot come
  from skipping work (it must be identical across runs with the same seed).

``--rss-spans N`` runs prodloop alone over N spans, streaming requests with fresh ids, and
reports the process's peak RSS (ru_maxrss).

Run: ``python bench/ingest.py`` (pin to one core with ``taskset -c 0`` for the issue's figure).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.aggregate import Aggregator
from attribution.attribute import Attributor
from attribution.codeowners import CodeOwners
from attribution.deploys import DeployTimeline
from attribution.model import DeployEvent
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from collector.codec.framing import iter_length_prefixed
from collector.codec.otlp import OtlpDecoder
from collector.processing.runtime import tune_gc

SERVICES = ["frontend", "checkout", "payments", "inventory", "search"]
N_MODULES = 50
FILES_PER_MODULE = 24  # 1,200 files
SPANS_PER_REQUEST = 200
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def module_path(m: int) -> str:
    return f"services/{SERVICES[m % len(SERVICES)]}/mod{m:02d}"


def build_config() -> tuple[Repository, DeployTimeline]:
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
    return repo, DeployTimeline(events)


_ATTR_KEYS = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "server.address",
    "network.peer.port",
    "thread.id",
    "user.tier",
]


def build_templates(seed: int, n: int) -> list[tuple[bytes, list[int]]]:
    """``n`` serialized requests, and the offsets of every trace/span id inside each."""
    rng = random.Random(seed)
    out = []
    for r in range(n):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        svc_i = r % len(SERVICES)
        for k, v in (
            ("service.name", SERVICES[svc_i]),
            ("deployment.environment.name", "prod"),
            ("service.version", "1.4.2"),
        ):
            rs.resource.attributes.add(key=k, value=AnyValue(string_value=v))
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        ids: list[bytes] = []
        t = T0 + rng.randrange(0, 1800 * 10**9)
        for i in range(SPANS_PER_REQUEST):
            m = rng.randrange(N_MODULES)
            while m % len(SERVICES) != svc_i and rng.random() < 0.8:
                m = rng.randrange(N_MODULES)
            f = rng.randrange(FILES_PER_MODULE)
            sp = ss.spans.add()
            sp.trace_id = rng.randbytes(16)
            sp.span_id = rng.randbytes(8)
            if i % 4:
                sp.parent_span_id = rng.randbytes(8)
            ids.extend([sp.trace_id, sp.span_id])
            sp.name = f"op{m}.{f % 5}"
            sp.kind = PbSpan.SPAN_KIND_INTERNAL
            d = int(math.exp(rng.gauss(15.0, 1.2)))  # ~3 ms median, heavy tail
            start = t + rng.randrange(0, 50 * 10**9)
            sp.start_time_unix_nano = start
            sp.end_time_unix_nano = start + d
            if rng.random() < 0.02:
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
        offsets = []
        for ident in ids:
            pos = data.find(ident)
            assert pos >= 0 and data.find(ident, pos + 1) < 0, "template ids must be unique"
            offsets.append(pos)
        out.append((data, offsets))
    return out


def stream(templates: list[tuple[bytes, list[int]]], n_requests: int) -> Iterator[bytes]:
    """Requests with ids made unique by stamping the copy number into every id."""
    for i in range(n_requests):
        data, offsets = templates[i % len(templates)]
        copy = (i // len(templates)).to_bytes(4, "big")
        if copy == b"\0\0\0\0":
            yield data
            continue
        buf = bytearray(data)
        for pos in offsets:
            buf[pos : pos + 4] = copy
        yield bytes(buf)


def write_file(path: Path, frames: Iterator[bytes]) -> int:
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


def prodloop(frames: Iterator[bytes] | list[bytes]) -> tuple[float, int, str, int]:
    repo, timeline = build_config()
    attributor = Attributor([repo], timeline)
    aggregator = Aggregator(attributor)
    decoder = OtlpDecoder(wanted_attributes=attributor.wanted_attributes)
    t = time.perf_counter()
    n = 0
    for data in frames:
        decoded = decoder.decode_proto(data)
        aggregator.add(decoded.spans)
        n += len(decoded.spans)
    rows = aggregator.drain()
    elapsed = time.perf_counter() - t
    h = hashlib.sha256()
    for r in rows:
        h.update(repr((r[:17], sorted(r.latency_bins.items()))).encode())
    return elapsed, n, h.hexdigest()[:16], len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans in the throughput file")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (the best is reported)")
    ap.add_argument(
        "--rss-spans", type=int, default=0, help="only: stream N spans through prodloop, report peak RSS"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-gc-tuning", action="store_true", help="keep CPython's default GC thresholds")
    args = ap.parse_args()
    if not args.no_gc_tuning:
        tune_gc()  # as `prodloop ingest` and `prodloop run` do; applies to both measured loops

    templates = build_templates(args.seed, 100)
    if args.rss_spans:
        n_req = args.rss_spans // SPANS_PER_REQUEST
        elapsed, n, checksum, nrows = prodloop(stream(templates, n_req))
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"rss run: {n} spans in {elapsed:.1f}s = {n / elapsed:,.0f} spans/s; rows={nrows} checksum={checksum}"
        )
        print(f"peak RSS: {rss_mb:.0f} MB (whole process, incl. interpreter and request generation)")
        return

    n_req = args.spans // SPANS_PER_REQUEST
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.lpb"
        write_file(path, stream(templates, n_req))
        size = path.stat().st_size
        frames = [payload for _, payload in iter_length_prefixed(path)]
    print(
        f"workload: {n_req} requests x {SPANS_PER_REQUEST} spans, {size / 1e6:.0f} MB length-prefixed protobuf, "
        f"{N_MODULES} modules, {N_MODULES * FILES_PER_MODULE} files; cpu affinity {sorted(os.sched_getaffinity(0))}"
    )
    best_c = best_p = math.inf
    sums = set()
    for _ in range(args.repeat):
        tc, nc = ceiling(frames)
        tp, np_, checksum, nrows = prodloop(frames)
        assert nc == np_ == n_req * SPANS_PER_REQUEST, (nc, np_)
        sums.add(checksum)
        best_c, best_p = min(best_c, tc), min(best_p, tp)
    n = n_req * SPANS_PER_REQUEST
    print(f"ceiling  (parse + one attribute into a dict): {n / best_c:>10,.0f} spans/s")
    print(
        f"prodloop (decode + attribute + aggregate):    {n / best_p:>10,.0f} spans/s  "
        f"= {100 * best_c / best_p:.0f}% of the ceiling"
    )
    print(f"aggregate rows: {nrows}; checksum: {', '.join(sorted(sums))}")


if __name__ == "__main__":
    main()
