"""Benchmark: one `prodloop run` process, Kafka -> ClickHouse, end to end.

Produces N spans (default 2,000,000) to a traces topic in Collector-like batches of
100-500 spans per record (the bench/ingest.py workload: ~10 attributes per span, 1,200 files
over 50 modules, unique ids), then starts one `prodloop run` and measures, from its
metrics endpoint, the time from its first fetched record to the commit of the last
offset, and its peak RSS (VmHWM).  The aggregates are then checked: the stored span count
must equal what was produced.

Run: `python bench/kafka_e2e.py` (starts its own Kafka broker from scripts/kafka_broker.py,
or uses PRODLOOP_KAFKA_BOOTSTRAP).  `--profile` runs the service under cProfile and
prints where the time goes.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(REPO))

import bench.ingest as workload  # noqa: E402
from bench.ingest import ExportTraceServiceRequest  # noqa: E402
from tests.support.procs import child_pids  # noqa: E402
from tests.support.streaming import (  # noqa: E402
    RunProcess,
    create_topics,
    end_offsets,
    produce,
    produce_deploys,
    start_broker,
)


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


def _time_fields(data: bytes) -> tuple[int, list[int]]:
    """The earliest span start of a request, and where every span start and end is in it."""
    req = ExportTraceServiceRequest.FromString(data)
    values = [
        v
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
        for v in (sp.start_time_unix_nano, sp.end_time_unix_nano)
    ]
    positions = []
    for v in values:
        raw = v.to_bytes(8, "little")
        pos = data.find(raw)
        assert pos >= 0 and data.find(raw, pos + 1) < 0, "template times must be unique"
        positions.append(pos)
    return min(values), positions


def _records(n_spans: int, seed: int, time_order: str = "stream") -> tuple[list[bytes], int]:
    """Requests of 100-500 spans, ``n_spans`` in all, over 30 minutes of span time.

    ``time_order``: ``stream`` (the default) moves each request's spans to a base time that
    grows with its position, as a Collector exporting live traffic does; ``shuffled`` keeps
    bench/ingest.py's workload, where every request starts anywhere in the 30 minutes, so
    each batch touches every window (many more aggregate rows per span).
    """
    rng = random.Random(seed)
    chosen: list[tuple[int, int]] = []
    total = 0
    sizes = [100, 200, 300, 400, 500]
    counters = dict.fromkeys(sizes, 0)
    while total < n_spans:
        size = rng.choice(sizes)
        chosen.append((size, counters[size]))
        counters[size] += 1
        total += size
    templates: dict[int, list[tuple[bytes, list[int]]]] = {}
    times: dict[tuple[int, int], tuple[int, list[int]]] = {}
    for size in sizes:
        workload.SPANS_PER_REQUEST = size
        templates[size] = workload.build_templates(seed + size, 20)
        if time_order == "stream":
            for j, (t, _) in enumerate(templates[size]):
                times[(size, j)] = _time_fields(t)
    out: list[bytes] = []
    for k, (size, i) in enumerate(chosen):
        t, offsets = templates[size][i % 20]
        buf = bytearray(t)
        if i >= 20:  # copy 0 is the template; later copies get their own ids
            copy = (i // 20).to_bytes(4, "big")
            for pos in offsets:
                buf[pos : pos + 4] = copy
        if time_order == "stream":
            base, positions = times[(size, i % 20)]
            delta = workload.T0 + k * _SPAN_TIME_NS // len(chosen) - base
            for pos in positions:
                buf[pos : pos + 8] = (int.from_bytes(buf[pos : pos + 8], "little") + delta).to_bytes(
                    8, "little"
                )
        out.append(bytes(buf))
    return out, total


_SPAN_TIME_NS = 1800 * 10**9


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
            records, n_spans = _records(args.spans, args.seed, args.time_order)
            t0 = time.monotonic()
            produce(
                bootstrap,
                f"bench-spans-{sfx}",
                records,
                partitions=args.partitions,
                compression=args.compression,
            )
            size_mb = sum(len(r) for r in records) / 1e6
            print(
                f"produced {n_spans:,} spans in {len(records):,} records ({size_mb:.0f} MB, "
                f"{args.compression or 'uncompressed'}) to {args.partitions} partitions in {time.monotonic() - t0:.1f}s"
            )
            ends = end_offsets(bootstrap, f"bench-spans-{sfx}", args.partitions)
            del records
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
            run = RunProcess(env, REPO, tmp / "run.log")
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
                    cwd=REPO,
                    env=full,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp / "run.log").open("ab"),
                )
            first = last = None
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
                    cpu_last = _cpu_by_thread(run.proc.pid)
                    machine_last = _machine_cpu()
                    break
                if not run.alive():
                    raise SystemExit(f"prodloop run exited: {run.log_tail()}")
                time.sleep(0.05 if first is None else 0.5)
            final = run.metrics()
            spans_in = final.get("prodloop_spans_in_total", 0)
            batches = final.get("prodloop_batches_written_total", 0)
            rows = final.get("prodloop_rows_written_total", 0)
            run.terminate()
            if first is None or last is None:
                raise SystemExit(f"did not finish: {run.log_tail()}")
            elapsed = last - first
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
                cwd=REPO,
            )
            stored = sum(r["spans"] for r in json.loads(q.stdout))
            print(
                f"prodloop run: {n_spans:,} spans from first fetch to last commit in {elapsed:.1f}s "
                f"= {n_spans / elapsed:,.0f} spans/s; peak RSS {hwm_kb / 1024:.0f} MB"
            )
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
