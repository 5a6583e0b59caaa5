"""The long loop over the store: git history joined with deploys, incidents, tickets and the
runtime aggregates (docs/history.md).  Loading and storing are here; every analysis is pure
(:mod:`attribution.dora`, :mod:`attribution.incident_links`, :mod:`attribution.suspects`,
:mod:`attribution.hotspots`, :mod:`attribution.dead_code`).

Incident links are recomputed on every read (the history and the aggregates they infer
from grow) and stored when they changed, with their evidence.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from attribution.coupling import Coupling, ModuleChange, change_coupling, module_changes
from attribution.dead_code import DeadFile, dead_code, last_changed
from attribution.dora import (
    DoraRow,
    IncidentLink,
    TicketFinding,
    deploy_range,
    dora,
    previous_deploy,
)
from attribution.events import format_rfc3339
from attribution.history import Commit, CommitGraph
from attribution.hotspots import Pain, PainWeights, hotspots, production_pain
from attribution.incident_links import link_incident
from attribution.incident_window import (
    ModuleSignal,
    incident_windows,
    regressed_modules,
    sum_signals,
)
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules.findings import Finding
from attribution.suspects import Suspect, rank_suspects
from collector.app.history_settings import HistorySettings
from collector.exporters.clickhouse.alert_state import ClickHouseAlertState
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.ports import FindingSuspects, HistoryStore

_NS = 1_000_000_000


@dataclass(frozen=True)
class LoopView:
    """What the analyses read, loaded once."""

    deploys: list[DeployEvent]
    incidents: list[IncidentEvent]
    commits: list[Commit]
    graph: CommitGraph
    links: list[IncidentLink]
    tickets: list[TicketFinding]
    service_modules: dict[str, set[str]]

    def deploy(self, deploy_id: str) -> DeployEvent | None:
        return next((d for d in self.deploys if d.deploy_id == deploy_id), None)

    def range_of(self, deploy: DeployEvent) -> list[Commit]:
        """The commits ``deploy`` brought in (:func:`attribution.dora.deploy_range`)."""
        return deploy_range(deploy, previous_deploy(deploy, self.deploys), self.graph)


def _signal(row: Mapping[str, Any]) -> ModuleSignal:
    """A ``query_modules`` row's sums (self time NULL before migration 0008: 0)."""
    return ModuleSignal(
        int(row["spans"]), int(row["own_errors"]), int(row["self_time_sum_ns"] or 0), int(row["self_spans"])
    )


def _signals(
    store: ClickHouseStore, lo: int, hi: int, services: Sequence[str] | None = None
) -> dict[tuple[str, str, str], ModuleSignal]:
    """Per (service, environment, module): the sums over windows starting in ``[lo, hi)``."""
    out: dict[tuple[str, str, str], ModuleSignal] = defaultdict(ModuleSignal)
    every: list[str | None] = list(services) if services else [None]
    for service in every:
        for r in store.query_modules(
            from_unix_nano=lo, to_unix_nano=hi, service=service, attributed_only=True
        ):
            key = (str(r["service"]), str(r["environment"]), str(r["module"]))
            out[key] = out[key] + _signal(r)
    return dict(out)


def _by_module(signals: Mapping[tuple[str, str, str], ModuleSignal]) -> dict[str, ModuleSignal]:
    return sum_signals((module, s) for (_svc, _env, module), s in signals.items())


def regressed_in(store: ClickHouseStore, incident: IncidentEvent) -> dict[str, str]:
    """The modules of the incident's services that regressed in its window, with why."""
    (b_lo, b_hi), (i_lo, i_hi) = incident_windows(
        incident.started_at_unix_nano, incident.resolved_at_unix_nano
    )
    services = incident.services
    return regressed_modules(
        _by_module(_signals(store, b_lo, b_hi, services)), _by_module(_signals(store, i_lo, i_hi, services))
    )


def link_incidents(
    store: ClickHouseStore,
    incidents: Sequence[IncidentEvent],
    deploys: Sequence[DeployEvent],
    graph: CommitGraph,
    settings: HistorySettings,
    *,
    now_unix_nano: int,
) -> list[IncidentLink]:
    """Link every incident (explicit, else inferred), store the links that changed."""
    window = settings.incident_deploy_window_seconds * _NS
    links: list[IncidentLink] = []
    for inc in incidents:
        link = link_incident(inc, deploys, graph, (), window_ns=window)
        if inc.modules or not link.deploy_id:
            links.append(link)  # explicit modules, or no deploy to infer them from
            continue
        regressed = regressed_in(store, inc)  # 4 reads: only when inference needs them
        link = link_incident(inc, deploys, graph, regressed, window_ns=window)
        if link.modules:
            why = "; ".join(f"{m}: {regressed[m]}" for m in link.modules)
            link = dataclasses.replace(link, modules_evidence=f"{link.modules_evidence} ({why})")
        links.append(link)
    store.write_incident_links(links, now_unix_nano)
    return links


def load_view(store: ClickHouseStore, settings: HistorySettings, *, now_unix_nano: int) -> LoopView:
    deploys = store.load_deploys()
    incidents = ClickHouseAlertState(store).load_incidents(0)
    commits = store.load_commits()
    graph = CommitGraph(commits)
    links = link_incidents(store, incidents, deploys, graph, settings, now_unix_nano=now_unix_nano)
    return LoopView(
        deploys, incidents, commits, graph, links, store.load_regression_tickets(), service_modules(store)
    )


# -- the analyses ---------------------------------------------------------------------------------


def service_modules(store: ClickHouseStore) -> dict[str, set[str]]:
    """The modules each service's attributed spans ever came from (a monorepo deploy changes
    only those of its service, attribution.dora.deploy_changes)."""
    out: dict[str, set[str]] = defaultdict(set)
    for service, _env, module in ClickHouseAlertState(store).last_seen(0):
        out[service].add(module)
    return dict(out)


def dora_rows(
    view: LoopView, settings: HistorySettings, *, from_unix_nano: int, to_unix_nano: int
) -> list[DoraRow]:
    return dora(
        view.deploys,
        view.graph,
        view.links,
        view.tickets,
        environment=settings.production_environment,
        window_ns=settings.failure_window_seconds * _NS,
        from_unix_nano=from_unix_nano,
        to_unix_nano=to_unix_nano,
        service_modules=view.service_modules,
    )


@dataclass(frozen=True)
class SuspectList:
    """The suspects of one incident or one regression ticket."""

    kind: str  # incident | ticket
    key: str  # the incident id or the ticket key
    deploy_id: str
    modules: tuple[str, ...]
    suspects: list[Suspect]


def suspect_lists(view: LoopView, *, top: int = 5) -> list[SuspectList]:
    out: list[SuspectList] = []
    for link in view.links:
        d = view.deploy(link.deploy_id)
        if d is not None:
            suspects = rank_suspects(view.range_of(d), link.modules, top=top)
            out.append(SuspectList("incident", link.incident_id, d.deploy_id, link.modules, suspects))
    for t in view.tickets:
        d, suspects = finding_suspects(view, module=t.module, deploy_id=t.deploy_id, top=top)
        if d is not None:
            out.append(SuspectList("ticket", t.key, d.deploy_id, (t.module,), suspects))
    return out


def coupling_rows(commits: Sequence[Commit], settings: HistorySettings) -> list[Coupling]:
    return change_coupling(commits, **settings.coupling.model_dump())


def pain_rows(
    store: ClickHouseStore,
    view: LoopView,
    settings: HistorySettings,
    *,
    from_unix_nano: int,
    to_unix_nano: int,
) -> list[Pain]:
    """Production pain per (service, environment, module) over the range (attribution.hotspots)."""
    incidents: Counter[str] = Counter()
    for link in view.links:
        if from_unix_nano <= link.started_at_unix_nano < to_unix_nano:
            incidents.update(set(link.modules))
    findings: Counter[tuple[str, str, str]] = Counter(
        store.ticket_counts(from_unix_nano=from_unix_nano, to_unix_nano=to_unix_nano)
    )
    mid = from_unix_nano + (to_unix_nano - from_unix_nano) // 2
    halves = [
        _signals(store, from_unix_nano, mid),
        _signals(store, mid, to_unix_nano),
    ]
    keys = set(halves[0]) | set(halves[1])  # the halves partition the range's windows
    self_regressions: dict[tuple[str, str, str], int] = {}
    for key in keys:
        first = {key[2]: halves[0].get(key, ModuleSignal())}
        second = {key[2]: halves[1].get(key, ModuleSignal())}
        if regressed_modules(first, second, error_ratio=math.inf):
            self_regressions[key] = 1
    cost_rows, _ = store.query_costs(from_unix_nano, to_unix_nano)
    shares = {(c.service, c.environment, c.module): (c.cost_share, c.traffic_share) for c in cost_rows}
    weights = PainWeights(**settings.hotspot_weights.model_dump())
    return production_pain(
        keys,
        incidents=incidents,
        findings=findings,
        self_time_regressions=self_regressions,
        shares=shares,
        weights=weights,
    )


def changes_in(commits: Sequence[Commit], from_unix_nano: int, to_unix_nano: int) -> list[ModuleChange]:
    return module_changes([c for c in commits if from_unix_nano <= c.committed_at_unix_nano < to_unix_nano])


def _history_names(attributed: set[str], scanned: set[str]) -> dict[str, str]:
    """Attribution names repositories by URL when it has one, scans by name: each attributed
    repository's scanned name (itself, the URL's last path part, or the only one scanned)."""
    out: dict[str, str] = {}
    for repo in attributed:
        tail = repo.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
        if repo in scanned:
            out[repo] = repo
        elif tail in scanned:
            out[repo] = tail
        elif len(scanned) == 1:
            out[repo] = next(iter(scanned))
    return out


def dead_code_rows(
    store: ClickHouseStore, view: LoopView, settings: HistorySettings, *, now_unix_nano: int
) -> list[DeadFile]:
    head = store.load_head_files()
    seen_rows = store.load_files_seen()
    shares = store.file_path_share()
    names = _history_names({f.repository for f in seen_rows} | set(shares), {f.repository for f in head})
    seen: dict[tuple[str, str], int] = {}
    for f in seen_rows:
        key = (names.get(f.repository, f.repository), f.path)
        seen[key] = max(seen.get(key, 0), f.last_seen_unix_nano)
    path_share: dict[str, float] = {}
    for repo, share in shares.items():
        name = names.get(repo, repo)
        path_share[name] = max(path_share.get(name, 0.0), share)
    return dead_code(
        head,
        changed=last_changed(view.commits),
        seen=seen,
        path_share=path_share,
        now_unix_nano=now_unix_nano,
        days=settings.dead_code_days,
    )


def jsonable(value: Any) -> Any:
    """Dataclasses and tuples as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


# -- suspects for a finding, and the report -------------------------------------------------------


def live_deploy(
    deploys: Sequence[DeployEvent], service: str, environment: str, at_unix_nano: int
) -> DeployEvent | None:
    """The last live deploy of (service, environment) at or before ``at``."""
    before = [
        d
        for d in deploys
        if d.live
        and d.service == service
        and d.environment == environment
        and d.deployed_at_unix_nano <= at_unix_nano
    ]
    return max(before, key=lambda d: (d.deployed_at_unix_nano, d.deploy_id), default=None)


def finding_suspects(
    view: LoopView,
    *,
    module: str,
    deploy_id: str,
    service: str = "",
    environment: str = "",
    at_unix_nano: int = 0,
    top: int = 5,
) -> tuple[DeployEvent | None, list[Suspect]]:
    """The suspects of a finding about ``module``: the commits of the deploy it blames
    (``deploy_id``), else of the deploy of (service, environment) live at ``at``, ranked
    (attribution.suspects)."""
    d = view.deploy(deploy_id) if deploy_id else live_deploy(view.deploys, service, environment, at_unix_nano)
    if d is None or not module or not len(view.graph):
        return d, []
    return d, rank_suspects(view.range_of(d), (module,), top=top)


def repository_url(deploy: DeployEvent | None) -> str:
    """The deploy's repository as a GitHub URL (commit and pull request links), else ""."""
    repo = (deploy.repository if deploy else "").rstrip("/").removesuffix(".git")
    return repo if repo.startswith("https://github.com/") else ""


def suspect_json(s: Suspect, repo_url: str) -> dict[str, Any]:
    return {
        "rank": s.rank,
        "sha": s.sha,
        "subject": s.subject,
        "author": s.author_name,
        "module_churn": s.module_churn,
        "files": list(s.files),
        "pull_requests": list(s.pull_requests),
        "commit_url": f"{repo_url}/commit/{s.sha}" if repo_url else "",
        "pull_urls": [f"{repo_url}/pull/{n}" for n in s.pull_requests] if repo_url else [],
    }


def report_data(
    store: ClickHouseStore,
    settings: HistorySettings,
    *,
    from_unix_nano: int,
    to_unix_nano: int,
    now_unix_nano: int,
) -> dict[str, Any]:
    """Everything ``prodloop report`` shows (collector.cli.report_html's input), over the range."""
    view = load_view(store, settings, now_unix_nano=now_unix_nano)
    inside = [c for c in view.commits if from_unix_nano <= c.committed_at_unix_nano < to_unix_nano]
    changes = module_changes(inside)
    changes_by_module = {c.module: c.changes for c in changes}
    pain = pain_rows(store, view, settings, from_unix_nano=from_unix_nano, to_unix_nano=to_unix_nano)
    owners = {
        (str(r["service"]), str(r["environment"]), str(r["module"])): list(r["owners"])  # type: ignore[arg-type]
        for r in store.query_modules(
            from_unix_nano=from_unix_nano, to_unix_nano=to_unix_nano, attributed_only=True
        )
    }
    incidents = {i.incident_id: i for i in view.incidents}
    suspects = {(s.kind, s.key): s for s in suspect_lists(view)}

    def when(ns: int) -> str | None:
        return format_rfc3339(ns) if ns else None

    tickets = []
    for rec in sorted(
        (
            r
            for r in ClickHouseAlertState(store).latest_tickets().values()
            if r.state in ("open", "recovered")
        ),
        key=lambda r: (r.service, r.module, r.rule),
    ):
        d, found = finding_suspects(
            view,
            service=rec.service,
            environment=rec.environment,
            module=rec.module,
            deploy_id=rec.deploy_id,
            at_unix_nano=rec.opened_at,
        )
        tickets.append(
            {
                "rule": rec.rule,
                "service": rec.service,
                "environment": rec.environment,
                "module": rec.module,
                "state": rec.state,
                "ticket_url": rec.ticket_url,
                "ticket_key": rec.ticket_key,
                "summary": rec.summary,
                "suspects": [suspect_json(s, repository_url(d)) for s in found],
            }
        )
    return {
        "title": "prodloop report",
        "generated_at": format_rfc3339(now_unix_nano),
        "from": format_rfc3339(from_unix_nano),
        "to": format_rfc3339(to_unix_nano),
        "weights": settings.hotspot_weights.model_dump(),
        "pain": [
            {
                **jsonable(p),
                "owners": owners.get((p.service, p.environment, p.module), []),
                "changes": changes_by_module.get(p.module, 0),
            }
            for p in pain
        ],
        "hotspots": jsonable(hotspots(changes, pain)),
        "coupling": jsonable(coupling_rows(inside, settings)),
        "dora": jsonable(dora_rows(view, settings, from_unix_nano=from_unix_nano, to_unix_nano=to_unix_nano)),
        "incidents": [
            {
                "incident_id": x.incident_id,
                "title": incidents[x.incident_id].title,
                "severity": incidents[x.incident_id].severity,
                "started_at": when(x.started_at_unix_nano),
                "resolved_at": when(x.resolved_at_unix_nano),
                "deploy_id": x.deploy_id,
                "deploy_evidence": x.deploy_evidence,
                "modules": list(x.modules),
                "modules_evidence": x.modules_evidence,
                "suspects": [
                    suspect_json(s, repository_url(view.deploy(x.deploy_id)))
                    for s in (
                        suspects[("incident", x.incident_id)].suspects
                        if ("incident", x.incident_id) in suspects
                        else []
                    )
                ],
            }
            for x in view.links
            if from_unix_nano <= x.started_at_unix_nano < to_unix_nano
        ],
        "dead_code": [
            {
                "repository": d.repository,
                "path": d.path,
                "module": d.module,
                "lines": d.lines,
                "last_changed": when(d.last_changed_unix_nano),
                "confidence": d.confidence,
                "weight": d.weight,
            }
            for d in dead_code_rows(store, view, settings, now_unix_nano=now_unix_nano)
        ],
        "tickets": tickets,
    }


class _SuspectStore(HistoryStore, Protocol):
    def load_deploys(self) -> list[DeployEvent]: ...


class StoreSuspects:
    """The alert engine's :data:`collector.ports.SuspectSource`: a finding's suspects from the
    stored history (None while no repository was scanned)."""

    def __init__(self, store: _SuspectStore) -> None:
        self.store = store

    def __call__(self, f: Finding) -> FindingSuspects | None:
        if not self.store.history_repositories() or not f.key.module:
            return None
        commits = self.store.load_commits()
        view = LoopView(self.store.load_deploys(), [], commits, CommitGraph(commits), [], [], {})
        blamed = f.observation.deploy
        d, found = finding_suspects(
            view,
            service=f.key.service,
            environment=f.key.environment,
            module=f.key.module,
            deploy_id=blamed.deploy_id if blamed else "",
            at_unix_nano=f.evaluated_at_unix_nano,
        )
        return (
            FindingSuspects(d.deploy_id, repository_url(d), tuple(found)) if d is not None and found else None
        )
