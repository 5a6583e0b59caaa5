"""Real git repositories for tests, built with the git CLI at fixed dates.

Every method returns what it made (a SHA), so a test states its expected values from what it
built, never from prodloop's scan.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


class GitRepo:
    def __init__(self, path: Path, *, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)

    def git(self, *args: str, at: int = 0, author: str = "Ada <ada@example.com>") -> str:
        name, _, email = author.partition(" <")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email.rstrip(">"),
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email.rstrip(">"),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        if at:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{at} +0000"
        done = subprocess.run(
            ["git", "-C", str(self.path), *args], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def write(self, files: dict[str, str | bytes | None]) -> None:
        """Write (or, for None, delete) files and stage them."""
        for rel, content in files.items():
            p = self.path / rel
            if content is None:
                self.git("rm", "-q", rel)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
            self.git("add", rel)

    def commit(
        self,
        message: str,
        files: dict[str, str | bytes | None] | None = None,
        *,
        at: int,
        author: str = "Ada <ada@example.com>",
    ) -> str:
        self.write(files or {})
        self.git("commit", "-q", "--allow-empty", "-m", message, at=at, author=author)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def move(self, old: str, new: str) -> None:
        (self.path / new).parent.mkdir(parents=True, exist_ok=True)
        self.git("mv", old, new)

    def checkout(self, branch: str, *, create: bool = False, start: str = "") -> None:
        self.git("checkout", "-q", *(["-b", branch] if create else [branch]), *([start] if start else []))

    def merge(self, branch: str, message: str, *, at: int) -> str:
        self.git("merge", "-q", "--no-ff", "-m", message, branch, at=at)
        return self.head()

    def revert(self, sha: str, *, at: int) -> str:
        self.git("revert", "--no-edit", sha, at=at)
        return self.head()

    def reset(self, sha: str) -> None:
        self.git("reset", "-q", "--hard", sha)


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
