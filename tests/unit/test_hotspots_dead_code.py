"""Production pain, hotspots and dead-code candidates against hand-computed values."""

from __future__ import annotations

from attribution.coupling import ModuleChange
from attribution.dead_code import dead_code, dead_modules, last_changed
from attribution.history import Commit, FileChange, HeadFile
from attribution.hotspots import PainWeights, hotspots, production_pain

DAY = 86_400 * 1_000_000_000
W = PainWeights(incidents=3.0, findings=1.0, self_time_regression=2.0, cost_excess=10.0)


def test_pain_is_the_weighted_sum_and_hotspots_multiply_by_changes() -> None:
    keys = [("pay", "prod", "payments/retry"), ("pay", "prod", "payments/api"), ("web", "prod", "cart")]
    pain = production_pain(
        keys,
        incidents={"payments/retry": 2},
        findings={("pay", "prod", "payments/retry"): 1, ("web", "prod", "cart"): 1},
        self_time_regressions={("pay", "prod", "payments/api"): 1},
        shares={("pay", "prod", "payments/retry"): (0.31, 0.08), ("web", "prod", "cart"): (0.1, 0.5)},
        weights=W,
    )
    # retry: 3*2 + 1*1 + 10*(0.31-0.08) = 9.3; api: 2*1 = 2; cart: 1 + 0 (cost below traffic) = 1
    assert [(p.module, p.pain) for p in pain] == [
        ("payments/retry", 9.3),
        ("payments/api", 2.0),
        ("cart", 1.0),
    ]
    assert pain[0].cost_share == 0.31 and pain[1].cost_share is None
    changes = [
        ModuleChange("shop", "payments/retry", 14, 300, 200, 100, 3, 0, 1),
        ModuleChange("shop", "cart", 20, 50, 30, 20, 2, 0, 1),
        ModuleChange("shop", "search", 9, 10, 5, 5, 1, 0, 1),
    ]
    spots = hotspots(changes, pain)
    # retry 14 * 9.3 = 130.2; cart 20 * 1 = 20; search 9 * 0 = 0
    assert [(h.module, h.hotspot) for h in spots] == [
        ("payments/retry", 130.2),
        ("cart", 20.0),
        ("search", 0.0),
    ]


def _commit(sha: str, t: int, *paths: str) -> Commit:
    return Commit("shop", sha * 40, (), "A", "a@x", t, t, "m", tuple(FileChange(p, 1, 0) for p in paths))


def test_dead_code_candidates_are_unseen_head_files_of_judged_repositories() -> None:
    now = 1_000 * DAY
    head = [
        HeadFile("cart/live.py", 100, 3000, "cart", (), "shop"),
        HeadFile("cart/old.py", 200, 6000, "cart", (), "shop"),
        HeadFile("legacy/erp.py", 90, 2000, "legacy", (), "shop"),
        HeadFile("x/y.py", 50, 100, "x", (), "nopaths"),  # its services emit no code.file.path
    ]
    changed = last_changed(
        [
            _commit("1", now - 400 * DAY, "cart/old.py", "legacy/erp.py"),
            _commit("2", now - 90 * DAY, "legacy/erp.py"),
        ]
    )
    assert changed == {("shop", "cart/old.py"): now - 400 * DAY, ("shop", "legacy/erp.py"): now - 90 * DAY}
    seen = {("shop", "cart/live.py"): now - 2 * DAY, ("shop", "cart/old.py"): now - 45 * DAY}
    got = dead_code(head, changed=changed, seen=seen, path_share={"shop": 0.8}, now_unix_nano=now, days=30)
    # old.py: 200 * 400/(400+90) = 163.265; erp.py: 90 * 90/(90+90) = 45.0
    assert [(d.path, d.weight, d.last_seen_unix_nano) for d in got] == [
        ("cart/old.py", 163.265, now - 45 * DAY),
        ("legacy/erp.py", 45.0, 0),
    ]
    assert all(d.confidence == 0.8 for d in got)
    assert [(m.module, m.files, m.lines) for m in dead_modules(head, got)] == [("legacy", 1, 90)]
