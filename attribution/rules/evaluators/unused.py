"""The ``unused`` kind: a module declared in ``modules.yaml`` that saw no spans over the window."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from attribution.rules.evaluators.base import Evaluator, Verdicts
from attribution.rules.findings import BREACH, NO_DATA, OK, FindingKey, Measurement, Observation
from attribution.rules.values import format_duration


class UnusedEvaluator(Evaluator):
    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        scope = rule.scope
        start = t - rule.window_ns
        since = self.data.data_since_unix_nano
        seen: dict[str, int] = {}
        for (service, environment, module), seen_at in self.data.last_seen.items():
            if scope.match_service(service) and scope.match_environment(environment) and seen_at <= t:
                seen[module] = max(seen.get(module, 0), seen_at)
        out: Verdicts = {}
        for m in self.data.declared_modules:
            if m.services and scope.services and not (m.services & set(scope.services)):
                continue
            if not scope.match_module(m.name) or not scope.match_owners(m.owners):
                continue
            k = self.key("", "", m.name)
            if only is not None and k not in only:
                continue
            last = seen.get(m.name)
            common: dict[str, Any] = {
                "owners": m.owners,
                "range_from_unix_nano": start,
                "range_to_unix_nano": t,
                "repository": m.repository,
            }
            if last is not None and last > start:
                out[k] = Observation(
                    OK, f"last span at {last} (within {format_duration(rule.window_ns)})", **common
                )
            elif since is None or since > start:
                out[k] = Observation(
                    NO_DATA,
                    f"the store holds less than {format_duration(rule.window_ns)} of history",
                    **common,
                )
            else:
                never = "never saw a span" if last is None else "no spans"
                out[k] = Observation(
                    BREACH,
                    f"declared in modules.yaml, {never} in {format_duration(rule.window_ns)}",
                    (Measurement("last_seen", value=float(last) if last is not None else math.nan),),
                    **common,
                )
        return out
