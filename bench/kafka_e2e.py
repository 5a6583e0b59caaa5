"""Benchmark: one `prodloop run` process, Kafka -> ClickHouse, end to end.

Produces N spans (default 2,000,000) to a traces topic as a Collector's Kafka exporter with
``partition_traces_by_id: true`` does: its batch processor's batches (100-500 spans) of whole
trace trees (bench/tracegen.py: depth 3-6, fan-out, overlapping async siblings, every parent
present; each trace's spans over 2-4 batches, interleaved with other traces'), each batch
split by trace into one record per trace, keyed by the trace id's hex (the exporter's
``batchpersignal.SplitTraces``), so the default (murmur2) partitioner keeps a trace on one
partition; the record timestamps are the producer's (the time of sending).  The spans carry
the bench/ingest.py attributes (~10 per span, 1,200 files over 50 modules).  Then one
`prodloop run` starts, and from its metrics endpoint the bench measures the time from its
first fetched record to the write of the last offset (the throughput figure) and to its
commit (which, with the trace buffer, waits until the partitions have been idle for
``trace_wait``: their last traces complete then), its peak RSS (VmHWM), and the trace
buffer's counts (orphan and late spans, traces completed by wait, early or idle, the most
spans buffered).  The aggregates are then checked: the stored span count must equal what was
produced.

The code measured is what ``collector`` imports as (``PYTHONPATH=<old checkout>`` compares a
tree without the trace buffer on the same workload; its missing metrics print as n/a).

Run: `python bench/kafka_e2e.py` (starts its own Kafka broker from scripts/kafka_broker.py via
``tests.support.streaming.start_broker``, or uses PRODLOOP_KAFKA_BOOTSTRAP).  `--profile`
runs the service under cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # after PYTHONPATH: an old checkout there is the code measured

import ingest as workload  # noqa: E402  (bench/, next to this file)
import tracegen  # noqa: E402
from kafka import KafkaProducer  # noqa: E402  (tests.support.streaming applies the socket fix)

import collector  # noqa: E402
from tests.support.procs import child_pids  # noqa: E402
from tests.support.streaming import (  # noqa: E402
    RunProcess,
    create_topics,
    end_offsets,
    produce_deploys,
    start_broker,
)

CODE = Path(collector.__file__).resolve().parent.parent  # the checkout `prodloop run` runs from


def _config_files(tmp: Path) -> dict[str, str]:
    """modules.yaml and CODEOWNERS of the bench workload, as a user would have them."""
    modules = ["source_roots: [/srv/app]", "modules:"]
    for m in range(workload.N_MODULES):
        modules.append(f"  - name: {workload.SERVICES[m % 5]}/mod{m:02d}")
        modules.append(f'    paths: ["{workload.module_path(m)}/**"]')
    co = ["* @acme/platform"]
    for m in range(workload.N_MODULES):
        co.append(f"/{workload.module_path(m)}/ @acme/team{m % 12}")
    (tmp / "modules.yaml").write_text("\n".join(modules) + "\n")
    (tmp / "CODEOWNERS").write_text("\n".join(co) + "\n")
    return {
        "PRODLOOP_ATTRIBUTION__MODULES": str(tmp / "modules.yaml"),
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(tmp / "CODEOWNERS"),
    }


_SPAN_TIME_NS = 1800 * 10**9
_BATCHES = 100  # Collector batches per copy of the workload


def _records(
    n_spans: int,
    seed: int,
    time_order: str = "stream",
    *,
    by_trace: bool = True,
    batch_sizes: tuple[int, ...] = (100, 200, 300, 400, 500),
) -> tuple[list[bytes], list[bytes], int, str]:
    """Records of one trace each, their keys, the spans in all (whole copies of ``_BATCHES``
    batches: at least ``n_spans``) and a description.

    ``time_order``: ``stream`` (the default) moves each copy to a base time that grows with
    its position over 30 minutes of span time, as a Collector exporting live traffic does;
    ``shuffled``: each batch's traces start anywhere in the 30 minutes (every batch of
    records touches every window: many more aggregate rows per span).  ``by_trace`` False:
    one record per batch, keyed by its first trace id (a Collector exporting without
    ``partition_traces_by_id``: traces split over partitions).
    """
    rng = random.Random(seed)
    sizes = [rng.choice(batch_sizes) for _ in range(_BATCHES)]
    copies = max(1, math.ceil(n_spans / sum(sizes)))
    if time_order == "stream":
        copy_ns = _SPAN_TIME_NS // copies

        def start_of(b: int) -> int:
            return workload.T0 + b * copy_ns // _BATCHES
    else:
        copy_ns = 0

        def start_of(b: int) -> int:
            return workload.T0 + rng.randrange(_SPAN_TIME_NS)

    batches, traces = tracegen.gen_batches(seed, sizes, start_of)
    parts: list[tuple[bytes, tracegen.Encoded]] = []
    for i, batch in enumerate(batches):
        if not by_trace:
            parts.append((batch[0].trace_id, tracegen.encode(batch, seed * 1_000_003 + i * 1000)))
            continue
        traces_of: dict[bytes, list[tracegen.GenSpan]] = {}
        for sp in batch:
            traces_of.setdefault(sp.trace_id, []).append(sp)
        for j, (tid, spans) in enumerate(traces_of.items()):
            parts.append((tid, tracegen.encode(spans, seed * 1_000_003 + i * 1000 + j)))
    values: list[bytes] = []
    keys: list[bytes] = []
    for c in range(copies):
        stamp = c.to_bytes(4, "big")
        for tid, enc in parts:
            values.append(tracegen.stamp(enc, c, c * copy_ns))
            keys.append((stamp + tid[4:] if c else tid).hex().encode())
    per_copy = sum(len(b) for b in batches)
    hist = tracegen.parts_histogram(traces)
    desc = (
        f"{len(traces) * copies:,} traces, {len(parts) / len(batches):.0f} records per batch of "
        f"{per_copy / len(batches):.0f} spans; records per trace: "
        + ", ".join(f"{k}: {100 * v / len(traces):.0f}%" for k, v in hist.items())
    )
    return values, keys, per_copy * copies, desc


def _produce(
    bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], compression: str | None
) -> None:
    """Keyed records; the default partitioner (murmur2 of the key) picks the partition."""
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        compression_type=compression,
        max_request_size=16 * 1024 * 1024,
        batch_size=1024 * 1024,
    )
    try:
        for v, k in zip(values, keys, strict=True):
            p.send(topic, value=v, key=k)
        p.flush(120)
    finally:
        p.close()


def _deploys(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` deploy events, one a minute, the last 20 within the spans' 30 minutes."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at_s = workload.T0 // 1_000_000_000 + (i - n + 20) * 60
        out.append(
            {
                "deploy_id": f"bench-{i}",
                "service": workload.SERVICES[i % len(workload.SERVICES)],
                "environment": "prod",
                "commit_sha": f"{rng.getrandbits(160):040x}",
                "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_s)),
                "repository": "github.com/acme/shop",
                "url": f"https://ci.example.com/deploys/{i}",
            }
        )
    return out


def _cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid`` and its child processes, by
    thread name (children's prefixed with ``worker<i>:``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for i, proc in enumerate([pid, *child_pids(pid)]):
        prefix = "" if i == 0 else f"worker{i - 1}:"
        try:
            tasks = list(Path(f"/proc/{proc}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                name = prefix + (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _status_kb(pid: int, *keys: str) -> dict[str, int]:
    out = dict.fromkeys(keys, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k = line.split(":", 1)[0]
            if k in out:
                out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _by_partition(m: dict[str, float], name: str) -> dict[int, int]:
    prefix = name + '{partition="'
    return {int(k[len(prefix) : -2]): int(v) for k, v in m.items() if k.startswith(prefix)}


def _buffer_summary(m: dict[str, float], peak_buffered: float) -> str:
    """The trace buffer's counts from the metrics (n/a: a tree without it)."""

    def get(key: str) -> str:
        return f"{m[key]:,.0f}" if key in m else "n/a"

    def how(x: str) -> str:
        return get('prodloop_traces_completed_total{how="' + x + '"}')

    return (
        f"trace buffer: traces completed by wait {how('wait')}, early {how('early')}, idle {how('idle')}; "
        f"orphan spans {get('prodloop_spans_orphaned_total')}, late spans {get('prodloop_spans_late_total')}; "
        f"most spans buffered (sampled, all partitions) {peak_buffered:,.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--compression", default=None, help="gzip|snappy|lz4|zstd (default: none)")
    ap.add_argument("--profile", action="store_true", help="run the service under cProfile")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--time-order",
        choices=["stream", "shuffled"],
        default="stream",
        help="stream: span times grow with the record order, as live traffic's do; shuffled: every "
        "record anywhere in 30 minutes (bench/ingest.py's workload; every batch touches every window)",
    )
    ap.add_argument(
        "--deploys",
        type=int,
        default=0,
        help="deploy events on the deploys topic before the spans (a deploy history: one a minute "
        "over the workload's services, the last ones within the spans' 30 minutes)",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra settings for prodloop run, e.g. PRODLOOP_STREAM__BATCH_RECORDS=100 (repeatable)",
    )
    ap.add_argument(
        "--records",
        choices=("traces", "batches"),
        default="traces",
        help="traces (the default): one record per trace, keyed by its id, as partition_traces_by_id "
        "writes them; batches: one record per exporter batch of 200-300 spans (bench/peer_otelcol.py's)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        bootstrap, broker = start_broker(tmp, heap="1g")
        try:
            sfx = uuid.uuid4().hex[:8]
            topics = {
                f"bench-spans-{sfx}": args.partitions,
                f"bench-deploys-{sfx}": 1,
                f"bench-incidents-{sfx}": 1,
                f"bench-dlq-{sfx}": 1,
            }
            create_topics(bootstrap, topics)
            if args.deploys:
                produce_deploys(bootstrap, f"bench-deploys-{sfx}", _deploys(args.deploys, args.seed))
            by_trace = args.records == "traces"
            records, keys, n_spans, desc = (
                _records(args.spans, args.seed, args.time_order, by_trace=by_trace, batch_sizes=(200, 300))
                if not by_trace
                else _records(args.spans, args.seed, args.time_order)
            )
            t0 = time.monotonic()
            _produce(bootstrap, f"bench-spans-{sfx}", records, keys, args.compression)
            size_mb = sum(len(r) for r in records) / 1e6
            print(
                f"produced {n_spans:,} spans in {len(records):,} records ({size_mb:.0f} MB, "
                f"{args.compression or 'uncompressed'}) to {args.partitions} partitions, keyed by trace id, "
                f"in {time.monotonic() - t0:.1f}s; {desc}; code from {CODE}"
            )
            ends = end_offsets(bootstrap, f"bench-spans-{sfx}", args.partitions)
            del records, keys
            env = {
                "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "PRODLOOP_KAFKA__TRACES_TOPIC": f"bench-spans-{sfx}",
                "PRODLOOP_KAFKA__DEPLOYS_TOPIC": f"bench-deploys-{sfx}",
                "PRODLOOP_KAFKA__INCIDENTS_TOPIC": f"bench-incidents-{sfx}",
                "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": f"bench-dlq-{sfx}",
                "PRODLOOP_KAFKA__GROUP_ID": f"bench-{sfx}",
                "PRODLOOP_STORE__DSN": f"chdb://{tmp / 'store'}",
                "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "0",
                "PRODLOOP_SERVICE__LOG_LEVEL": "WARNING",
                # the pipeline alone is measured: no gateway receivers beside it
                "PRODLOOP_RECEIVER__GRPC_ENABLED": "false",
                "PRODLOOP_RECEIVER__HTTP_ENABLED": "false",
                **_config_files(tmp),
                **dict(kv.split("=", 1) for kv in args.env),
            }
            if args.profile:
                env["PRODLOOP_BENCH_PROFILE"] = str(tmp / "profile.out")
            run = RunProcess(env, CODE, tmp / "run.log")
            if args.profile:  # restart the same command under cProfile
                run.kill()
                full = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
                full.update(env)
                full["PRODLOOP_SERVICE__METRICS_PORT"] = str(run.port)
                run.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cProfile",
                        "-o",
                        str(tmp / "profile.out"),
                        "-m",
                        "collector.cli",
                        "run",
                    ],
                    cwd=CODE,
                    env=full,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp / "run.log").open("ab"),
                )
            first = last = written_at = None
            peak_buffered = 0.0
            cpu_first: dict[str, float] = {}
            cpu_last: dict[str, float] = {}
            machine_first = machine_last = (0.0, 0.0)
            hwm_kb = 0
            worker_hwm_kb: dict[int, int] = {}
            tree_rss_kb = 0
            main_split = (0, 0)
            deadline = time.monotonic() + 1800
            total_end = sum(ends.values())
            while time.monotonic() < deadline:
                # Scraping costs the measured process CPU and GIL time: every 50 ms until the first
                # record arrives, then every 0.5 s; the end comes from the process's own commit time.
                m = run.metrics()
                now = time.time()
                if first is None and m.get("prodloop_records_in_total", 0) > 0:
                    first = now
                    cpu_first = _cpu_by_thread(run.proc.pid)
                    machine_first = _machine_cpu()
                committed = run.committed(m)
                written = _by_partition(m, "prodloop_written_offset") or committed  # before: no buffer
                peak_buffered = max(
                    peak_buffered, sum(_by_partition(m, "prodloop_trace_buffer_spans").values())
                )
                if written_at is None and sum(written.get(p, 0) for p in ends) >= total_end:
                    written_at = m["prodloop_last_commit_timestamp_seconds"]  # the write of the last offset
                    cpu_last = _cpu_by_thread(run.proc.pid)
                    machine_last = _machine_cpu()
                main_kb = _status_kb(run.proc.pid, "VmHWM", "VmRSS", "RssAnon", "RssFile")
                hwm_kb = max(hwm_kb, main_kb["VmHWM"])
                tree = [main_kb] + [_status_kb(c, "VmHWM", "VmRSS") for c in child_pids(run.proc.pid)]
                for c, st in enumerate(tree[1:]):
                    worker_hwm_kb[c] = max(worker_hwm_kb.get(c, 0), st["VmHWM"])
                if sum(x["VmRSS"] for x in tree) > tree_rss_kb:
                    tree_rss_kb = sum(x["VmRSS"] for x in tree)
                    main_split = (main_kb["RssAnon"], main_kb["RssFile"])
                if sum(committed.get(p, 0) for p in ends) >= total_end:
                    last = m["prodloop_last_commit_timestamp_seconds"]
                    break
                if not run.alive():
                    raise SystemExit(f"prodloop run exited: {run.log_tail()}")
                time.sleep(0.05 if first is None else 0.5)
            final = run.metrics()
            spans_in = final.get("prodloop_spans_in_total", 0)
            batches = final.get("prodloop_batches_written_total", 0)
            rows = final.get("prodloop_rows_written_total", 0)
            run.terminate()
            if first is None or last is None or written_at is None:
                raise SystemExit(f"did not finish: {run.log_tail()}")
            elapsed = written_at - first
            q = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "collector.cli",
                    "query",
                    "modules",
                    "--store",
                    f"chdb://{tmp / 'store'}",
                    "--format",
                    "json",
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=CODE,
            )
            stored = sum(r["spans"] for r in json.loads(q.stdout))
            print(
                f"prodloop run: {n_spans:,} spans from first fetch to the write of the last offset in "
                f"{elapsed:.1f}s = {n_spans / elapsed:,.0f} spans/s (its commit {last - first:.1f}s); "
                f"peak RSS {hwm_kb / 1024:.0f} MB"
            )
            print(_buffer_summary(final, peak_buffered))
            if worker_hwm_kb:
                print(
                    f"  with {len(worker_hwm_kb)} worker processes: their peak RSS "
                    + ", ".join(f"{v / 1024:.0f}" for v in worker_hwm_kb.values())
                    + f" MB; largest sampled RSS of all processes together {tree_rss_kb / 1024:.0f} MB "
                    f"(the consumer process then {main_split[0] / 1024:.0f} MB anonymous + "
                    f"{main_split[1] / 1024:.0f} MB file-backed)"
                )
            cpu = {k: v - cpu_first.get(k, 0.0) for k, v in cpu_last.items()}
            print(
                f"CPU of prodloop run over that time: {sum(cpu.values()):.1f}s ("
                + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(cpu.items(), key=lambda x: -x[1]) if v >= 0.05)
                + ")"
            )
            busy = machine_last[0] - machine_first[0]
            total = machine_last[1] - machine_first[1]
            print(
                f"machine: {100 * busy / max(total, 1):.0f}% of its {os.cpu_count()} cores busy "
                "(prodloop run, the broker, this harness)"
            )
            print(
                f"batches written {batches:,.0f} ({total_end / max(batches, 1):.0f} records, "
                f"{n_spans / max(batches, 1):,.0f} spans each on average), aggregate rows written {rows:,.0f}"
            )
            print(f"check: spans decoded {spans_in:,.0f}, spans stored {stored:,} (produced {n_spans:,})")
            if stored != n_spans:
                raise SystemExit("MISMATCH: stored aggregates do not equal what was produced")
            if args.deploys:
                deploys_in = final.get("prodloop_deploys_in_total", 0)
                print(f"check: deploy events read {deploys_in:,.0f} (produced {args.deploys:,})")
                if deploys_in != args.deploys:
                    raise SystemExit("MISMATCH: deploy events read do not equal what was produced")
            if args.profile:
                print("\nwhere the time goes (cProfile, top 25 by internal time):")
                stats = pstats.Stats(str(tmp / "profile.out"))
                stats.sort_stats("tottime").print_stats(25)
                stats.print_callers("acquire")  # who waits on locks (kafka-python's client, chDB)
                stats.dump_stats(str(Path(tempfile.gettempdir()) / "prodloop-kafka-e2e.prof"))
        finally:
            if broker is not None:
                broker.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
