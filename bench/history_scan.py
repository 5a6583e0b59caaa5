"""Benchmark: ``prodloop history scan`` on a large generated repository (issue 13).

Workload: bench/history_repo.py's repository - 50,000 commits over 2,000 files in 40 modules,
1-12 files per commit, 5% merges, 1% renames, fixed dates - written with ``git fast-import``.
Measured, in one process on the embedded store (chDB), each phase timed apart:

* **full scan**: ``collector.app.history.scan_path`` from nothing - git reads the history
  (``git log --numstat -M --diff-merges=first-parent``), every file is mapped to its module
  with the attribution rules, and the commits, their files and the head's files are stored;
* **re-scan**: 100 commits appended (``history_repo.append``), then ``scan_path`` again, which
  reads only the new commits.

The scan's counts are checked against the generator's own (commits, first-parent commits,
head files), so speed cannot come from skipping work.  Targets here: full < 60 s, re-scan < 5 s.

    .venv/bin/python bench/history_scan.py [--commits 50000] [--work /tmp/history-bench]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.attribute import Attributor
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from bench.history_repo import RepoSpec, append, generate
from collector.app.history import scan_path
from collector.exporters.clickhouse.store import ClickHouseStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=50_000)
    ap.add_argument("--append", type=int, default=100)
    ap.add_argument("--work", type=Path, default=None, help="work directory [default: a temp dir]")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="history-bench-"))
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    spec = RepoSpec(commits=args.commits)
    t = time.perf_counter()
    truth = generate(repo, spec)
    print(
        f"generated {truth.commits} commits ({truth.merges} merges, {truth.renames} renames) in {time.perf_counter() - t:.1f} s"
    )

    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = ClickHouseStore(f"chdb://{store_dir}", "bench")
    store.apply_migrations()
    # module = the top directory, as the generator builds them (mod00 .. mod39)
    attributor = Attributor([Repository(name="bench", modules=ModuleConfig(module_depth=1))])

    full = scan_path(store, attributor, repo, name="bench")
    stored = store.load_commits("bench")
    first_parent = sum(c.on_first_parent for c in stored)
    modules = {f.module for c in stored for f in c.files}
    ok = (
        full.new_commits == truth.commits
        and len(stored) == truth.commits
        and first_parent == truth.first_parent_commits
        and full.head_files == truth.head_files
        and len(modules) == spec.modules
    )
    print(
        f"full scan: {full.seconds:.1f} s for {full.new_commits} commits "
        f"({sum(len(c.files) for c in stored)} file changes, {len(modules)} modules, {full.head_files} head files)"
        f" [counts {'match' if ok else 'DIFFER from'} the generator's]"
    )

    t = time.perf_counter()
    truth2 = append(repo, spec, args.append, seed=spec.seed + 1)
    print(f"appended {truth2.commits - truth.commits} commits in {time.perf_counter() - t:.1f} s")
    again = scan_path(store, attributor, repo, name="bench")
    ok2 = again.incremental and again.new_commits == truth2.commits - truth.commits
    ok2 = ok2 and again.state.commits == truth2.commits
    print(
        f"re-scan: {again.seconds:.2f} s for {again.new_commits} new commits "
        f"({again.state.commits} stored) [counts {'match' if ok2 else 'DIFFER from'} the generator's]"
    )
    store.close()
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok and ok2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
