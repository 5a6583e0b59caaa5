"""Link an incident to the deploy and the modules that most likely caused it.  Pure.

The deploy, first match wins:

1. ``incident.deploy_id`` names a known deploy: "explicit deploy_id".
2. ``incident.commit_sha`` is the SHA of a live deploy of one of ``incident.services`` (the same
   commit by :meth:`CommitGraph.resolve`, or one SHA a 7+ character prefix of the other): the
   latest such deploy at or before the incident's start, else the earliest after it:
   "explicit commit_sha".
3. The last live deploy of one of ``incident.services`` (any environment: incidents carry
   none) deployed in ``[started_at - window_ns, started_at]``: "inferred: last deploy of
   <service> <N> min before the incident" (N in whole minutes, rounded down).
4. None: ``deploy_id`` "" and "no deploy within <window> before the incident".

The modules, first match wins:

1. ``incident.modules``, as given: "explicit".
2. With a linked deploy: the modules its commits changed (:func:`attribution.dora.changed_modules`) that also
   regressed in the incident window, sorted: "inferred: changed by <deploy_id> and regressed
   in the incident window".  None of them regressed: ``()`` and "changed by <deploy_id> but
   none regressed" (other wordings when the deploy's commit is unknown or changed no module).
3. No deploy linked: ``()`` and "no deploy linked".

Several events of one ``deploy_id`` are one deploy, the winning status as
:class:`attribution.deploys.DeployTimeline` keeps; ties on ``deployed_at`` are broken by
``deploy_id``.  Evidence strings are deterministic.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from attribution.deploys import DeployTimeline
from attribution.dora import IncidentLink, changed_modules, previous_deploy
from attribution.history import CommitGraph
from attribution.model import DeployEvent, IncidentEvent

_MINUTE_NS = 60 * 1_000_000_000
_HOUR_NS = 60 * _MINUTE_NS
_MIN_PREFIX = 7  # a short SHA names a commit from 7 characters on (as CommitGraph.resolve)


def _duration(ns: int) -> str:
    """``ns`` as "2 h", "90 min" or "45 s" (rounded down)."""
    if ns >= _HOUR_NS and ns % _HOUR_NS == 0:
        return f"{ns // _HOUR_NS} h"
    if ns >= _MINUTE_NS:
        return f"{ns // _MINUTE_NS} min"
    return f"{ns // 1_000_000_000} s"


def _prefix_match(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if a == b:
        return bool(a)
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return len(short) >= _MIN_PREFIX and long.startswith(short)


def _link_deploy(
    incident: IncidentEvent, events: Sequence[DeployEvent], graph: CommitGraph, window_ns: int
) -> tuple[DeployEvent | None, str]:
    start = incident.started_at_unix_nano
    if incident.deploy_id:
        for e in events:
            if e.deploy_id == incident.deploy_id:
                return e, "explicit deploy_id"
    services = set(incident.services)
    candidates = [e for e in events if e.live and e.service in services]
    if incident.commit_sha:
        full = graph.resolve(incident.commit_sha)
        same = [
            e
            for e in candidates
            if (full is not None and graph.resolve(e.commit_sha) == full)
            or _prefix_match(incident.commit_sha, e.commit_sha)
        ]
        before = [e for e in same if e.deployed_at_unix_nano <= start]
        if before:
            return before[-1], "explicit commit_sha"
        if same:
            return same[0], "explicit commit_sha"
    recent = [e for e in candidates if start - window_ns <= e.deployed_at_unix_nano <= start]
    if recent:
        e = recent[-1]
        minutes = (start - e.deployed_at_unix_nano) // _MINUTE_NS
        return e, f"inferred: last deploy of {e.service} {minutes} min before the incident"
    return None, f"no deploy within {_duration(window_ns)} before the incident"


def link_incident(
    incident: IncidentEvent,
    deploys: Iterable[DeployEvent],
    graph: CommitGraph,
    regressed: Collection[str],
    *,
    window_ns: int,
) -> IncidentLink:
    """Link ``incident`` to a deploy among ``deploys`` and to modules (see the module docstring).
    ``regressed``: the modules that regressed in the incident window."""
    if window_ns < 0:
        raise ValueError(f"window_ns must be >= 0, got {window_ns}")
    events = DeployTimeline(deploys).events()
    deploy, deploy_evidence = _link_deploy(incident, events, graph, window_ns)
    modules: tuple[str, ...]
    if incident.modules:
        modules, modules_evidence = tuple(dict.fromkeys(incident.modules)), "explicit"
    elif deploy is None:
        modules, modules_evidence = (), "no deploy linked"
    else:
        changed = changed_modules(deploy, previous_deploy(deploy, events), graph)
        modules = tuple(sorted(set(changed) & set(regressed)))
        if modules:
            modules_evidence = f"inferred: changed by {deploy.deploy_id} and regressed in the incident window"
        elif graph.resolve(deploy.commit_sha) is None:
            modules_evidence = f"commit {deploy.commit_sha[:12]} of {deploy.deploy_id} is not in the history"
        elif not changed:
            modules_evidence = f"{deploy.deploy_id} changed no module"
        else:
            modules_evidence = f"changed by {deploy.deploy_id} but none regressed"
    return IncidentLink(
        incident_id=incident.incident_id,
        deploy_id=deploy.deploy_id if deploy is not None else "",
        deploy_evidence=deploy_evidence,
        modules=modules,
        modules_evidence=modules_evidence,
        started_at_unix_nano=incident.started_at_unix_nano,
        resolved_at_unix_nano=incident.resolved_at_unix_nano,
    )
