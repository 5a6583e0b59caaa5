"""DORA metrics (the Four Keys) per service and per code module, with their evidence.  Pure.

Over the live deploys (``status != "failed"``) of one environment whose ``deployed_at`` is in
``[from_unix_nano, to_unix_nano)``, for each service and for each (service, module):

* **Deployment frequency**: ``deploys / days of the range``.
* **Lead time for changes**: the median, in seconds, of ``deployed_at - committed_at`` over
  the commits the counted deploys were the first to contain (:func:`attribution.coupling.lead_times`
  over the service's live deploys to the environment, all parents).
* **Change failure rate**: ``failed deploys / deploys`` (0.0 without deploys).
* **Time to restore**: the median, in seconds, over the failed deploys that were restored, of
  each one's restore time (:func:`time_to_restore_ns`).

A deploy's **range** is ``previous..sha`` (:func:`deploy_range`); the modules it **changed**
are those of the commits of its range (:func:`changed_modules`).  A deploy **failed** when a
failure follows it within the failure window (:func:`deploy_failures`): an incident linked to
it, a rollback, a revert of one of its commits, or a regression ticket.  Each failure
**implicates** the modules it blames among those the deploy changed.

Where this differs from the Four Keys:

* Per module as well as per service: a deploy counts for a module when its range changed the
  module, and a failure counts against a module only when it implicates the module.
* A deploy fails not only through an incident but through a rollback, a revert of one of its
  commits, or a ``regression_after_deploy`` ticket, each within the failure window after it.
* Time to restore is measured per failed deploy, not per incident: an incident's is
  ``resolved - started``; a rollback's is the rollback's deploy time minus the failed
  deploy's; a revert's is the deploy time of the first later deploy containing the revert
  minus the failed deploy's; a ticket never restores.
* Lead time counts every commit a deploy was the first to contain, over all parents (branch
  commits through their merge), not only the commits a push event listed.
* Deployment frequency is a plain rate over the range, not daily/weekly/monthly buckets.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from attribution.coupling import LeadTime, lead_times
from attribution.history import Commit, CommitGraph, reverted_shas
from attribution.model import DeployEvent

FailureKind = Literal["incident", "rollback", "revert", "ticket"]

_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class IncidentLink:
    """An incident and the deploy it was linked to (computed elsewhere; consumed here)."""

    incident_id: str
    deploy_id: str  # "": linked to no deploy
    modules: tuple[str, ...]  # the modules the incident blames; (): none named
    started_at_unix_nano: int
    resolved_at_unix_nano: int = 0  # 0: still open
    deploy_evidence: str = ""  # why this deploy (attribution.incident_links)
    modules_evidence: str = ""  # why these modules


@dataclass(frozen=True, slots=True)
class TicketFinding:
    """A ``regression_after_deploy`` ticket: a regression of ``module`` after ``deploy_id``."""

    key: str
    deploy_id: str
    module: str
    opened_at_unix_nano: int


@dataclass(frozen=True, slots=True)
class DeployChange:
    """What a deploy changed: the commits of its range and their modules."""

    deploy_id: str
    previous_sha: str  # the range's lower end as given ("": every ancestor)
    commits: tuple[Commit, ...]  # newest first, as :meth:`CommitGraph.range`
    modules: tuple[str, ...]  # sorted, unique


@dataclass(frozen=True, slots=True)
class DeployFailure:
    """One piece of evidence that a deploy failed.

    ``kind`` and ``evidence``: ``"incident"`` (the incident id), ``"rollback"`` (the rollback's
    deploy id), ``"revert"`` (the revert commit's SHA) or ``"ticket"`` (the ticket key).
    ``at_unix_nano``: when it happened (the incident's start, the rollback's deploy, the revert's
    commit, the ticket's opening).  ``modules``: the changed modules it implicates (sorted; may
    be empty: the deploy still failed for its service).  ``restored_at_unix_nano``: when service
    was restored (the incident's resolution, the rollback's deploy, the deploy that shipped the
    revert); 0: not (yet) restored.
    """

    deploy_id: str
    kind: FailureKind
    evidence: str
    at_unix_nano: int
    modules: tuple[str, ...]
    restored_at_unix_nano: int


@dataclass(frozen=True, slots=True)
class DoraRow:
    """The four keys of one service (``module == ""``) or one (service, module)."""

    service: str
    environment: str
    module: str  # "": the whole service
    deploys: int
    deploys_per_day: float
    failed_deploys: int
    change_failure_rate: float  # failed_deploys / deploys; 0.0 without deploys
    lead_time_p50_s: float | None  # None: no commit first deployed
    time_to_restore_p50_s: float | None  # None: no failed deploy restored
    deploy_ids: tuple[str, ...]  # the counted deploys, by deployed_at then id
    incident_ids: tuple[str, ...]  # the incidents among the row's failures, sorted
    failed_deploy_ids: tuple[str, ...] = ()  # the failed ones among deploy_ids, same order


def _order(d: DeployEvent) -> tuple[int, str]:
    return (d.deployed_at_unix_nano, d.deploy_id)


def _previous_sha(deploy: DeployEvent, previous: DeployEvent | None) -> str:
    if deploy.previous_sha:
        return deploy.previous_sha
    return previous.commit_sha if previous is not None else ""


def previous_deploy(deploy: DeployEvent, deploys: Iterable[DeployEvent]) -> DeployEvent | None:
    """The last live deploy of ``deploy``'s service and environment before it (by
    ``deployed_at``, then ``deploy_id``) among ``deploys``, or None."""
    key = _order(deploy)
    earlier = [
        d
        for d in deploys
        if d.live and d.service == deploy.service and d.environment == deploy.environment and _order(d) < key
    ]
    return max(earlier, key=_order, default=None)


def deploy_range(deploy: DeployEvent, previous: DeployEvent | None, graph: CommitGraph) -> list[Commit]:
    """The commits of ``prev..deploy.commit_sha`` (newest first), where ``prev`` is
    ``deploy.previous_sha`` when set, else the SHA of ``previous`` (the previous live deploy of
    the same service and environment, by ``deployed_at`` then ``deploy_id``), else ``""``
    (every ancestor).  Short SHAs are resolved by the graph; an unknown ``prev`` also means
    every ancestor, an unknown deploy SHA an empty range."""
    return graph.range(_previous_sha(deploy, previous), deploy.commit_sha)


def changed_modules(deploy: DeployEvent, previous: DeployEvent | None, graph: CommitGraph) -> tuple[str, ...]:
    """The modules (:attr:`Commit.modules`) of the commits of :func:`deploy_range`, sorted."""
    return tuple(sorted({m for c in deploy_range(deploy, previous, graph) for m in c.modules}))


def _timelines(deploys: Sequence[DeployEvent], environment: str) -> dict[str, list[DeployEvent]]:
    """The live deploys to ``environment`` per service, by ``deployed_at`` then ``deploy_id``."""
    out: dict[str, list[DeployEvent]] = defaultdict(list)
    for d in deploys:
        if d.live and d.environment == environment:
            out[d.service].append(d)
    for timeline in out.values():
        timeline.sort(key=_order)
    return dict(out)


class _Ancestry:
    """:meth:`CommitGraph.ancestors` and :meth:`CommitGraph.range`, computed once per SHA."""

    def __init__(self, graph: CommitGraph) -> None:
        self.graph = graph
        self._ancestors: dict[str, frozenset[str]] = {}
        self._resolved: dict[str, str | None] = {}

    def resolve(self, sha: str) -> str | None:
        if sha not in self._resolved:
            self._resolved[sha] = self.graph.resolve(sha)
        return self._resolved[sha]

    def of(self, sha: str) -> frozenset[str]:
        full = self.resolve(sha)
        if full is None:
            return frozenset()
        hit = self._ancestors.get(full)
        if hit is None:
            hit = self._ancestors[full] = frozenset(self.graph.ancestors(full))
        return hit

    def range(self, previous_sha: str, sha: str) -> list[Commit]:
        inside = self.of(sha)
        if previous_sha:
            inside = inside - self.of(previous_sha)
        commits = self.graph.commits
        return sorted((commits[s] for s in inside), key=lambda c: (-c.committed_at_unix_nano, c.sha))


ServiceModules = Mapping[str, Collection[str]]


def _changes(
    timelines: Mapping[str, Sequence[DeployEvent]], ancestry: _Ancestry, runs: ServiceModules | None
) -> dict[str, DeployChange]:
    out: dict[str, DeployChange] = {}
    for service, timeline in timelines.items():
        previous: DeployEvent | None = None
        known = runs.get(service) if runs else None
        for d in timeline:
            prev = _previous_sha(d, previous)
            commits = tuple(ancestry.range(prev, d.commit_sha))
            modules = tuple(sorted({m for c in commits for m in c.modules if known is None or m in known}))
            out[d.deploy_id] = DeployChange(d.deploy_id, prev, commits, modules)
            previous = d
    return out


def deploy_changes(
    deploys: Sequence[DeployEvent],
    graph: CommitGraph,
    *,
    environment: str,
    service_modules: ServiceModules | None = None,
) -> dict[str, DeployChange]:
    """:func:`deploy_range` and :func:`changed_modules` of every live deploy to
    ``environment``, keyed by deploy id (each deploy's ``previous`` is the live deploy before it
    of the same service).

    ``service_modules``: the modules each service runs (its spans' modules).  In a monorepo a
    deploy ships every commit since the last one, but changes only the modules its service
    runs: a service listed here changes only those (a service not listed, every module)."""
    return _changes(_timelines(deploys, environment), _Ancestry(graph), service_modules)


def _failures(
    timelines: Mapping[str, Sequence[DeployEvent]],
    changes: Mapping[str, DeployChange],
    ancestry: _Ancestry,
    links: Sequence[IncidentLink],
    tickets: Sequence[TicketFinding],
    window_ns: int,
) -> dict[str, list[DeployFailure]]:
    links_by: dict[str, list[IncidentLink]] = defaultdict(list)
    for link in links:
        if link.deploy_id:
            links_by[link.deploy_id].append(link)
    tickets_by: dict[str, list[TicketFinding]] = defaultdict(list)
    for t in tickets:
        tickets_by[t.deploy_id].append(t)
    # which deploys' ranges hold a commit: the candidates a revert of it blames
    holders: dict[str, list[str]] = defaultdict(list)
    for change in changes.values():
        for c in change.commits:
            holders[c.sha].append(change.deploy_id)
    # deploy id -> (deploy, its timeline, its index there)
    where: dict[str, tuple[DeployEvent, Sequence[DeployEvent], int]] = {
        d.deploy_id: (d, timeline, i) for timeline in timelines.values() for i, d in enumerate(timeline)
    }
    out: dict[str, list[DeployFailure]] = defaultdict(list)

    def within(d: DeployEvent, t: int) -> bool:
        return d.deployed_at_unix_nano <= t <= d.deployed_at_unix_nano + window_ns

    for deploy_id, (d, timeline, i) in where.items():
        changed = changes[deploy_id].modules
        for link in links_by.get(deploy_id, ()):
            if within(d, link.started_at_unix_nano):
                blamed = tuple(sorted({m for m in link.modules if m in changed})) if link.modules else changed
                out[deploy_id].append(
                    DeployFailure(
                        deploy_id,
                        "incident",
                        link.incident_id,
                        link.started_at_unix_nano,
                        blamed,
                        link.resolved_at_unix_nano,
                    )
                )
        head = ancestry.resolve(d.commit_sha)
        if head is not None:
            contained = ancestry.of(head)
            for later in timeline[i + 1 :]:
                if not within(d, later.deployed_at_unix_nano):
                    break
                back = ancestry.resolve(later.commit_sha)
                if back is not None and back != head and back in contained:
                    at = later.deployed_at_unix_nano
                    out[deploy_id].append(
                        DeployFailure(deploy_id, "rollback", later.deploy_id, at, changed, at)
                    )
                    break  # the first rollback restored service
        for t in tickets_by.get(deploy_id, ()):
            if within(d, t.opened_at_unix_nano):
                blamed = (t.module,) if t.module in changed else ()
                out[deploy_id].append(
                    DeployFailure(deploy_id, "ticket", t.key, t.opened_at_unix_nano, blamed, 0)
                )

    for revert in ancestry.graph.commits.values():
        reverted = {ancestry.resolve(s) for s in reverted_shas(revert.message)}
        blamed_by: dict[str, set[str]] = defaultdict(set)  # deploy id -> implicated modules
        for x in reverted:
            if x is None:
                continue
            for deploy_id in holders.get(x, ()):
                if within(where[deploy_id][0], revert.committed_at_unix_nano):
                    changed = changes[deploy_id].modules
                    blamed_by[deploy_id].update(m for m in ancestry.graph.commits[x].modules if m in changed)
        for deploy_id, implicated in blamed_by.items():
            _, timeline, i = where[deploy_id]
            restored = next(
                (
                    r.deployed_at_unix_nano
                    for r in timeline[i + 1 :]
                    if revert.sha in ancestry.of(r.commit_sha)
                ),
                0,
            )
            out[deploy_id].append(
                DeployFailure(
                    deploy_id,
                    "revert",
                    revert.sha,
                    revert.committed_at_unix_nano,
                    tuple(sorted(implicated)),
                    restored,
                )
            )
    for failures in out.values():
        failures.sort(key=lambda f: (f.at_unix_nano, f.kind, f.evidence))
    return dict(out)


def deploy_failures(
    deploys: Sequence[DeployEvent],
    graph: CommitGraph,
    links: Sequence[IncidentLink],
    tickets: Sequence[TicketFinding],
    *,
    environment: str,
    window_ns: int,
    service_modules: ServiceModules | None = None,
) -> dict[str, list[DeployFailure]]:
    """The failures of every live deploy ``D`` to ``environment``, keyed by deploy id; only
    failed deploys are keys.  "Within the window" is ``[D.deployed_at, D.deployed_at +
    window_ns]``, both ends included; ``changed`` is :func:`changed_modules` of ``D``.

    * ``incident``: a link with ``D``'s deploy id that started within the window; implicates
      the link's modules that ``D`` changed (all of ``changed`` when the link names none);
      restored when the incident was resolved.
    * ``rollback``: the first later live deploy ``R`` of the same service within the window
      whose SHA is a strict ancestor of ``D``'s (a redeploy of an earlier SHA); implicates all
      of ``changed``; restored at ``R.deployed_at``.
    * ``revert``: a commit of the graph committed within the window whose message reverts
      (:func:`attribution.history.reverted_shas`, prefixes resolved) commits of ``D``'s range;
      implicates their modules; restored at the deploy time of the first later live deploy of
      the same service containing the revert commit, else 0.  One failure per revert commit.
    * ``ticket``: a ticket for ``D`` opened within the window; implicates its module if ``D``
      changed it, else none (``D`` still failed for its service); never restored.

    Each deploy's failures are sorted by time, kind, evidence.
    """
    timelines = _timelines(deploys, environment)
    ancestry = _Ancestry(graph)
    changes = _changes(timelines, ancestry, service_modules)
    return _failures(timelines, changes, ancestry, links, tickets, window_ns)


def time_to_restore_ns(deploy: DeployEvent, failures: Sequence[DeployFailure]) -> int | None:
    """The restore time of a failed deploy: the shortest among its restored failures
    (``restored_at != 0``), where an incident's is ``restored_at - at`` (resolved - started)
    and a rollback's or revert's is ``restored_at - deploy.deployed_at``; never below 0.
    None when no failure was restored."""
    times = [
        max(
            0,
            f.restored_at_unix_nano
            - (f.at_unix_nano if f.kind == "incident" else deploy.deployed_at_unix_nano),
        )
        for f in failures
        if f.restored_at_unix_nano
    ]
    return min(times) if times else None


def _median_s(values_ns: Sequence[int]) -> float | None:
    return statistics.median(values_ns) / 1e9 if values_ns else None


def _row(
    service: str,
    environment: str,
    module: str,
    counted: Sequence[DeployEvent],
    failures: Mapping[str, Sequence[DeployFailure]],
    leads: Sequence[LeadTime],
    days: float,
) -> DoraRow:
    failed = [d for d in counted if failures.get(d.deploy_id)]
    restores = [r for d in failed if (r := time_to_restore_ns(d, failures[d.deploy_id])) is not None]
    incidents = sorted({f.evidence for d in failed for f in failures[d.deploy_id] if f.kind == "incident"})
    return DoraRow(
        service=service,
        environment=environment,
        module=module,
        deploys=len(counted),
        deploys_per_day=len(counted) / days if days > 0 else 0.0,
        failed_deploys=len(failed),
        change_failure_rate=len(failed) / len(counted) if counted else 0.0,
        lead_time_p50_s=_median_s([lt.lead_time_ns for lt in leads]),
        time_to_restore_p50_s=_median_s(restores),
        deploy_ids=tuple(d.deploy_id for d in counted),
        incident_ids=tuple(incidents),
        failed_deploy_ids=tuple(d.deploy_id for d in failed),
    )


def dora(
    deploys: Sequence[DeployEvent],
    graph: CommitGraph,
    links: Sequence[IncidentLink],
    tickets: Sequence[TicketFinding],
    *,
    environment: str,
    window_ns: int,
    from_unix_nano: int,
    to_unix_nano: int,
    service_modules: ServiceModules | None = None,
) -> list[DoraRow]:
    """The four keys per service and per (service, module), sorted by service, environment,
    module (the service's row, ``module == ""``, first).

    * Rows: one per service with any deploy event to ``environment`` (any status, any time: a
      service with none counted gets a row of zeros and Nones), and one per (service, module)
      for every module a counted deploy of the service changed.
    * ``deploys``: the service's live deploys to ``environment`` with ``deployed_at`` in
      ``[from_unix_nano, to_unix_nano)``; per module, those that changed the module.
      ``deploys_per_day = deploys / ((to - from) / 1 day)`` (0.0 for an empty range).
    * ``failed_deploys``: per service, the counted deploys with any failure
      (:func:`deploy_failures`); per module, those with a failure implicating the module.
      ``change_failure_rate = failed_deploys / deploys`` (0.0 without deploys).
    * ``lead_time_p50_s``: the median over the commits the counted deploys were the first live
      deploy of the service to contain (:func:`attribution.coupling.lead_times` over the
      service's deploys, so earlier deploys, also before the range, claim their commits first);
      per module, over those commits whose modules include it.  None without commits.
    * ``time_to_restore_p50_s``: the median of :func:`time_to_restore_ns` over the row's failed
      deploys that were restored, taking only the failures the row counts (per module: those
      implicating it).  None when none was restored.
    * ``incident_ids``: the incidents among the failures the row counts.

    Previous deploys, rollbacks and the deploys that ship a revert are looked up among all the
    live deploys given, inside the range or not.  ``service_modules``: see :func:`deploy_changes`.
    """
    timelines = _timelines(deploys, environment)
    ancestry = _Ancestry(graph)
    changes = _changes(timelines, ancestry, service_modules)
    failures = _failures(timelines, changes, ancestry, links, tickets, window_ns)
    days = (to_unix_nano - from_unix_nano) / _DAY_NS
    rows: list[DoraRow] = []
    for service in sorted({d.service for d in deploys if d.environment == environment}):
        timeline = timelines.get(service, [])
        counted = [d for d in timeline if from_unix_nano <= d.deployed_at_unix_nano < to_unix_nano]
        ids = {d.deploy_id for d in counted}
        leads = [lt for lt in lead_times(graph, timeline, environment=environment) if lt.deploy_id in ids]
        rows.append(_row(service, environment, "", counted, failures, leads, days))
        for module in sorted({m for d in counted for m in changes[d.deploy_id].modules}):
            touched = [d for d in counted if module in changes[d.deploy_id].modules]
            blamed = {
                d.deploy_id: [f for f in failures.get(d.deploy_id, ()) if module in f.modules]
                for d in touched
            }
            module_leads = [lt for lt in leads if module in graph.commits[lt.sha].modules]
            rows.append(_row(service, environment, module, touched, blamed, module_leads, days))
    rows.sort(key=lambda r: (r.service, r.environment, r.module))
    return rows
