"""The demo shop's git history: a real repository built with the git CLI at fixed dates, so that
the demo's deploys carry real SHAs and the long loop (coupling, DORA, suspects, hotspots, dead
code) has a history to join.

Three weeks of commits by the shop's people over its modules, ending in three SHAs the demo
deploys (:class:`DemoHistory`):

* ``base``: every service's initial deploy at the run's start (its range: the week before);
* ``payments``: deploy-payments-2.8.0, whose ``retry: jittered exponential backoff (#231)``
  rewrites ``payments/retry`` - the regression the demo's traffic shows;
* ``checkout``: deploy-checkout-1.8.4, a pricing change on a release branch cut at ``base``.

``payments/retry`` and ``payments/gateway`` keep changing together (change coupling); a few
files nobody runs (``pricing/coupons_v1.py``, ``gateway/legacy_adapter.py``,
``libs/featureflags/rollout_v0.py``) are dead-code candidates.  The same arguments give the
same SHAs.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.events import format_rfc3339
from collector.demo.shop import SOURCE_ROOT, code_files

_DAY = 86_400
_PEOPLE = (
    "Alice Martin <alice@acme.example>",
    "Bob Okafor <bob@acme.example>",
    "Carol Nguyen <carol@acme.example>",
    "Dave Kowalski <dave@acme.example>",
    "Erin Sato <erin@acme.example>",
)
DEAD_FILES = (
    "services/checkout/pricing/coupons_v1.py",
    "services/payments/gateway/legacy_adapter.py",
    "libs/featureflags/rollout_v0.py",
)


class GitRepo:
    """A repository built with the git CLI at fixed dates (tests build theirs with it too)."""

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
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
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


@dataclass(frozen=True)
class DemoHistory:
    path: Path
    previous: str  # the commit live before the run (the initial deploys' previous_sha)
    base: str  # every service's initial deploy
    payments: str  # deploy-payments-2.8.0 (the regression)
    checkout: str  # deploy-checkout-1.8.4
    commits: int
    main: tuple[tuple[str, int], ...]  # (sha, committer time in Unix seconds) of main, oldest first


def _body(rng: random.Random, path: str, revision: int, lines: int) -> str:
    module = path.rsplit("/", 1)[0].replace("/", ".")
    out = [f'"""{module}: {path.rsplit("/", 1)[-1]} (revision {revision})."""', ""]
    for i in range(max(2, lines // 4)):
        out += [f"def step_{i}(value):", f"    return value * {rng.randrange(2, 97)} + {i}", "", ""]
    return "\n".join(out[:lines]) + "\n"


def build_history(path: Path, *, start_unix_nano: int, run_seconds: int, seed: int = 7) -> DemoHistory:
    """The shop's repository at ``path`` (created; must not exist), its last commits dated so
    that each deploy of the run (at its start, 40% and 70% of ``run_seconds``) ships one."""
    rng = random.Random(seed)
    repo = GitRepo(path)
    start = start_unix_nano // 1_000_000_000
    files = sorted({p.removeprefix(f"{SOURCE_ROOT}/") for p in code_files()} | set(DEAD_FILES))
    revision: dict[str, int] = {}

    def change(*paths: str, size: int = 0) -> dict[str, str | bytes | None]:
        out: dict[str, str | bytes | None] = {}
        for p in paths:
            revision[p] = revision.get(p, 0) + 1
            out[p] = _body(rng, p, revision[p], size or rng.randrange(16, 90))
        return out

    t = start - 18 * _DAY
    count = 0
    main: list[tuple[str, int]] = []

    def commit(message: str, changes: dict[str, str | bytes | None], author: str = "", at: int = 0) -> str:
        nonlocal t, count
        t = at or t + rng.randrange(3 * 3600, 20 * 3600)
        count += 1
        sha = repo.commit(message, changes, at=t, author=author or rng.choice(_PEOPLE))
        main.append((sha, t))
        return sha

    commit("Initial import of the shop", change(*files), _PEOPLE[0])
    by_module: dict[str, list[str]] = {}
    for f in files:
        by_module.setdefault(f.rsplit("/", 1)[0], []).append(f)
    live = [m for m in by_module if not all(f in DEAD_FILES for f in by_module[m])]
    retry = by_module["services/payments/retry"]
    gateway = [f for f in by_module["services/payments/gateway"] if f not in DEAD_FILES]
    for week in range(6):
        # payments/retry and payments/gateway change together, every week
        commit(
            f"payments: retry budget per gateway, step {week + 1} (#{180 + week})",
            change(rng.choice(retry), rng.choice(gateway)),
        )
        for _ in range(3):
            module = rng.choice(live)
            picked = rng.sample(by_module[module], k=min(len(by_module[module]), rng.randrange(1, 3)))
            commit(
                f"{module.split('/', 1)[-1]}: {rng.choice(('tidy', 'fix edge case', 'faster path', 'more logging'))} (#{200 + count})",
                change(*[p for p in picked if p not in DEAD_FILES] or picked[:1]),
            )
    previous = commit("release: shop 2026.1 (#228)", change(by_module["services/frontend/web"][0]))
    commit("checkout: cart totals in one pass (#229)", change(*by_module["services/checkout/cart"][:2]))
    base = commit(
        "inventory: reservation expiry sweep every 15 s (#230)",
        change(by_module["services/inventory/reservations"][0]),
        at=start - 2 * 3600,
    )
    # the regression, shipped by deploy-payments-2.8.0 at 40% of the run
    at = start + int(run_seconds * 0.4)
    commit(
        "retry: jittered exponential backoff (#231)",
        change(*retry, size=120) | change(rng.choice(gateway)),
        "Carol Nguyen <carol@acme.example>",
        at=at - 20 * 60,
    )
    payments = commit(
        "gateway: log token lookups (#232)",
        change(rng.choice(gateway), size=30),
        "Bob Okafor <bob@acme.example>",
        at=at - 15 * 60,
    )
    # checkout ships from a release branch cut at base (its deploy brings only its own change),
    # merged back into main
    branch = "release/checkout-1.8.4"
    repo.checkout(branch, create=True, start=base)
    at = start + int(run_seconds * 0.7) - 15 * 60
    pricing = [f for f in by_module["services/checkout/pricing"] if f not in DEAD_FILES]
    checkout = commit(
        "pricing: round half-even (#240)", change(pricing[0]), "Dave Kowalski <dave@acme.example>", at=at
    )
    main.pop()  # the release branch's commit
    repo.checkout("main")
    merged = repo.merge(branch, f"Merge branch '{branch}'", at=at + 60)
    main.append((merged, at + 60))
    return DemoHistory(path, previous, base, payments, checkout, count + 1, tuple(main))


def deploy_shas(h: DemoHistory) -> dict[str, tuple[str, str]]:
    """deploy id -> (commit_sha, previous_sha) of the demo's deploys (collector.demo.shop)."""
    initial = {
        f"deploy-{service}-{version}": (h.base, h.previous)
        for service, version in (
            ("checkout", "1.8.3"),
            ("frontend", "3.12.0"),
            ("inventory", "5.2.0"),
            ("payments", "2.7.1"),
        )
    }
    return {
        **initial,
        "deploy-payments-2.8.0": (h.payments, h.base),
        "deploy-checkout-1.8.4": (h.checkout, h.base),
    }


def prior_deploys(
    h: DemoHistory, services: tuple[str, ...], environment: str, repository: str
) -> list[dict[str, Any]]:
    """Weekly deploys of every service before the run: main's last commit before each Monday
    of the history, deployed two hours after it, the last one ``previous`` (the commit the
    run's initial deploys replace).  Deploy events as the deploys topic carries them."""
    previous_at = next(t for sha, t in h.main if sha == h.previous)
    picks: list[tuple[str, int]] = []
    first = h.main[0][1]
    week = first + 7 * _DAY
    while week < previous_at:
        sha = max(((s, t) for s, t in h.main if t < week), key=lambda x: x[1])[0]
        if not picks or picks[-1][0] != sha:
            picks.append((sha, week))
        week += 7 * _DAY
    picks.append((h.previous, previous_at + 2 * 3600))
    return [
        {
            "deploy_id": f"deploy-{service}-w{i + 1}",
            "service": service,
            "environment": environment,
            "commit_sha": sha,
            "deployed_at": format_rfc3339(at * 1_000_000_000),
            "repository": repository,
            "status": "succeeded",
        }
        for service in services
        for i, (sha, at) in enumerate(picks)
    ]
