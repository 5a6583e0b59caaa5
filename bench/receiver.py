"""Benchmark: OTLP/gRPC or OTLP/HTTP into the receiver in direct mode, from a separate process.

The server (this process) runs the receivers in direct mode on a fresh embedded chDB store
with the demo shop's CODEOWNERS and modules.yaml, with ``--durability wal`` (the default: an
answer after the write-ahead log's fsync, the stream pipeline reading the log) or ``memory``.  A client process (this script with
``--client``) sends ``--spans`` spans (1,000,000 by default) over ``--protocol`` grpc (the
default) or http/protobuf in requests of ``--batch`` spans (512), with ``--concurrency``
requests in flight; over HTTP each of them on its own keep-alive connection.

Requests come from the demo shop's traffic (real SDK spans: ~10 attributes each, deploys,
sampling), re-batched to 512 spans per request and serialized before the run (each cycle
through the shop's traffic with new trace and span ids); each request is sent as the raw
bytes an OTLP exporter would send.  Refusals (RESOURCE_EXHAUSTED with RetryInfo; HTTP 429
or 503 with Retry-After) are retried after the advised delay and counted, as an OTLP client would.

Reported: spans/s accepted (first send to last acknowledgement, client clock), request
latency p50/p99/max, retries; then, on the server, the time until every accepted span was
aggregated and flushed, and a check that the store holds exactly the spans sent.

Run: ``python bench/receiver.py`` (``--spans 200000`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# -- client ------------------------------------------------------------------------------


def build_requests(batch: int, minutes: int = 4) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from collector.demo.shop import generate

    traffic = generate(seed=1, minutes=minutes)
    items: list[tuple[bytes, Any, Any]] = []  # (resource bytes, resource, span)
    for raw in traffic.requests:
        req = ExportTraceServiceRequest.FromString(raw)
        for rs in req.resource_spans:
            key = rs.resource.SerializeToString()
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    items.append((key, rs.resource, sp))
    out: list[bytes] = []
    for i in range(0, len(items) - batch + 1, batch):
        req = ExportTraceServiceRequest()
        by_res: dict[bytes, Any] = {}
        for key, res, sp in items[i : i + batch]:
            ss = by_res.get(key)
            if ss is None:
                rs = req.resource_spans.add()
                rs.resource.CopyFrom(res)
                ss = by_res[key] = rs.scope_spans.add()
                ss.scope.name = "bench"
            ss.spans.append(sp)
        out.append(req.SerializeToString())
    return out


def unique_requests(base: list[bytes], count: int) -> list[bytes]:
    """``count`` requests cycling through ``base``, each cycle's trace and span ids made new (a
    reused id is a duplicate the write-ahead log's pipeline drops, as it should)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def fresh(ident: bytes, cycle: int) -> bytes:
        return (int.from_bytes(ident[:4], "big") ^ cycle).to_bytes(4, "big") + ident[4:]

    out = list(base[:count])
    for i in range(len(out), count):
        cycle = i // len(base)
        req = ExportTraceServiceRequest.FromString(base[i % len(base)])
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id = fresh(sp.trace_id, cycle)
                    sp.span_id = fresh(sp.span_id, cycle)
                    if sp.parent_span_id:
                        sp.parent_span_id = fresh(sp.parent_span_id, cycle)
        out.append(req.SerializeToString())
    return out


class _Retry(Exception):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


def grpc_exporter(target: str) -> tuple[Any, Any]:
    """(export(body) for one thread, close()) over one channel; _Retry when refused with RetryInfo."""
    import grpc
    from google.rpc.error_details_pb2 import RetryInfo

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=30)
    call = channel.unary_unary(EXPORT)

    def export_on_thread() -> Any:
        def export(body: bytes) -> None:
            try:
                call(body, timeout=60)
            except grpc.RpcError as exc:
                md = dict(exc.trailing_metadata() or ())
                retryable = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
                if exc.code() in retryable and md.get("google.rpc.retryinfo-bin"):
                    info = RetryInfo.FromString(md["google.rpc.retryinfo-bin"])
                    raise _Retry(info.retry_delay.seconds + info.retry_delay.nanos / 1e9) from None
                raise

        return export

    return export_on_thread, channel.close


def http_exporter(url: str) -> tuple[Any, Any]:
    """OTLP/HTTP protobuf: each thread its own keep-alive connection."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conns: list[http.client.HTTPConnection] = []

    def export_on_thread() -> Any:
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)
        conns.append(conn)
        headers = {"Content-Type": "application/x-protobuf"}

        def export(body: bytes) -> None:
            conn.request("POST", "/v1/traces", body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status in (429, 503) and resp.getheader("Retry-After"):
                raise _Retry(float(resp.getheader("Retry-After") or 1))
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {answer[:200]!r}")

        return export

    def close() -> None:
        for c in conns:
            c.close()

    return export_on_thread, close


def client(target: str, protocol: str, spans: int, batch: int, concurrency: int) -> dict[str, Any]:
    n_requests = spans // batch
    remainder = spans - n_requests * batch
    requests = unique_requests(build_requests(batch), n_requests + 1)
    latencies: list[float] = []
    retries = [0]
    lock = threading.Lock()
    next_i = [0]
    export_on_thread, close = (grpc_exporter if protocol == "grpc" else http_exporter)(target)
    # a tail request for spans not divisible by the batch: the first `remainder` spans of a request
    tail: bytes | None = None
    if remainder:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        r = ExportTraceServiceRequest.FromString(requests[n_requests])  # ids no other request has
        left = remainder
        for rs in r.resource_spans:
            for ss in rs.scope_spans:
                keep = min(left, len(ss.spans))
                del ss.spans[keep:]
                left -= keep
        tail = r.SerializeToString()

    def worker() -> None:
        export = export_on_thread()
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i > n_requests or (i == n_requests and tail is None):
                return
            body = tail if i == n_requests else requests[i]
            while True:
                t0 = time.perf_counter()
                try:
                    export(body)
                except _Retry as r:
                    with lock:
                        retries[0] += 1
                    time.sleep(r.delay_s)
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                break

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "protocol": protocol,
        "spans": spans,
        "requests": len(latencies),
        "batch": batch,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "spans_per_second": round(spans / elapsed),
        "latency_ms": {
            "p50": round(pct(0.5), 2),
            "p99": round(pct(0.99), 2),
            "max": round(latencies[-1] * 1000, 2),
        },
        "retries": retries[0],
    }


# -- server ------------------------------------------------------------------------------


def server(args: argparse.Namespace) -> None:
    from collector.app import build
    from collector.app.attribution_files import load_attribution
    from collector.app.receivers import start_receivers
    from collector.app.settings import Settings
    from collector.app.shared_store import SharedStore
    from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, demo_dir
    from collector.exporters.clickhouse.store import ClickHouseStore
    from collector.pipelines.direct import DirectPipeline
    from collector.processing.metrics import Metrics

    d = demo_dir()
    loaded = load_attribution(codeowners=d / "CODEOWNERS", modules=d / "modules.yaml")
    with tempfile.TemporaryDirectory(prefix="prodloop-bench-") as tmp:
        store = ClickHouseStore(f"chdb://{tmp}/store", "bench")
        store.apply_migrations()
        settings = Settings(
            store={"dsn": f"chdb://{tmp}/store", "database": "bench"},
            receiver={
                "mode": "direct",
                "durability": args.durability,
                "grpc_enabled": args.protocol == "grpc",
                "grpc_port": 0,
                "http_enabled": args.protocol != "grpc",
                "http_port": 0,
                "flush_interval_seconds": args.flush_interval,
                "queue_max_spans": args.queue_max_spans,
                "retry_after_seconds": 1,
            },
            attribution={"sample_rate_attribute": SAMPLE_RATE_ATTRIBUTE},
            aggregation={"trace_wait_ms": 1000},
            stream={"workers": 0},  # the pipeline in this process, as the memory path: one CPU figure
        )
        stop = threading.Event()
        wal = None
        loop = None
        if args.durability == "wal":
            # what `prodloop run` does in direct mode: the receivers append to the log, the
            # stream pipeline reads it into the store
            wal = build.wal_pipeline(
                settings, SharedStore(store), loaded.repositories, metrics=Metrics(), stop=stop
            )
            assert wal.sink is not None
            receivers = start_receivers(settings, sink=wal.sink)
            pipeline = wal.pipeline

            def run_pipeline() -> None:
                while not stop.is_set():
                    pipeline.step()

            loop = threading.Thread(target=run_pipeline, daemon=True)
            loop.start()
        else:
            receivers = start_receivers(settings, store=store, repositories=loaded.repositories)
        sink = receivers.sink
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            cmd = [
                sys.executable,
                __file__,
                "--client",
                str(receivers.grpc_endpoint if args.protocol == "grpc" else receivers.http_url),
                "--protocol",
                args.protocol,
                "--spans",
                str(args.spans),
                "--batch",
                str(args.batch),
                "--concurrency",
                str(args.concurrency),
            ]
            cpu0 = os.times()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"client failed:\n{proc.stderr}")
            result = json.loads(proc.stdout)
            t0 = time.perf_counter()
            if wal is not None:
                assert wal.sink is not None
                traces = wal.sink.traces
                result["refused_busy"] = wal.sink.requests_refused_busy
                while (traces.committed() or (0, ""))[0] < traces.durable_end:
                    assert time.perf_counter() - t0 < 300, "the pipeline did not catch up"
                    time.sleep(0.05)
                result["wal_fsyncs"] = traces.fsyncs
            else:
                assert isinstance(sink, DirectPipeline)
                assert sink.flush(300), "final flush did not finish"
                result["flushes"] = sink.stats.flushes
                result["refused_busy"] = sink.stats.requests_refused_busy
            result["server_drain_and_flush_seconds_after_last_ack"] = round(time.perf_counter() - t0, 3)
            cpu1 = os.times()
            result["server_cpu_seconds"] = round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2)
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            receivers.stop(30)
            stop.set()
            if loop is not None:
                loop.join(30)
            if wal is not None:
                wal.close()
        stored = sum(int(r["spans"]) for r in store.query_modules())
        result["durability"] = args.durability
        result["spans_in_store"] = stored
        result["machine_cpus"] = os.cpu_count()
        store.close()
    print(json.dumps(result, indent=2))
    if stored != args.spans:
        sys.exit(f"the store holds {stored} spans, {args.spans} were sent")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", metavar="TARGET", help="(internal) run as the client process")
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--spans", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--durability", choices=("wal", "memory"), default="wal", help="direct mode's receiver.durability"
    )
    p.add_argument("--flush-interval", type=float, default=5.0)
    p.add_argument("--queue-max-spans", type=int, default=200_000)
    p.add_argument("--profile", metavar="FILE", help="cProfile the server into FILE")
    args = p.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.protocol, args.spans, args.batch, args.concurrency)))
        return
    server(args)


if __name__ == "__main__":
    main()
