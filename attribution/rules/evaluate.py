"""Evaluating one rule: its instants, the aggregates it reads, the walk back that decides firing and recovery."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

from attribution.model import DeployEvent
from attribution.rules.evaluators.base import Evaluator
from attribution.rules.evaluators.cost_share import CostShareEvaluator
from attribution.rules.evaluators.recurrence import RecurrenceEvaluator
from attribution.rules.evaluators.regression import RegressionEvaluator
from attribution.rules.evaluators.threshold import ThresholdEvaluator
from attribution.rules.evaluators.unused import UnusedEvaluator
from attribution.rules.findings import BREACH, NO_DATA, OK, Finding, FindingKey, Status
from attribution.rules.inputs import DataRange, DeclaredModule, EvaluationData
from attribution.rules.schema import Regression, Rule

EVALUATORS: Final[Mapping[str, type[Evaluator]]] = {
    "threshold": ThresholdEvaluator,
    "regression_after_deploy": RegressionEvaluator,
    "cost_share": CostShareEvaluator,
    "incident_recurrence": RecurrenceEvaluator,
    "unused": UnusedEvaluator,
}

MAX_SINCE_STEPS: Final = 240


def evaluation_instant(now_unix_nano: int, window_ns: int, settle_ns: int = 0) -> int:
    """The latest instant whose preceding windows are complete: ``now - settle`` floored to a window."""
    t = now_unix_nano - settle_ns
    return t - t % window_ns


def required_ranges(
    rule: Rule, evaluated_at: int, data_window_ns: int, deploys: Sequence[DeployEvent]
) -> list[DataRange]:
    """The aggregates evaluating ``rule`` at ``evaluated_at`` (and walking back) reads."""
    back = max(rule.for_ns, rule.ticket.recover_after_ns) + rule.every_ns * 2
    if rule.kind in ("threshold", "cost_share"):
        services = rule.scope.services or (None,)
        return [
            DataRange(evaluated_at - back - rule.window_ns - data_window_ns, evaluated_at, s)
            for s in services
        ]
    if rule.kind == "regression_after_deploy":
        p = rule.params
        assert isinstance(p, Regression)
        out = []
        for d in deploys:
            at = d.deployed_at_unix_nano
            if not (rule.scope.match_service(d.service) and rule.scope.match_environment(d.environment)):
                continue
            if at > evaluated_at or evaluated_at - back - at > p.max_deploy_age_ns:
                continue
            out.append(
                DataRange(
                    at - rule.window_ns - 2 * data_window_ns,
                    min(evaluated_at, at + rule.window_ns + 2 * data_window_ns),
                    d.service,
                    d.environment,
                )
            )
        return out
    return []


def evaluate_rule(
    rule: Rule,
    data: EvaluationData,
    now_unix_nano: int,
    *,
    track: Collection[FindingKey] = (),
    settle_ns: int = 0,
    code_paths: Callable[[str], tuple[str, ...]] | None = None,
) -> list[Finding]:
    """Evaluate ``rule`` at the latest complete instant before ``now``.

    Returns a finding for every key breaching now and for every key in ``track`` (keys
    with open tickets, whose recovery matters), sorted by key.
    """
    ev = EVALUATORS[rule.kind](rule, data)
    t0 = evaluation_instant(now_unix_nano, data.window_ns, settle_ns)
    now_verdicts = ev.at(t0)
    wanted = {k for k, o in now_verdicts.items() if o.status == BREACH} | set(track)
    for k in track:
        if k not in now_verdicts:
            now_verdicts.update(ev.at(t0, only={k}))
    step = rule.every_ns
    for_steps = -(-rule.for_ns // step)
    rec_steps = -(-rule.ticket.recover_after_ns // step)
    max_steps = max(for_steps, rec_steps, MAX_SINCE_STEPS)
    history: dict[FindingKey, list[Status]] = {
        k: [now_verdicts[k].status] for k in wanted if k in now_verdicts
    }
    active = set(history)
    i = 1
    while active and i <= max_steps:
        verdicts = ev.at(t0 - i * step, only=active)
        done = set()
        for k in active:
            o = verdicts.get(k)
            st: Status = o.status if o is not None else NO_DATA
            h = history[k]
            h.append(st)
            if h[0] == BREACH:
                # walk back while breaching: over `for` to decide firing, further for "since"
                if st != BREACH or i >= max(for_steps, MAX_SINCE_STEPS):
                    done.add(k)
            elif st != OK or i >= rec_steps:
                done.add(k)
        active -= done
        i += 1
    out = []
    for k, h in history.items():
        o = now_verdicts[k]
        run = 0
        for st in h:
            if st != BREACH:
                break
            run += 1
        firing = run > 0 and (run - 1) * step >= rule.for_ns
        since = t0 - (run - 1) * step if run else None
        clear = 0
        for st in h:
            if st != OK:
                break
            clear += 1
        recovered = clear > 0 and (clear - 1) * step >= rule.ticket.recover_after_ns
        paths = code_paths(k.module) if code_paths is not None and k.module else ()
        out.append(Finding(rule, k, t0, o, firing, since, recovered, paths))
    out.sort(key=lambda f: f.key)
    return out


def module_paths(declared: Sequence[DeclaredModule]) -> Callable[[str], tuple[str, ...]]:
    """``module -> its code path globs`` from modules.yaml (for tickets)."""
    by: dict[str, list[str]] = {}
    for m in declared:
        by.setdefault(m.name, []).extend(m.paths)

    def paths(module: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(by.get(module, ())))

    return paths
