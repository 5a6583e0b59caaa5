"""The ``incident_recurrence`` kind: at least N incidents naming a module (or service) within the window."""

from __future__ import annotations

from collections.abc import Collection

from attribution.rules.evaluators.base import Evaluator, Verdicts
from attribution.rules.findings import BREACH, OK, FindingKey, Measurement, Observation
from attribution.rules.inputs import EvaluationData
from attribution.rules.schema import (
    Recurrence,
    Rule,
)
from attribution.rules.values import format_duration


class RecurrenceEvaluator(Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        self.owners: dict[str, set[str]] = {}
        for m in data.declared_modules:
            self.owners.setdefault(m.name, set()).update(m.owners)
        for r in data.rows:
            if not r.unattributed_reason:
                self.owners.setdefault(r.module, set()).update(r.owners)

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, Recurrence)
        start = t - rule.window_ns
        hits: dict[FindingKey, list[str]] = {}
        for inc in self.data.incidents:
            if not start <= inc.started_at_unix_nano < t:
                continue
            services = [s for s in inc.services if rule.scope.match_service(s)]
            if rule.scope.services and not services:
                continue
            if p.by == "service":
                for s in services:
                    hits.setdefault(self.key(s, "", ""), []).append(inc.incident_id)
                continue
            for module in inc.modules:
                if not rule.scope.match_module(module) or not rule.scope.match_owners(
                    self.owners.get(module, ())
                ):
                    continue
                hits.setdefault(self.key("", "", module), []).append(inc.incident_id)
        for k in only or ():
            hits.setdefault(k, [])
        out: Verdicts = {}
        for k, ids in hits.items():
            if only is not None and k not in only:
                continue
            n = len(ids)
            breached = n >= p.min_incidents
            what = k.module or k.service
            out[k] = Observation(
                BREACH if breached else OK,
                f"{what} in {n} incident{'s' if n != 1 else ''} within {format_duration(rule.window_ns)} "
                f"({'>=' if breached else '<'} {p.min_incidents})",
                (Measurement("incidents", value=n, threshold=p.min_incidents, breached=breached),),
                samples=n,
                owners=tuple(sorted(self.owners.get(k.module, ()))),
                range_from_unix_nano=start,
                range_to_unix_nano=t,
                incidents=tuple(sorted(set(ids))),
            )
        return out
