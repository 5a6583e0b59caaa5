"""Real git repositories for tests, built with the git CLI at fixed dates.

Every method returns what it made (a SHA), so a test states its expected values from what it
built, never from prodloop's scan.
"""

from __future__ import annotations

from pathlib import Path

from collector.demo.history import GitRepo

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def lines(n: int, tag: str = "x") -> str:
    """A file of ``n`` distinct lines."""
    return "".join(f"{tag}{i}\n" for i in range(n))


class Shop:
    """cart and payments/api change together twice; search comes in through a --no-ff merge;
    cart/a.py is renamed; payments' c3 is reverted."""

    def __init__(self, path: Path) -> None:
        r = self.repo = GitRepo(path)
        self.c1 = r.commit(
            "c1: cart and payments",
            {"cart/a.py": lines(3), "cart/img.png": b"\x89PNG\x00\x01\x02", "payments/api/h.py": lines(2)},
            at=T0,
        )
        self.c2 = r.commit(
            "c2: both again (#12)",
            {"cart/a.py": lines(5), "payments/api/h.py": lines(3)},
            at=T0 + 100,
            author="Bob <bob@example.com>",
        )
        r.checkout("feature", create=True)
        self.f1 = r.commit("f1: search", {"search/q.py": lines(4), "cart/a.py": lines(6)}, at=T0 + 200)
        r.checkout("main")
        self.c3 = r.commit("c3: payments", {"payments/api/h.py": lines(4)}, at=T0 + 300)
        self.m1 = r.merge("feature", "Merge pull request #7 from acme/feature", at=T0 + 400)
        r.move("cart/a.py", "cart/b.py")
        self.c4 = r.commit("c4: rename a to b", {"cart/b.py": lines(7)}, at=T0 + 500)
        self.c5 = r.revert(self.c3, at=T0 + 600)
