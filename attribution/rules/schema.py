"""The rule types of ``rules.yaml``: kinds, scope, ticket template, per-kind parameters, rule sets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from attribution.aggregate import AggregateRow
from attribution.globs import GlobMatcher
from attribution.rules.values import DAY, HOUR, MINUTE, format_duration, format_value

KINDS: Final = ("threshold", "regression_after_deploy", "cost_share", "incident_recurrence", "unused")
Kind = Literal["threshold", "regression_after_deploy", "cost_share", "incident_recurrence", "unused"]
SEVERITIES: Final = ("critical", "high", "medium", "low", "info")
TESTS: Final = ("auto", "mann_whitney", "quantile")

# A resource measure maps an aggregate row to an amount of resource; rules select one with
# ``resource:``.  Self time is the default: a caller's span duration counts its callees' time too.
RESOURCE_MEASURES: Final[Mapping[str, Callable[[AggregateRow], int]]] = {
    "self_time": lambda r: r.self_time_adjusted_sum_ns,
    "span_duration": lambda r: r.duration_adjusted_sum_ns,
    "cpu_time": lambda r: r.cpu_time_sum_ns,
}
DEFAULT_RESOURCE: Final = "self_time"
PLANNED_RESOURCES: Final = ("cost",)

TEMPLATE_FIELDS: Final = (
    "rule",
    "kind",
    "severity",
    "service",
    "environment",
    "module",
    "summary",
    "owners",
)


@dataclass(frozen=True)
class Scope:
    """Which (service, environment, module, owners) a rule looks at; empty means any."""

    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # gitignore-style globs on the module name ("payments/**")
    owners: tuple[str, ...] = ()  # any of these owners (case-insensitive)
    _module_matchers: tuple[GlobMatcher, ...] = field(default=(), repr=False, compare=False)

    def match_service(self, service: str) -> bool:
        return not self.services or service in self.services

    def match_environment(self, environment: str) -> bool:
        return not self.environments or environment in self.environments

    def match_module(self, module: str) -> bool:
        return not self._module_matchers or any(m.match(module) for m in self._module_matchers)

    def match_owners(self, owners: Iterable[str]) -> bool:
        if not self.owners:
            return True
        wanted = {o.lower() for o in self.owners}
        return any(o.lower() in wanted for o in owners)

    def match(self, service: str, environment: str, module: str, owners: Iterable[str]) -> bool:
        return (
            self.match_service(service)
            and self.match_environment(environment)
            and self.match_module(module)
            and self.match_owners(owners)
        )


@dataclass(frozen=True)
class TicketTemplate:
    title: str = "[prodloop] {module}: {summary}"
    body: str = ""  # Markdown put at the top of the ticket body
    labels: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()  # empty: every configured sink
    cooldown_ns: int = 6 * HOUR  # at most one comment per cooldown; also the wait before reopening
    recover_after_ns: int = HOUR  # clear for this long -> recovered
    close_on_recovery: bool = False
    assign_owners: bool = True


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: Literal["above", "below"]
    value: float  # ns for latency and self time, a fraction for error rates, per second for span_rate


@dataclass(frozen=True)
class MetricChange:
    metric: str  # one of values.REGRESSION_METRICS
    min_relative_change: float  # 0.5: +50 %
    min_absolute_change: float = 0.0  # in the metric's unit (ns, or a fraction for error rates)


@dataclass(frozen=True)
class Regression:
    changes: tuple[MetricChange, ...]
    alpha: float = 0.01
    test: str = "auto"  # auto | mann_whitney | quantile (latency); error rates: two-proportion z
    max_deploy_age_ns: int = 7 * DAY


@dataclass(frozen=True)
class CostShare:
    min_ratio: float
    resource: str = DEFAULT_RESOURCE
    min_resource_share: float = 0.05


@dataclass(frozen=True)
class Recurrence:
    min_incidents: int
    by: Literal["module", "service"] = "module"


@dataclass(frozen=True)
class Unused:
    pass


Params = Threshold | Regression | CostShare | Recurrence | Unused


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Kind
    params: Params
    scope: Scope = Scope()
    window_ns: int = 15 * MINUTE
    for_ns: int = 0
    every_ns: int = MINUTE
    min_samples: int = 100
    severity: str = "medium"
    description: str = ""
    ticket: TicketTemplate = TicketTemplate()
    index: int = 0

    def describe(self) -> str:
        """The condition, in one line, for tickets and ``alerts evaluate``."""
        p = self.params
        w = format_duration(self.window_ns)
        hold = f", held for {format_duration(self.for_ns)}" if self.for_ns else ""
        if isinstance(p, Threshold):
            return (
                f"{p.metric} {p.op} {format_value(p.metric, p.value)} over {w} windows"
                f" (min {self.min_samples} spans){hold}"
            )
        if isinstance(p, Regression):
            parts = []
            for c in p.changes:
                extra = (
                    f" and +{format_value(c.metric, c.min_absolute_change)}" if c.min_absolute_change else ""
                )
                parts.append(f"{c.metric} +{100 * c.min_relative_change:g}%{extra}")
            return (
                f"after a deploy, {' or '.join(parts)} vs the same length before (up to {w} each side), "
                f"significant at alpha={p.alpha:g} ({p.test} test; min {self.min_samples} spans each side){hold}"
            )
        if isinstance(p, CostShare):
            return (
                f"share of the service's {p.resource} / share of its traffic >= {p.min_ratio:g} "
                f"(resource share >= {100 * p.min_resource_share:g}%) over {w}{hold}"
            )
        if isinstance(p, Recurrence):
            return f"the {p.by} appears in >= {p.min_incidents} incidents within {w}"
        return f"declared in modules.yaml but no spans for {w}"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "rules.yaml"

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)
