"""Git history on real repositories (issue 13): ``prodloop history scan`` reads commits, merges,
renames, binary files and reverts built here with the git CLI at fixed dates, stores them on the
real engine, re-scans incrementally, and `query history|coupling` answer from them.

Every expected number is this file's own: it knows which files each commit wrote and how many
lines, and which deploys shipped which SHAs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attribution.attribute import Attributor
from attribution.history import CommitGraph
from attribution.repository import Repository
from collector.app.history import scan_path
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.conftest import REPO, run_prodloop
from tests.support.gitrepo import T0, Shop, lines

pytestmark = pytest.mark.integration

S = 1_000_000_000


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return Shop(tmp_path / "shop")


def _attributor() -> Attributor:
    return Attributor([Repository(name="shop")])


def test_scan_records_first_parent_merges_renames_and_binary_files(
    store: ClickHouseStore, shop: Shop
) -> None:
    summary = scan_path(store, _attributor(), shop.repo.path, name="shop")
    assert (summary.incremental, summary.new_commits, summary.head) == (False, 7, shop.c5)
    commits = {c.sha: c for c in store.load_commits("shop")}
    assert set(commits) == {shop.c1, shop.c2, shop.f1, shop.c3, shop.m1, shop.c4, shop.c5}
    # the first-parent chain: everything but the branch commit
    assert {s for s, c in commits.items() if not c.on_first_parent} == {shop.f1}
    assert commits[shop.m1].parents == (shop.c3, shop.f1)
    # a merge's diff is against its first parent: what the branch brought in
    m1 = {f.path: (f.added, f.removed, f.module) for f in commits[shop.m1].files}
    assert m1 == {"search/q.py": (4, 0, "search"), "cart/a.py": (1, 0, "cart")}
    c1 = {f.path: (f.added, f.removed, f.module) for f in commits[shop.c1].files}
    assert c1 == {
        "cart/a.py": (3, 0, "cart"),
        "cart/img.png": (0, 0, "cart"),
        "payments/api/h.py": (2, 0, "payments/api"),
    }
    (renamed,) = commits[shop.c4].files
    assert (renamed.old_path, renamed.path, renamed.added, renamed.removed) == (
        "cart/a.py",
        "cart/b.py",
        1,
        0,
    )
    (reverted,) = commits[shop.c5].files
    assert (reverted.path, reverted.added, reverted.removed) == ("payments/api/h.py", 0, 1)
    assert commits[shop.c2].author_email == "bob@example.com"
    assert commits[shop.c2].committed_at_unix_nano == (T0 + 100) * S
    assert commits[shop.c5].message.startswith(f'Revert "c3: payments"\n\nThis reverts commit {shop.c3}')
    # the files at the head, lines and bytes as written
    head = {f.path: (f.lines, f.bytes, f.module) for f in store.load_head_files("shop")}
    assert head == {
        "cart/b.py": (7, len(lines(7)), "cart"),
        "cart/img.png": (0, 7, "cart"),
        "payments/api/h.py": (3, len(lines(3)), "payments/api"),
        "search/q.py": (4, len(lines(4)), "search"),
    }
    # deploy ranges work over the stored graph
    graph = CommitGraph(commits.values())
    assert {c.sha for c in graph.range(shop.c3, shop.c5)} == {shop.f1, shop.m1, shop.c4, shop.c5}


def test_rescans_read_only_new_commits_and_a_rewritten_history_replaces_the_old(
    store: ClickHouseStore, shop: Shop
) -> None:
    first = scan_path(store, _attributor(), shop.repo.path, name="shop")
    again = scan_path(store, _attributor(), shop.repo.path, name="shop")
    assert (again.incremental, again.new_commits, again.state.commits) == (True, 0, 7)
    c6 = shop.repo.commit("c6: search", {"search/q.py": lines(9)}, at=T0 + 700)
    more = scan_path(store, _attributor(), shop.repo.path, name="shop")
    assert (more.incremental, more.new_commits, more.state.commits, more.head) == (True, 1, 8, c6)
    assert more.state.generation == first.state.generation
    # a force push: main rewound to c4 and a different commit on top
    shop.repo.reset(shop.c4)
    c7 = shop.repo.commit("c7: instead", {"cart/b.py": lines(2)}, at=T0 + 800)
    forced = scan_path(store, _attributor(), shop.repo.path, name="shop")
    assert (forced.incremental, forced.new_commits, forced.state.generation) == (
        False,
        7,  # c1 c2 f1 c3 m1 c4 c7
        first.state.generation + 1,
    )
    shas = {c.sha for c in store.load_commits("shop")}
    assert shas == {shop.c1, shop.c2, shop.f1, shop.c3, shop.m1, shop.c4, c7}
    assert c6 not in shas and shop.c5 not in shas


def test_scan_and_queries_from_the_cli(tmp_path: Path, shop: Shop) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    scan = run_prodloop(
        "history",
        "scan",
        "--repo",
        str(shop.repo.path),
        "--repository",
        "shop",
        "--store",
        store,
        "--format",
        "json",
    )
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)[0]["new_commits"] == 7
    deploys = tmp_path / "deploys.jsonl"
    deploys.write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {
                    "deploy_id": "d1",
                    "service": "shop",
                    "environment": "production",
                    "commit_sha": shop.c3,
                    "deployed_at": "2026-01-01T00:05:50Z",
                    "repository": "shop",
                },
                {
                    "deploy_id": "d2",
                    "service": "shop",
                    "environment": "production",
                    "commit_sha": shop.c5,
                    "deployed_at": "2026-01-01T00:11:40Z",
                    "repository": "shop",
                },
            ]
        )
        + "\n"
    )
    ingest = run_prodloop("ingest", "--deploys", str(deploys), "--store", store)
    assert ingest.returncode == 0, ingest.stderr
    since = ["--since", str(T0 - 1), "--until", str(T0 + 3600), "--store", store, "--format", "json"]
    hist = run_prodloop("query", "history", *since)
    assert hist.returncode == 0, hist.stderr
    rows = {r["module"]: r for r in json.loads(hist.stdout)["modules"]}
    # changesets (first parent): cart c1 c2 m1 c4; payments/api c1 c2 c3 c5; search m1
    assert {m: r["changes"] for m, r in rows.items()} == {"cart": 4, "payments/api": 4, "search": 1}
    # churn: cart 3+0 (binary) + 2 + 1 + 1; payments/api 2 + 1 + 1 + 1 (the revert removes one)
    assert (rows["cart"]["churn"], rows["payments/api"]["churn"], rows["search"]["churn"]) == (7, 5, 4)
    assert rows["cart"]["authors"] == 2 and rows["search"]["authors"] == 1
    # lead time: d1 (T0+350) ships c1 c2 c3, d2 (T0+700) ships f1 m1 c4 c5; every commit counts
    # cart: c1 350, c2 250, f1 500, m1 300, c4 200 -> p50 300; payments/api: 350 250 50 100 -> 175;
    # search: f1 500, m1 300 -> 400
    assert rows["cart"]["lead_time_p50_s"] == 300.0
    assert rows["payments/api"]["lead_time_p50_s"] == 175.0
    assert rows["search"]["lead_time_p50_s"] == 400.0
    coupling = run_prodloop(
        "query", "coupling", *since, "--min-revisions", "1", "--min-shared", "1", "--min-coupling", "0"
    )
    assert coupling.returncode == 0, coupling.stderr
    pairs = {
        (p["module_a"], p["module_b"]): (p["co_changes"], p["coupling"])
        for p in json.loads(coupling.stdout)["pairs"]
    }
    # cart & payments/api share c1 c2: 2 / mean(4, 4) = 0.5; cart & search share m1: 1 / mean(4, 1) = 0.4
    assert pairs == {("cart", "payments/api"): (2, 0.5), ("cart", "search"): (1, 0.4)}
    strict = run_prodloop("query", "coupling", *since)
    assert json.loads(strict.stdout)["pairs"] == []  # the defaults need 5 shared commits
    bad = run_prodloop("history", "scan", "--repo", str(tmp_path), "--store", store)
    assert bad.returncode == 2 and "not a git repository" in bad.stderr and str(tmp_path) in bad.stderr


def test_prodloop_run_rescans_the_configured_repositories(tmp_path: Path, shop: Shop) -> None:
    config = tmp_path / "prodloop.yaml"
    config.write_text(
        f"store: {{dsn: 'chdb://{tmp_path / 'store'}'}}\n"
        "receiver: {grpc_port: 0, http_port: 0}\nservice: {metrics_port: 0}\n"
        f"history: {{repositories: [{{name: shop, path: '{shop.repo.path}'}}], scan_interval_seconds: 1}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(4)
        shop.repo.commit("c6: while running", {"search/q.py": lines(9)}, at=T0 + 700)
        time.sleep(4)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert "history scan of shop: 7 new commits" in out and "history scan of shop: 1 new commits" in out
    done = run_prodloop(
        "query",
        "history",
        "--store",
        f"chdb://{tmp_path / 'store'}",
        "--since",
        str(T0 - 1),
        "--format",
        "json",
    )
    rows = {r["module"]: r for r in json.loads(done.stdout)["modules"]}
    assert rows["search"]["changes"] == 2  # m1 and c6
