"""Production pain and hotspots per module.  Pure.

CodeScene ranks hotspots by change frequency times a code-health heuristic.  prodloop puts
runtime truth in place of the heuristic: **production pain** is a weighted sum, per module,
over a range, of

* ``incidents``: incidents linked to the module (:mod:`attribution.incident_links`);
* ``findings``: tickets opened for the module by the rules (threshold, regression, cost,
  recurrence findings);
* ``self_time_regressions``: 1 when the module's mean self time per span in the second half
  of the range is at least 1.5 times that of the first half (:mod:`attribution.incident_window`);
* ``cost_excess``: ``max(0, cost share - traffic share)`` (0..1) from the cost split
  (:mod:`attribution.cost`): a module taking 31% of the cost for 8% of the traffic adds 0.23.

``pain = w_incidents * incidents + w_findings * findings + w_self * self_time_regressions
+ w_cost * cost_excess``, the weights being settings (``history.hotspot_weights``).

A **hotspot** is a module of a repository with ``changes * pain`` (changes: changesets that
touched it, :func:`attribution.coupling.module_changes`); pain over every service running it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from attribution.coupling import ModuleChange

ModuleKey = tuple[str, str, str]  # (service, environment, module)


@dataclass(frozen=True, slots=True)
class PainWeights:
    """The weights (their defaults are the settings': history.hotspot_weights)."""

    incidents: float
    findings: float
    self_time_regression: float
    cost_excess: float


@dataclass(frozen=True, slots=True)
class Pain:
    service: str
    environment: str
    module: str
    incidents: int
    findings: int
    self_time_regressions: int
    cost_share: float | None
    traffic_share: float | None
    pain: float


@dataclass(frozen=True, slots=True)
class Hotspot:
    repository: str
    module: str
    changes: int
    churn: int
    pain: float
    hotspot: float  # changes * pain


def production_pain(
    modules: Iterable[ModuleKey],
    *,
    incidents: Mapping[str, int],
    findings: Mapping[ModuleKey, int],
    self_time_regressions: Mapping[ModuleKey, int],
    shares: Mapping[ModuleKey, tuple[float, float]],
    weights: PainWeights,
) -> list[Pain]:
    """The pain of each module key (``incidents`` are per module name: an incident names
    modules, not the service that ran them), sorted by pain descending, then key."""
    out: list[Pain] = []
    for key in sorted(set(modules)):
        service, environment, module = key
        n_inc = incidents.get(module, 0)
        n_find = findings.get(key, 0)
        n_self = self_time_regressions.get(key, 0)
        share = shares.get(key)
        excess = max(0.0, share[0] - share[1]) if share is not None else 0.0
        pain = (
            weights.incidents * n_inc
            + weights.findings * n_find
            + weights.self_time_regression * n_self
            + weights.cost_excess * excess
        )
        out.append(
            Pain(
                service,
                environment,
                module,
                n_inc,
                n_find,
                n_self,
                share[0] if share is not None else None,
                share[1] if share is not None else None,
                round(pain, 6),
            )
        )
    out.sort(key=lambda p: (-p.pain, p.service, p.environment, p.module))
    return out


def hotspots(changes: Sequence[ModuleChange], pain: Sequence[Pain]) -> list[Hotspot]:
    """Each changed module's ``changes * pain`` (pain summed over the services running a
    module of that name), sorted by hotspot descending, then changes, then name."""
    by_module: dict[str, float] = defaultdict(float)
    for p in pain:
        by_module[p.module] += p.pain
    rows = [
        Hotspot(
            c.repository,
            c.module,
            c.changes,
            c.churn,
            round(by_module.get(c.module, 0.0), 6),
            round(c.changes * by_module.get(c.module, 0.0), 6),
        )
        for c in changes
    ]
    rows.sort(key=lambda h: (-h.hotspot, -h.changes, h.repository, h.module))
    return rows
