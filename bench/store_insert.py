"""Benchmark: one batch's write of partial aggregates into the embedded store (chDB), the CPU
of the writing process per insert.

Workload: ``--rows`` rows (default 900, a stream batch of ~40k spans writes 600-1,500) of
``module_aggregates``, over 5 services, 50 modules, 7 commits and 5 windows, each with latency
and self-time sketches of 200 random durations (``attribution.aggregate.bins_of``), written
with ``ClickHouseStore.write_aggregates`` under a fresh token, as the stream writes a batch.

Two settings, interleaved (A B A B), ``--repeat`` times each on fresh rows:

* **partials**: the store's own inserts (``optimize_on_insert = 0``: the block is not merged by
  key on insert, see ``ClickHouseClient.insert_partials``);
* **merge on insert**: the same with ClickHouse's default ``optimize_on_insert = 1``.

It prints the CPU milliseconds of each insert and the medians, then checks that the store holds
every span written (``sum(spans)`` against the rows' own sum), so speed cannot come from
skipping work.

    .venv/bin/python bench/store_insert.py [--rows 900] [--repeat 12]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.aggregate import AggregateRow, bins_of
from collector.exporters.clickhouse.store import ClickHouseStore

WINDOW_NS = 60_000_000_000
T0 = 1_800_000_000 * 10**9


def make_rows(n: int, rng: random.Random) -> list[AggregateRow]:
    rows = []
    for i in range(n):
        durations = [int(rng.lognormvariate(15, 2)) for _ in range(200)]
        selfs = [d // rng.randint(1, 4) for d in durations]
        rows.append(
            AggregateRow(
                T0 + (i % 5) * WINDOW_NS,
                f"svc{i % 5}",
                "prod",
                "repo",
                f"module{i % 50}",
                (f"@team{i % 9}",),
                f"commit{i % 7}",
                f"deploy{i % 3}",
                "",
                len(durations),
                len(durations) * 1000,
                i % 3,
                (i % 3) * 1000,
                sum(durations),
                sum(durations),
                min(durations),
                max(durations),
                bins_of(durations),
                self_spans=len(selfs),
                self_spans_adjusted_milli=len(selfs) * 1000,
                self_time_sum_ns=sum(selfs),
                self_time_adjusted_sum_ns=sum(selfs),
                self_time_min_ns=min(selfs),
                self_time_max_ns=max(selfs),
                self_bins=bins_of(selfs),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=900)
    ap.add_argument("--repeat", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="prodloop-insert-bench-") as tmp:
        store = ClickHouseStore(f"chdb://{tmp}/store")
        store.apply_migrations()
        own_insert = store.insert

        def merging(table: str, rows: list[list[Any]], columns: Any, settings: Any = None) -> None:
            own_insert(table, rows, columns, {**(settings or {}), "optimize_on_insert": 1})

        times: dict[str, list[float]] = {"partials": [], "merge on insert": []}
        spans = 0
        for rep in range(args.repeat):
            for name in times:
                rows = make_rows(args.rows, rng)
                spans += sum(r.spans for r in rows)
                store.insert = merging if name == "merge on insert" else own_insert
                t0 = time.process_time()
                store.write_aggregates(rows, WINDOW_NS, dedup_token=f"bench-{name}-{rep}")
                times[name].append((time.process_time() - t0) * 1000)
        store.insert = own_insert
        stored = int(store.query("SELECT sum(spans) FROM module_aggregates")[0][0])
        store.close()
    for name, ms in times.items():
        print(
            f"{name:>16}: {' '.join(f'{x:.0f}' for x in ms)} ms CPU per insert of {args.rows} rows; "
            f"median {statistics.median(ms):.1f} ms"
        )
    print(f"check: spans stored {stored:,}, written {spans:,}")
    return 0 if stored == spans else 1


if __name__ == "__main__":
    sys.exit(main())
