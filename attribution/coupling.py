"""Change frequency, change coupling and lead time over git history.  Pure.

* :func:`module_changes`: how often and how much each module changed (changesets only, i.e.
  first-parent commits, see :func:`attribution.history.changesets`).
* :func:`change_coupling`: CodeScene's / Code Maat's "coupling" analysis between modules of
  one repository: modules that keep changing in the same commits.
* :func:`lead_times`: for each commit, the first live deploy to an environment that contains
  it, and the time from commit to that deploy.

The thresholds are plain parameters (the settings live in
``collector.app.history_settings.CouplingSettings``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from attribution.history import Commit, CommitGraph, changesets
from attribution.model import DeployEvent


@dataclass(frozen=True, slots=True)
class ModuleChange:
    """How one module of one repository changed over the changesets."""

    repository: str
    module: str
    changes: int  # changesets (first-parent commits) that touched the module
    churn: int  # added + removed lines in the module
    added: int
    removed: int
    authors: int  # distinct author emails (case-insensitive)
    first_changed_unix_nano: int  # committer time of the first such changeset
    last_changed_unix_nano: int  # committer time of the last one


@dataclass(frozen=True, slots=True)
class Coupling:
    """Two modules of one repository that change together (``module_a < module_b``)."""

    repository: str
    module_a: str
    module_b: str
    co_changes: int  # changesets that touched both
    coupling: float  # co_changes / mean(changes_a, changes_b), 0..1
    changes_a: int  # changesets that touched module_a (after the size filter)
    changes_b: int


@dataclass(frozen=True, slots=True)
class LeadTime:
    """A commit and the first live deploy that contained it."""

    repository: str
    sha: str
    deploy_id: str
    committed_at_unix_nano: int
    deployed_at_unix_nano: int
    lead_time_ns: int  # deployed_at - committed_at, never below 0


def module_changes(commits: Sequence[Commit]) -> list[ModuleChange]:
    """Per (repository, module), over the changesets: sorted by changes, then churn
    (both descending), then module and repository."""
    changes: dict[tuple[str, str], int] = defaultdict(int)
    added: dict[tuple[str, str], int] = defaultdict(int)
    removed: dict[tuple[str, str], int] = defaultdict(int)
    authors: dict[tuple[str, str], set[str]] = defaultdict(set)
    first: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    for c in changesets(commits):
        t = c.committed_at_unix_nano
        touched: set[tuple[str, str]] = set()
        for f in c.files:
            if not f.module:
                continue
            key = (c.repository, f.module)
            touched.add(key)
            added[key] += f.added
            removed[key] += f.removed
        for key in touched:
            changes[key] += 1
            authors[key].add(c.author_email.lower())
            first[key] = min(first.get(key, t), t)
            last[key] = max(last.get(key, t), t)
    rows = [
        ModuleChange(
            repository=repo,
            module=module,
            changes=n,
            churn=added[(repo, module)] + removed[(repo, module)],
            added=added[(repo, module)],
            removed=removed[(repo, module)],
            authors=len(authors[(repo, module)]),
            first_changed_unix_nano=first[(repo, module)],
            last_changed_unix_nano=last[(repo, module)],
        )
        for (repo, module), n in changes.items()
    ]
    rows.sort(key=lambda r: (-r.changes, -r.churn, r.module, r.repository))
    return rows


def change_coupling(
    commits: Sequence[Commit],
    *,
    min_revisions: int,
    min_shared_commits: int,
    min_coupling: float,
    max_changeset_files: int,
) -> list[Coupling]:
    """Module pairs that change together, per repository (pairs across repositories never
    couple).

    Over the changesets, ignoring those touching more than ``max_changeset_files`` files
    (mass reformatting, vendoring): ``co_changes`` is the number of changesets touching both
    modules, ``coupling = co_changes / mean(changes_a, changes_b)`` where ``changes_x`` is the
    number of (kept) changesets touching module x.  A pair is kept when both modules have at
    least ``min_revisions`` changes, ``co_changes >= min_shared_commits`` and
    ``coupling >= min_coupling``.  Sorted by coupling, then co_changes (both descending),
    then repository and names.
    """
    changes: dict[tuple[str, str], int] = defaultdict(int)
    shared: dict[tuple[str, str, str], int] = defaultdict(int)
    for c in changesets(commits):
        if len(c.files) > max_changeset_files:
            continue
        modules = c.modules  # sorted, distinct, non-empty
        for m in modules:
            changes[(c.repository, m)] += 1
        for a, b in combinations(modules, 2):
            shared[(c.repository, a, b)] += 1
    rows: list[Coupling] = []
    for (repo, a, b), n in shared.items():
        ca, cb = changes[(repo, a)], changes[(repo, b)]
        if ca < min_revisions or cb < min_revisions or n < min_shared_commits:
            continue
        degree = 2 * n / (ca + cb)  # one rounding: exact thresholds compare exactly
        if degree < min_coupling:
            continue
        rows.append(Coupling(repo, a, b, n, degree, ca, cb))
    rows.sort(key=lambda r: (-r.coupling, -r.co_changes, r.repository, r.module_a, r.module_b))
    return rows


def lead_times(graph: CommitGraph, deploys: Iterable[DeployEvent], *, environment: str) -> list[LeadTime]:
    """For each commit of ``graph``, the first live deploy to ``environment`` (by
    ``deployed_at``, then ``deploy_id``) whose SHA contains it, over all parents.  Commits
    never deployed, and deploys whose SHA the graph does not resolve (short SHAs are resolved
    with :meth:`CommitGraph.resolve`), are left out.  Pass one event per deploy (the winning
    status, as :class:`attribution.deploys.DeployTimeline` keeps).  Sorted by committer time,
    then SHA.

    Deploys are processed in order, each walking only the commits no earlier deploy
    contained.  The walk may stop at a commit already assigned: the assigned set is always
    the union of the ancestor sets of the deploys processed so far, and a union of
    ancestor-closed sets is ancestor-closed, so every ancestor of an assigned commit is
    assigned too (by an earlier or the same deploy) and has nothing left to give.  The
    commits a deploy reaches are thus exactly ``ancestors(deploy) - assigned``, i.e. those it
    is the first to contain, and every commit is walked once over all deploys.
    """
    live = sorted(
        (d for d in deploys if d.environment == environment and d.live),
        key=lambda d: (d.deployed_at_unix_nano, d.deploy_id),
    )
    commits = graph.commits
    assigned: dict[str, DeployEvent] = {}
    resolved: dict[str, str | None] = {}
    for d in live:
        if d.commit_sha not in resolved:
            resolved[d.commit_sha] = graph.resolve(d.commit_sha)
        head = resolved[d.commit_sha]
        if head is None or head in assigned:
            continue
        assigned[head] = d
        stack = [head]
        while stack:
            for p in commits[stack.pop()].parents:
                if p in commits and p not in assigned:
                    assigned[p] = d
                    stack.append(p)
    rows = [
        LeadTime(
            repository=commits[sha].repository,
            sha=sha,
            deploy_id=d.deploy_id,
            committed_at_unix_nano=commits[sha].committed_at_unix_nano,
            deployed_at_unix_nano=d.deployed_at_unix_nano,
            lead_time_ns=max(0, d.deployed_at_unix_nano - commits[sha].committed_at_unix_nano),
        )
        for sha, d in assigned.items()
    ]
    rows.sort(key=lambda r: (r.committed_at_unix_nano, r.sha))
    return rows
