"""Suspect commits: ranking and Markdown against hand-computed values."""

from __future__ import annotations

from attribution.history import Commit, CommitGraph, FileChange
from attribution.suspects import Suspect, rank_suspects

S = 1_000_000_000
MODULES = ("payments/api", "payments/retry")


def fc(path: str, added: int, removed: int = 0) -> FileChange:
    """payments/<x>/... maps to module payments/<x>, cart/... to cart, top-level files to none."""
    parts = path.split("/")
    module = "" if len(parts) == 1 else "/".join(parts[:2]) if parts[0] == "payments" else parts[0]
    return FileChange(path, added, removed, module=module)


def commit(sha: str, t: int, message: str, *files: FileChange, parents: tuple[str, ...] = ()) -> Commit:
    return Commit(
        "shop",
        sha * 40,
        tuple(p * 40 for p in parents),
        f"Dev {sha}",
        f"dev{sha}@example.com",
        t * S,
        t * S,
        message,
        files,
    )


# 1 - 2 - 3 - 4 - 5 - 6 ---- 9 (merge of the branch 7 - 8, which forked at 4)
LOG = [
    commit("1", 100, "cart: first cut", fc("cart/cart.py", 10)),
    commit(
        "2",
        200,
        "payments: retry on 503 (#41)\n\nBacks off 3 times.",
        fc("payments/retry/policy.py", 30, 5),
        fc("payments/retry/test_policy.py", 20),
        parents=("1",),
    ),
    commit(
        "3",
        300,
        "payments: validate currency | totals (#42)",
        fc("cart/total.py", 40),
        fc("payments/api/handler.py", 8, 2),
        parents=("2",),
    ),
    commit("4", 400, "payments: retry budget", fc("payments/retry/policy.py", 6, 4), parents=("3",)),
    commit("5", 400, "docs: README", fc("README.md", 90, 10), parents=("4",)),
    commit("6", 500, "cart: rewrite totals", fc("cart/total.py", 60, 40), parents=("5",)),
    commit("7", 450, "cart: coupons", fc("cart/coupons.py", 30), parents=("4",)),
    commit("8", 450, "cart: coupon limits", fc("cart/limits.py", 20, 10), parents=("7",)),
    commit(
        "9",
        600,
        "Merge pull request #43 from dev/coupons",
        fc("cart/coupons.py", 30),
        fc("cart/limits.py", 20, 10),
        fc("payments/api/handler.py", 500),  # a conflict resolution: would rank first if counted
        parents=("6", "8"),
    ),
]
GRAPH = CommitGraph(LOG)


def test_touched_by_module_churn_first_then_others_by_churn_ties_by_recency_then_sha() -> None:
    got = rank_suspects(GRAPH.range("1" * 40, "9" * 40), MODULES, top=10)
    # touched: 2 (35+20=55), 4 (10, t=400), 3 (10, t=300; its cart churn does not count)
    # others by total churn: 6 (100, t=500), 5 (100, t=400), 7 and 8 (30, t=450: SHA order)
    # the merge 9 repeats its branch: skipped
    assert [(s.sha[0], s.rank, s.touched, s.module_churn, s.churn) for s in got] == [
        ("2", 1, True, 55, 55),
        ("4", 2, True, 10, 10),
        ("3", 3, True, 10, 50),
        ("6", 4, False, 0, 100),
        ("5", 5, False, 0, 100),
        ("7", 6, False, 0, 30),
        ("8", 7, False, 0, 30),
    ]
    assert [s.sha[0] for s in rank_suspects(GRAPH.range("1" * 40, "9" * 40), MODULES)] == [
        "2",
        "4",
        "3",
        "6",
        "5",
    ]
    assert rank_suspects(LOG, MODULES, top=0) == []


def test_suspect_fields_files_in_the_modules_first_and_pull_requests() -> None:
    by_sha = {s.sha[0]: s for s in rank_suspects(LOG, MODULES, top=10)}
    three = by_sha["3"]
    assert three.files == ("payments/api/handler.py", "cart/total.py")
    assert three.pull_requests == (42,)
    assert three.subject == "payments: validate currency | totals (#42)"
    assert (three.author_name, three.author_email, three.committed_at_unix_nano) == (
        "Dev 3",
        "dev3@example.com",
        300 * S,
    )
    assert by_sha["2"].subject == "payments: retry on 503 (#41)"
    assert by_sha["2"].pull_requests == (41,)
    assert by_sha["1"].pull_requests == ()
    # the first commit is outside the range but inside LOG: cart churn 10, the smallest
    assert by_sha["1"].rank == 8


def test_at_most_ten_files_in_the_modules_first() -> None:
    wide = commit(
        "a",
        700,
        "cart: rename everything",
        *(fc(f"cart/f{i:02}.py", 1) for i in range(11)),
        fc("payments/api/routes.py", 3),
    )
    (s,) = rank_suspects([wide], MODULES)
    assert s.files == ("payments/api/routes.py", *(f"cart/f{i:02}.py" for i in range(9)))
    assert (s.touched, s.module_churn, s.churn) == (True, 3, 14)


def test_merges_kept_when_the_range_has_nothing_else() -> None:
    got = rank_suspects([LOG[8]], MODULES)
    assert [(s.sha[0], s.module_churn, s.pull_requests) for s in got] == [("9", 500, (43,))]


def test_suspect_is_a_frozen_value() -> None:
    s = rank_suspects([LOG[0]], MODULES)[0]
    assert s == Suspect(
        "1" * 40,
        "cart: first cut",
        "Dev 1",
        "dev1@example.com",
        100 * S,
        False,
        0,
        10,
        ("cart/cart.py",),
        (),
        1,
    )
