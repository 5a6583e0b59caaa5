"""Change frequency, coupling and lead time against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from attribution.coupling import change_coupling, lead_times, module_changes
from attribution.history import Commit, CommitGraph, FileChange
from attribution.model import DeployEvent

S = 1_000_000_000


def commit(
    sha: str, t: int, *modules: str, parents: tuple[str, ...] = (), fp: bool = True, author: str = "a@x"
) -> Commit:
    files = tuple(FileChange(f"{m}/f{i}.py", added=2, removed=1, module=m) for i, m in enumerate(modules))
    return Commit(
        "shop", sha * 40, tuple(p * 40 for p in parents), "A", author, t * S, t * S, f"c {sha}", files, fp
    )


def deploy(i: str, sha: str, t: int, env: str = "production", status: str = "succeeded") -> DeployEvent:
    return DeployEvent(i, "shop", env, sha, t * S, status=status)


# a and b change together in 4 of 5 commits; c joins once; commit "6" is a branch commit
LOG = [
    commit("1", 10, "a", "b"),
    commit("2", 20, "a", "b", parents=("1",)),
    commit("3", 30, "a", "b", "c", parents=("2",), author="b@x"),
    commit("4", 40, "a", parents=("3",)),
    commit("6", 45, "a", "b", parents=("3",), fp=False),
    commit("5", 50, "a", "b", parents=("4", "6")),
]


def test_module_changes_count_first_parent_commits_only() -> None:
    rows = {r.module: r for r in module_changes(LOG)}
    assert (rows["a"].changes, rows["b"].changes, rows["c"].changes) == (5, 4, 1)
    assert rows["a"].churn == 5 * 3 and rows["a"].added == 10 and rows["a"].removed == 5
    assert rows["a"].authors == 2 and rows["c"].authors == 1
    assert (rows["a"].first_changed_unix_nano, rows["a"].last_changed_unix_nano) == (10 * S, 50 * S)
    assert [r.module for r in module_changes(LOG)] == ["a", "b", "c"]


def test_coupling_is_shared_over_mean_changes_with_thresholds() -> None:
    pairs = change_coupling(
        LOG, min_revisions=1, min_shared_commits=1, min_coupling=0.0, max_changeset_files=30
    )
    got = {(p.module_a, p.module_b): (p.co_changes, p.coupling) for p in pairs}
    # a: 5 changes, b: 4, c: 1; a&b shared 4 -> 4/4.5; a&c 1 -> 1/3; b&c 1 -> 1/2.5
    assert got == {
        ("a", "b"): (4, pytest.approx(4 / 4.5)),
        ("b", "c"): (1, 0.4),
        ("a", "c"): (1, pytest.approx(1 / 3)),
    }
    assert [(p.module_a, p.module_b) for p in pairs] == [("a", "b"), ("b", "c"), ("a", "c")]
    # thresholds: c has 1 revision; b&c at exactly 0.4 is kept, just above it is not
    kept = change_coupling(
        LOG, min_revisions=1, min_shared_commits=1, min_coupling=0.4, max_changeset_files=30
    )
    assert {(p.module_a, p.module_b) for p in kept} == {("a", "b"), ("b", "c")}
    assert {
        (p.module_a, p.module_b)
        for p in change_coupling(
            LOG, min_revisions=2, min_shared_commits=1, min_coupling=0.0, max_changeset_files=30
        )
    } == {("a", "b")}
    assert (
        change_coupling(LOG, min_revisions=1, min_shared_commits=5, min_coupling=0.0, max_changeset_files=30)
        == []
    )
    # commit 3 touches 3 files: over a 2-file limit it is ignored, so a: 4, b: 3, shared 3
    small = change_coupling(
        LOG, min_revisions=1, min_shared_commits=1, min_coupling=0.0, max_changeset_files=2
    )
    assert [(p.module_a, p.module_b, p.co_changes, p.changes_a, p.changes_b) for p in small] == [
        ("a", "b", 3, 4, 3)
    ]


def test_lead_time_reaches_branch_commits_through_the_merge() -> None:
    graph = CommitGraph(LOG)
    deploys = [
        deploy("d0", "2" * 7, 25, status="failed"),  # never live
        deploy("d1", "2" * 7, 26),  # short SHA: contains 1, 2
        deploy("s1", "5" * 40, 55, env="staging"),  # other environment
        deploy("d2", "5" * 40, 60),  # contains 3, 4, 6 (second parent), 5
    ]
    got = {
        t.sha[0]: (t.deploy_id, t.lead_time_ns // S)
        for t in lead_times(graph, deploys, environment="production")
    }
    assert got == {
        "1": ("d1", 16),
        "2": ("d1", 6),
        "3": ("d2", 30),
        "4": ("d2", 20),
        "6": ("d2", 15),
        "5": ("d2", 10),
    }
    assert lead_times(graph, deploys[:1], environment="production") == []


def test_a_repository_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    from collector.app.history_settings import HistoryRepository
    from collector.app.settings import load_settings
    from collector.errors import ConfigError

    config = tmp_path / "prodloop.yaml"
    config.write_text(
        'history: {repositories: [{name: x, url: "https://bob:hunter2@github.com/acme/x.git"}]}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "url carries credentials" in str(caught.value) and "hunter2" not in str(caught.value)
    ok = HistoryRepository.model_validate(
        {"name": "x", "url": "https://github.com/acme/x.git", "token": "t0k"}
    )
    assert ok.token_value() == "t0k" and "t0k" not in repr(ok)
