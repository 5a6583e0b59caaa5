"""Benchmark: prodloop side by side with the OpenTelemetry Collector on one Kafka topic.

The peer is the Collector's own pipeline for the same question: kafka receiver ->
spanmetrics connector (with ``code.file.path`` as an extra dimension) -> nop exporter.  It is
built with the OpenTelemetry Collector Builder (``builder`` v0.165.0; contrib kafkareceiver
and spanmetricsconnector v0.165.1, core nopexporter v0.165.0, all from the Go module proxy),
cached under ``PRODLOOP_TOOLS_DIR`` (default ``~/.cache/prodloop/tools``), outside the repo.

One workload is produced once to a local broker (bench/kafka_e2e.py's: whole trace trees in
exporter batches of 200-300 spans, ~10 attributes per span, 1,200 files; one record per batch,
or with ``--records traces`` one per trace keyed by its id, as the Collector's
``partition_traces_by_id`` writes them).  Then the Collector (a fresh group, ``initial_offset:
earliest``) and `prodloop run` (a fresh group and store) consume all of it, interleaved A B A
B, ``--repeat`` times each.  Per run:

* spans/s from the first span taken to the last: the Collector's end is
  ``otelcol_receiver_accepted_spans`` on its metrics endpoint reaching the span count;
  prodloop's is its last-commit gauge once the written offsets reach the topic's end (the
  commit itself trails by ``trace_wait``, while the last traces complete);
* CPU seconds per 1M spans over that interval, of every process of the run (prodloop's
  workers included), and the broker's separately;
* peak RSS and peak PSS of all the run's processes together, sampled every 100 ms, and for
  prodloop the footprint of the embedded engine alone (the RSS of a bare process that opens
  the same chDB store).

Run: ``python bench/peer_otelcol.py`` (``--spans 500000 --repeat 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import kafka_e2e as e2e  # bench/, next to this file

from tests.support.procs import child_pids
from tests.support.streaming import RunProcess, create_topics, end_offsets, free_port, start_broker

BUILDER = "go.opentelemetry.io/collector/cmd/builder@v0.165.0"
CONTRIB = "v0.165.1"
CORE = "v0.165.0"
TOOLS = Path(os.environ.get("PRODLOOP_TOOLS_DIR", Path.home() / ".cache" / "prodloop" / "tools"))
OTELCOL = TOOLS / f"otelcol-peer-{CORE}"
GOMAXPROCS = 2
SAMPLE_S = 0.1

MANIFEST = f"""\
dist:
  name: otelcol-peer
  description: prodloop's peer benchmark (kafka receiver, spanmetrics, nop)
  output_path: {OTELCOL}
receivers:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kafkareceiver {CONTRIB}
connectors:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/connector/spanmetricsconnector {CONTRIB}
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/nopexporter {CORE}
"""


def build_collector() -> Path:
    """The Collector distribution, built once into the tools cache."""
    binary = OTELCOL / "otelcol-peer"
    if binary.exists():
        return binary
    TOOLS.mkdir(parents=True, exist_ok=True)
    builder = TOOLS / "builder"
    env = {**os.environ, "GOBIN": str(TOOLS), "GOFLAGS": os.environ.get("GOFLAGS", "") + " -buildvcs=false"}
    if not builder.exists():
        print(f"go install {BUILDER} (into {TOOLS})", flush=True)
        subprocess.run(["go", "install", BUILDER], env=env, check=True)
    manifest = TOOLS / f"otelcol-peer-{CORE}.yaml"
    manifest.write_text(MANIFEST)
    print(f"building the Collector ({manifest}; a few minutes the first time)", flush=True)
    subprocess.run([str(builder), "--config", str(manifest)], env=env, check=True)
    return binary


def collector_config(bootstrap: str, topic: str, group: str, metrics_port: int) -> str:
    return textwrap.dedent(
        f"""\
        receivers:
          kafka:
            brokers: [{bootstrap}]
            traces:
              topics: [{topic}]
              encoding: otlp_proto
            group_id: {group}
            initial_offset: earliest
            min_fetch_size: 1
            max_fetch_size: 4194304
            max_partition_fetch_size: 2097152
            max_fetch_wait: 250ms
        connectors:
          spanmetrics:
            dimensions:
              - name: code.file.path
            histogram:
              explicit:
                buckets: [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s]
            metrics_flush_interval: 15s
        exporters:
          nop: {{}}
        service:
          telemetry:
            logs:
              level: warn
            metrics:
              level: normal
              readers:
                - pull:
                    exporter:
                      prometheus:
                        host: 127.0.0.1
                        port: {metrics_port}
          pipelines:
            traces:
              receivers: [kafka]
              exporters: [spanmetrics]
            metrics:
              receivers: [spanmetrics]
              exporters: [nop]
        """
    )


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Tree:
    """CPU and memory of a process and its children, sampled."""

    pid: int
    peak_rss_kb: int = 0
    peak_pss_kb: int = 0

    def pids(self) -> list[int]:
        return [self.pid, *child_pids(self.pid)]

    def cpu_s(self) -> float:
        return sum(_cpu_s(p) for p in self.pids())

    def sample(self) -> None:
        pids = self.pids()
        self.peak_rss_kb = max(self.peak_rss_kb, sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids))
        self.peak_pss_kb = max(self.peak_pss_kb, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids))


@dataclass
class Result:
    who: str
    spans_per_s: float
    cpu_per_1m: float
    peak_rss_mb: float
    peak_pss_mb: float
    broker_cpu_per_1m: float
    note: str = ""


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def _accepted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("otelcol_receiver_accepted_spans")
    )


def _measure(
    who: str,
    tree: Tree,
    broker_pid: int | None,
    n_spans: int,
    started: Callable[[], float | None],
    finished: Callable[[], float | None],
    alive: Callable[[], bool],
    timeout_s: float = 1800,
) -> Result:
    """Sample ``tree`` until ``finished()`` gives the end time; ``started()`` the first span's."""
    first = end = None
    cpu0 = cpu1 = broker0 = broker1 = 0.0
    deadline = time.monotonic() + timeout_s
    last_check = 0.0
    while time.monotonic() < deadline:
        tree.sample()
        now = time.monotonic()
        if now - last_check >= (0.05 if first is None else 0.25):
            last_check = now
            if first is None:
                first = started()
                if first is not None:
                    cpu0, broker0 = tree.cpu_s(), _cpu_s(broker_pid) if broker_pid else 0.0
            else:
                end = finished()
                if end is not None:
                    cpu1, broker1 = tree.cpu_s(), _cpu_s(broker_pid) if broker_pid else 0.0
                    break
        if not alive():
            raise SystemExit(f"{who} exited before the end")
        time.sleep(SAMPLE_S)
    if first is None or end is None:
        raise SystemExit(f"{who} did not finish in {timeout_s:.0f}s")
    seconds = max(end - first, 1e-6)
    per_m = 1e6 / n_spans
    return Result(
        who,
        n_spans / seconds,
        (cpu1 - cpu0) * per_m,
        tree.peak_rss_kb / 1024,
        tree.peak_pss_kb / 1024,
        (broker1 - broker0) * per_m,
    )


def run_collector(
    binary: Path, bootstrap: str, topic: str, n_spans: int, tmp: Path, broker_pid: int | None
) -> Result:
    port = free_port()
    config = tmp / f"otelcol-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(collector_config(bootstrap, topic, f"otelcol-{uuid.uuid4().hex[:8]}", port))
    log = (tmp / "otelcol.log").open("ab")
    proc = subprocess.Popen(
        [str(binary), "--config", str(config)],
        env={**os.environ, "GOMAXPROCS": str(GOMAXPROCS)},
        stdout=log,
        stderr=log,
    )
    try:

        def started() -> float | None:
            return time.time() if _accepted(_scrape(port)) > 0 else None

        def finished() -> float | None:
            return time.time() if _accepted(_scrape(port)) >= n_spans else None

        return _measure(
            "the Collector",
            Tree(proc.pid),
            broker_pid,
            n_spans,
            started,
            finished,
            lambda: proc.poll() is None,
        )
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_prodloop(
    bootstrap: str,
    topic: str,
    ends: dict[int, int],
    n_spans: int,
    tmp: Path,
    broker_pid: int | None,
    extra: dict[str, str],
) -> Result:
    sfx = uuid.uuid4().hex[:8]
    store = tmp / f"store-{sfx}"
    create_topics(bootstrap, {f"peer-deploys-{sfx}": 1, f"peer-incidents-{sfx}": 1, f"peer-dlq-{sfx}": 1})
    env = {
        "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "PRODLOOP_KAFKA__TRACES_TOPIC": topic,
        "PRODLOOP_KAFKA__DEPLOYS_TOPIC": f"peer-deploys-{sfx}",
        "PRODLOOP_KAFKA__INCIDENTS_TOPIC": f"peer-incidents-{sfx}",
        "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": f"peer-dlq-{sfx}",
        "PRODLOOP_KAFKA__GROUP_ID": f"peer-{sfx}",
        "PRODLOOP_STORE__DSN": f"chdb://{store}",
        "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "0",
        "PRODLOOP_SERVICE__LOG_LEVEL": "WARNING",
        "PRODLOOP_RECEIVER__GRPC_ENABLED": "false",
        "PRODLOOP_RECEIVER__HTTP_ENABLED": "false",
        "PRODLOOP_AGGREGATION__TRACE_WAIT_MS": "10000",
        **e2e._config_files(tmp),
        **extra,
    }
    run = RunProcess(env, e2e.CODE, tmp / f"run-{sfx}.log")
    total = sum(ends.values())
    try:

        def started() -> float | None:
            return time.time() if run.metrics().get("prodloop_records_in_total", 0) > 0 else None

        def finished() -> float | None:
            m = run.metrics()
            written = e2e._by_partition(m, "prodloop_written_offset")
            return m["prodloop_last_commit_timestamp_seconds"] if sum(written.values()) >= total else None

        result = _measure(
            "prodloop run", Tree(run.proc.pid), broker_pid, n_spans, started, finished, run.alive
        )
    finally:
        run.terminate()
    result.note = f"engine alone {engine_footprint_mb(store):.0f} MB"
    return result


def engine_footprint_mb(store: Path) -> float:
    """Peak RSS of a bare process that opens the chDB store ``store`` (the embedded engine's own cost)."""
    code = (
        "import sys; from collector.exporters.clickhouse.store import ClickHouseStore; "
        f"s = ClickHouseStore('chdb://{store}', 'prodloop'); s.query_modules(); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=e2e.CODE, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024


def _spread(xs: list[float]) -> str:
    return f"{min(xs):,.1f}-{max(xs):,.1f}" if len(xs) > 1 else f"{xs[0]:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, interleaved")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--records",
        choices=("batches", "traces"),
        default="batches",
        help="batches (the default, as issue 14's baseline): one record per exporter batch of 200-300 "
        "spans; traces: one record per trace, as partition_traces_by_id writes them",
    )
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra settings for prodloop run"
    )
    args = ap.parse_args()
    binary = build_collector()
    extra = dict(kv.split("=", 1) for kv in args.env)
    with tempfile.TemporaryDirectory(prefix="prodloop-peer-") as tmp_s:
        tmp = Path(tmp_s)
        bootstrap, broker = start_broker(tmp, heap="1g")
        broker_pid = getattr(broker, "pid", None)
        try:
            topic = f"peer-spans-{uuid.uuid4().hex[:8]}"
            create_topics(bootstrap, {topic: args.partitions})
            records, keys, n_spans, desc = e2e._records(
                args.spans, args.seed, by_trace=args.records == "traces", batch_sizes=(200, 300)
            )
            e2e._produce(bootstrap, topic, records, keys, None)
            ends = end_offsets(bootstrap, topic, args.partitions)
            print(
                f"produced {n_spans:,} spans in {len(records):,} records "
                f"({sum(len(r) for r in records) / 1e6:.0f} MB, {n_spans / len(records):.0f} spans per record) "
                f"to {args.partitions} partitions; {desc}"
            )
            del records, keys
            print(
                f"Collector: {binary}, GOMAXPROCS={GOMAXPROCS}; kafka receiver fetch max 4 MiB, 2 MiB per "
                "partition, wait 250ms; spanmetrics explicit histogram (16 buckets), flush 15s, "
                "dimension code.file.path"
            )
            results: list[Result] = []
            for i in range(args.repeat):
                for who in ("otelcol", "prodloop"):
                    if who == "otelcol":
                        r = run_collector(binary, bootstrap, topic, n_spans, tmp, broker_pid)
                    else:
                        r = run_prodloop(bootstrap, topic, ends, n_spans, tmp, broker_pid, extra)
                    results.append(r)
                    print(
                        f"run {i + 1} {r.who:14s} {r.spans_per_s:>10,.0f} spans/s  CPU {r.cpu_per_1m:5.2f} s/1M spans  "
                        f"peak RSS {r.peak_rss_mb:5.0f} MB  peak PSS {r.peak_pss_mb:5.0f} MB  "
                        f"(broker CPU {r.broker_cpu_per_1m:.2f} s/1M){'  ' + r.note if r.note else ''}",
                        flush=True,
                    )
        finally:
            if broker is not None:
                broker.stop()
    col = [r for r in results if r.who == "the Collector"]
    pro = [r for r in results if r.who == "prodloop run"]
    med = statistics.median
    print(
        f"\nthe Collector: {_spread([r.spans_per_s for r in col])} spans/s, "
        f"{_spread([r.cpu_per_1m for r in col])} CPU s/1M, {_spread([r.peak_rss_mb for r in col])} MB RSS\n"
        f"prodloop run:  {_spread([r.spans_per_s for r in pro])} spans/s, "
        f"{_spread([r.cpu_per_1m for r in pro])} CPU s/1M, {_spread([r.peak_rss_mb for r in pro])} MB RSS\n"
        f"ratios (medians, prodloop / Collector): throughput "
        f"{med([r.spans_per_s for r in pro]) / med([r.spans_per_s for r in col]):.2f}x, CPU "
        f"{med([r.cpu_per_1m for r in pro]) / med([r.cpu_per_1m for r in col]):.2f}x, peak RSS "
        f"{med([r.peak_rss_mb for r in pro]) / med([r.peak_rss_mb for r in col]):.2f}x"
    )


if __name__ == "__main__":
    main()
