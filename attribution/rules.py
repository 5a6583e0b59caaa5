"""Alert rules: the ``rules.yaml`` model, its validation, and the evaluation of each kind.  Pure.

The adapter (``collector/pipelines/alerts.py``) reads the file and the aggregates and passes them in;
nothing here reads a file, the store or the clock.  See ``docs/rules.md`` for the format.

Evaluation is *stateless*: a rule is evaluated at evaluation instants ``t`` spaced ``every``
apart, each over complete aggregation windows ``[t - window, t)``.  A finding *fires* when
the breach holds at every instant over at least ``for`` (like Prometheus' ``for``, but
recomputed from the aggregates, so a restart, a replica change or a dry run gives the same
answer), and it has *recovered* when it is clear at every instant over the ticket's
``recover_after``.  Too few samples is neither a breach nor clear (``no_data``).

Kinds (see :data:`KINDS`):

* ``threshold`` - p50/p95/p99 latency, error rate or span rate above or below a value;
* ``regression_after_deploy`` - per live deploy, a module's metrics over the same length of
  time before and after it; fires when the relative change exceeds a threshold **and** a
  one-sided test (:mod:`attribution.stats`) is significant;
* ``cost_share`` - the module's share of its service's resources divided by its share of
  the service's traffic.  The resource is a named measure (:data:`RESOURCE_MEASURES`);
  only ``span_duration`` exists today, and self time or a cost model become new names,
  not a new file format;
* ``incident_recurrence`` - at least N incidents naming the module (or service) within the
  window;
* ``unused`` - a module declared in ``modules.yaml`` that saw no spans over the window.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from attribution.aggregate import AggregateRow
from attribution.deploys import DeployTimeline
from attribution.globs import GlobMatcher, GlobSyntaxError, compile_glob
from attribution.model import DeployEvent, IncidentEvent
from attribution.sketch import quantile
from attribution.stats import TestResult, mann_whitney_bins, quantile_exceedance_bins, two_proportion_z

S: Final = 1_000_000_000
MINUTE: Final = 60 * S
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR

KINDS: Final = ("threshold", "regression_after_deploy", "cost_share", "incident_recurrence", "unused")
Kind = Literal["threshold", "regression_after_deploy", "cost_share", "incident_recurrence", "unused"]
METRICS: Final = ("p50", "p95", "p99", "error_rate", "span_rate")
LATENCY_QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
SEVERITIES: Final = ("critical", "high", "medium", "low", "info")
TESTS: Final = ("auto", "mann_whitney", "quantile")

BREACH: Final = "breach"
OK: Final = "ok"
NO_DATA: Final = "no_data"
Status = Literal["breach", "ok", "no_data"]

# A resource measure maps an aggregate row to an amount of resource.  Self time or a cost
# model are added here under new names; rules select one with ``resource:``.
RESOURCE_MEASURES: Final[Mapping[str, Callable[[AggregateRow], int]]] = {
    "span_duration": lambda r: r.duration_adjusted_sum_ns,
}
PLANNED_RESOURCES: Final = ("self_time", "cost")

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


# -- errors ------------------------------------------------------------------------------------


class RuleError(ValueError):
    """One problem in a rules file.  Names the rule (index and name) and the field."""

    def __init__(self, source: str, rule: str, field_name: str, message: str) -> None:
        self.source = source
        self.rule = rule
        self.field = field_name
        self.message = message
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}{rule}: {field_name}: {message}" if field_name else f"{where}{rule}: {message}"
        )


class RulesFileError(ValueError):
    """Every problem found in a rules file (validation does not stop at the first)."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


# -- value parsing -----------------------------------------------------------------------------

_DURATION_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": S,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": 7 * DAY,
}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def parse_duration(value: Any) -> int:
    """``"15m"``, ``"1h30m"``, ``"250ms"``, ``"7d"`` (or a number of seconds) -> ns."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a non-negative duration")
        return round(value * S)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration like 15m, 1h30m, 250ms or 7d")
    text = value.strip().replace(" ", "")
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{value!r} is not a duration like 15m, 1h30m, 250ms or 7d")
    return round(total)


def format_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    parts = []
    rest = ns
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", S)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest:
        parts.append(f"{rest / 1e6:g}ms")
    return "".join(parts)


def parse_fraction(value: Any) -> float:
    """``0.05`` or ``"5%"`` -> 0.05."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number or a percentage")
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            v = float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage like 5%") from None
    else:
        raise ValueError(f"{value!r} is not a number or a percentage like 5%")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{value!r} must be a non-negative number")
    return v


_RATE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h|d)\s*$")


def parse_rate(value: Any) -> float:
    """``"10/s"``, ``"600/m"`` (or a number per second) -> spans per second."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} must be a non-negative rate")
        return float(value)
    if isinstance(value, str):
        m = _RATE.match(value)
        if m:
            return float(m.group(1)) / (_DURATION_UNITS[m.group(2)] / S)
    raise ValueError(f"{value!r} is not a rate like 10/s or 600/m")


def format_value(metric: str, value: float) -> str:
    """A metric value for people: ``"28.1 ms"``, ``"6.10%"``, ``"3.2/s"``, ``"x4.0"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in LATENCY_QUANTILES or metric.endswith("_ns"):
        if value >= S:
            return f"{value / S:.2f} s"
        return f"{value / 1e6:.1f} ms" if value >= 1e7 else f"{value / 1e6:.2f} ms"
    if metric in ("error_rate", "share", "resource_share", "traffic_share"):
        return f"{100 * value:.2f}%"
    if metric == "span_rate":
        return f"{value:.2f}/s"
    if metric == "ratio":
        return "inf" if math.isinf(value) else f"x{value:.2f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


# -- the model ---------------------------------------------------------------------------------


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
    value: float  # ns for latency, a fraction for error_rate, per second for span_rate


@dataclass(frozen=True)
class MetricChange:
    metric: str  # p50 | p95 | p99 | error_rate
    min_relative_change: float  # 0.5: +50 %
    min_absolute_change: float = 0.0  # in the metric's unit (ns, or a fraction for error_rate)


@dataclass(frozen=True)
class Regression:
    changes: tuple[MetricChange, ...]
    alpha: float = 0.01
    test: str = "auto"  # auto | mann_whitney | quantile (latency); error rates: two-proportion z
    max_deploy_age_ns: int = 7 * DAY


@dataclass(frozen=True)
class CostShare:
    min_ratio: float
    resource: str = "span_duration"
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

    def __iter__(self) -> Any:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


# -- parsing -----------------------------------------------------------------------------------

_RULE_KEYS: Final = {
    "name",
    "kind",
    "description",
    "scope",
    "window",
    "for",
    "every",
    "min_samples",
    "severity",
    "ticket",
    # kind-specific
    "metric",
    "op",
    "value",
    "metrics",
    "alpha",
    "test",
    "max_deploy_age",
    "min_ratio",
    "resource",
    "min_resource_share",
    "min_incidents",
    "by",
}
_KIND_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "threshold": frozenset({"metric", "op", "value"}),
    "regression_after_deploy": frozenset({"metrics", "alpha", "test", "max_deploy_age"}),
    "cost_share": frozenset({"min_ratio", "resource", "min_resource_share"}),
    "incident_recurrence": frozenset({"min_incidents", "by"}),
    "unused": frozenset(),
}
_SCOPE_KEYS: Final = {
    "services",
    "environments",
    "modules",
    "owners",
    "service",
    "environment",
    "module",
    "owner",
}
_TICKET_KEYS: Final = {
    "title",
    "body",
    "labels",
    "sinks",
    "cooldown",
    "recover_after",
    "close_on_recovery",
    "assign_owners",
}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Collector:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[RuleError] = []

    def add(self, rule: str, field_name: str, message: str) -> None:
        self.errors.append(RuleError(self.source, rule, field_name, message))


def _str_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a string or a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _check_template(text: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from None
    for name in names:
        base = name.split(".")[0].split("[")[0]
        if base not in TEMPLATE_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )


def _merge(defaults: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in raw.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def parse_rules(data: Any, source: str = "rules.yaml") -> RuleSet:
    """Validate a loaded rules file (``{"defaults": {...}, "rules": [...]}``).

    Raises :class:`RulesFileError` listing every problem, each naming the rule and field.
    """
    errs = _Collector(source)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RulesFileError([RuleError(source, "(file)", "", "the top level must be a mapping with rules:")])
    for key in data:
        if key not in ("version", "defaults", "rules"):
            errs.add("(file)", str(key), "unknown key (expected version, defaults, rules)")
    version = data.get("version", 1)
    if version != 1:
        errs.add("(file)", "version", f"unsupported version {version!r} (this prodloop reads version 1)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        errs.add("(file)", "defaults", "must be a mapping of rule fields")
        defaults = {}
    for key in defaults:
        if key in ("name", "kind") or key not in _RULE_KEYS:
            errs.add("defaults", str(key), "not a field that can have a default")
    raw_rules = data.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        errs.add("(file)", "rules", "must be a list of rules")
        raw_rules = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        label = f"rules[{i}]"
        if not isinstance(raw, Mapping):
            errs.add(label, "", "must be a mapping with name and kind")
            continue
        name = raw.get("name")
        if isinstance(name, str) and name:
            label = f"rules[{i}] ({name})"
        rule = _parse_rule(i, label, _merge(defaults, raw), errs, explicit=raw)
        if rule is None:
            continue
        if rule.name in seen:
            errs.add(
                label,
                "name",
                f"duplicate rule name (also rules[{seen[rule.name]}]); names fingerprint tickets",
            )
            continue
        seen[rule.name] = i
        rules.append(rule)
    if errs.errors:
        raise RulesFileError(errs.errors)
    return RuleSet(tuple(rules), source)


def _parse_rule(
    index: int, label: str, raw: Mapping[str, Any], errs: _Collector, *, explicit: Mapping[str, Any]
) -> Rule | None:
    n_before = len(errs.errors)

    def get(key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        if key not in raw or raw[key] is None:
            return default
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            errs.add(label, key, str(exc))
            return default

    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        what = "is required" if name is None else f"{name!r} must be"
        errs.add(label, "name", f"{what}: letters, digits, '.', '_' or '-' (at most 100)")
        name = f"rule{index}"
    kind = raw.get("kind")
    if kind not in KINDS:
        errs.add(label, "kind", f"is required, one of {', '.join(KINDS)} (got {kind!r})")
        return None
    allowed = _KIND_KEYS[kind]
    for key in explicit:
        if key not in _RULE_KEYS:
            errs.add(label, str(key), "unknown field")
        elif key in set().union(*_KIND_KEYS.values()) and key not in allowed:
            errs.add(label, str(key), f"does not apply to kind {kind}")

    def positive_duration(v: Any) -> int:
        ns = parse_duration(v)
        if ns <= 0:
            raise ValueError("must be a positive duration")
        return ns

    window_default = {
        "incident_recurrence": 30 * DAY,
        "unused": 30 * DAY,
        "regression_after_deploy": 30 * MINUTE,
    }
    window_ns: int = get("window", positive_duration, window_default.get(kind, 15 * MINUTE))
    for_ns: int = get("for", parse_duration, 0)
    every_ns: int = get("every", positive_duration, MINUTE)
    min_samples_default = 0 if kind in ("incident_recurrence", "unused") else 100

    def non_negative_int(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("must be a non-negative integer")
        return v

    min_samples: int = get("min_samples", non_negative_int, min_samples_default)

    def severity(v: Any) -> str:
        if v not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
        return str(v)

    sev: str = get("severity", severity, "medium")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        errs.add(label, "description", "must be a string")
        description = ""
    scope = _parse_scope(label, raw.get("scope"), errs)
    ticket = _parse_ticket(label, raw.get("ticket"), errs)
    params = _parse_params(kind, label, raw, errs, get)
    if params is None or len(errs.errors) > n_before:
        return None
    return Rule(
        name=name,
        kind=kind,
        params=params,
        scope=scope,
        window_ns=window_ns,
        for_ns=for_ns,
        every_ns=every_ns,
        min_samples=min_samples,
        severity=sev,
        description=description,
        ticket=ticket,
        index=index,
    )


def _parse_scope(label: str, raw: Any, errs: _Collector) -> Scope:
    if raw is None:
        return Scope()
    if not isinstance(raw, Mapping):
        errs.add(label, "scope", "must be a mapping (services, environments, modules, owners)")
        return Scope()
    values: dict[str, tuple[str, ...]] = {"services": (), "environments": (), "modules": (), "owners": ()}
    for key, v in raw.items():
        if key not in _SCOPE_KEYS:
            errs.add(label, f"scope.{key}", "unknown field (services, environments, modules, owners)")
            continue
        plural = key if key.endswith("s") else key + "s"
        try:
            values[plural] = values[plural] + _str_tuple(v)
        except ValueError as exc:
            errs.add(label, f"scope.{key}", str(exc))
    matchers = []
    for j, pattern in enumerate(values["modules"]):
        try:
            matchers.append(compile_glob(pattern))
        except GlobSyntaxError as exc:
            errs.add(label, f"scope.modules[{j}]", str(exc))
    return Scope(
        services=values["services"],
        environments=values["environments"],
        modules=values["modules"],
        owners=values["owners"],
        _module_matchers=tuple(matchers),
    )


def _parse_ticket(label: str, raw: Any, errs: _Collector) -> TicketTemplate:
    if raw is None:
        return TicketTemplate()
    if not isinstance(raw, Mapping):
        errs.add(label, "ticket", "must be a mapping (title, body, labels, cooldown, ...)")
        return TicketTemplate()
    base = TicketTemplate()
    kw: dict[str, Any] = {}
    for key, v in raw.items():
        f = f"ticket.{key}"
        if key not in _TICKET_KEYS:
            errs.add(label, f, f"unknown field ({', '.join(sorted(_TICKET_KEYS))})")
            continue
        try:
            if key in ("title", "body"):
                if not isinstance(v, str) or (key == "title" and not v.strip()):
                    raise ValueError("must be a non-empty string" if key == "title" else "must be a string")
                _check_template(v)
                kw[key] = v
            elif key in ("labels", "sinks"):
                kw[key] = _str_tuple(v)
                if key == "labels" and any(len(x) > 50 or "," in x for x in kw[key]):
                    raise ValueError("labels are at most 50 characters, without commas")
            elif key in ("cooldown", "recover_after"):
                kw[f"{key}_ns"] = parse_duration(v)
            elif not isinstance(v, bool):
                raise ValueError("must be true or false")
            else:
                kw[key] = v
        except ValueError as exc:
            errs.add(label, f, str(exc))
    return TicketTemplate(**{**base.__dict__, **kw})


def _parse_params(
    kind: str,
    label: str,
    raw: Mapping[str, Any],
    errs: _Collector,
    get: Callable[[str, Callable[[Any], Any], Any], Any],
) -> Params | None:
    if kind == "threshold":
        metric = raw.get("metric")
        if metric not in METRICS:
            errs.add(label, "metric", f"is required, one of {', '.join(METRICS)}")
            return None
        op = raw.get("op", "above")
        if op in (">", ">="):
            op = "above"
        elif op in ("<", "<="):
            op = "below"
        if op not in ("above", "below"):
            errs.add(label, "op", "must be above or below")
            return None
        if raw.get("value") is None:
            errs.add(label, "value", "is required")
            return None
        if metric in LATENCY_QUANTILES:
            parse: Callable[[Any], float] = _latency_value
        elif metric == "error_rate":
            parse = parse_fraction
        else:
            parse = parse_rate
        value = get("value", parse, None)
        if value is None:
            return None
        if metric == "error_rate" and value > 1:
            errs.add(label, "value", "an error rate is at most 1 (100%)")
            return None
        return Threshold(metric, op, value)
    if kind == "regression_after_deploy":
        raw_metrics = raw.get("metrics")
        if raw_metrics is None:
            raw_metrics = [{"metric": "p95", "min_relative_change": 0.5}]
        if not isinstance(raw_metrics, list) or not raw_metrics:
            errs.add(label, "metrics", "must be a non-empty list of {metric, min_relative_change}")
            return None
        changes = []
        for j, m in enumerate(raw_metrics):
            f = f"metrics[{j}]"
            if not isinstance(m, Mapping):
                errs.add(label, f, "must be a mapping {metric, min_relative_change, min_absolute_change}")
                continue
            for key in m:
                if key not in ("metric", "min_relative_change", "min_absolute_change"):
                    errs.add(label, f"{f}.{key}", "unknown field")
            metric = m.get("metric")
            if metric not in ("p50", "p95", "p99", "error_rate"):
                errs.add(label, f"{f}.metric", "is required, one of p50, p95, p99, error_rate")
                continue
            try:
                rel = parse_fraction(m.get("min_relative_change", 0.5))
            except ValueError as exc:
                errs.add(label, f"{f}.min_relative_change", str(exc))
                continue
            absolute = 0.0
            if m.get("min_absolute_change") is not None:
                try:
                    v = m["min_absolute_change"]
                    absolute = (
                        parse_fraction(v)
                        if metric == "error_rate"
                        else float(parse_duration(v) if isinstance(v, str) else _no_bare(v))
                    )
                except ValueError as exc:
                    errs.add(label, f"{f}.min_absolute_change", str(exc))
                    continue
            changes.append(MetricChange(metric, rel, absolute))

        def alpha(v: Any) -> float:
            a = float(v)
            if not 0.0 < a < 0.5:
                raise ValueError("must be within (0, 0.5), e.g. 0.01")
            return a

        def test(v: Any) -> str:
            if v not in TESTS:
                raise ValueError(f"must be one of {', '.join(TESTS)}")
            return str(v)

        return Regression(
            tuple(changes),
            alpha=get("alpha", alpha, 0.01),
            test=get("test", test, "auto"),
            max_deploy_age_ns=get("max_deploy_age", parse_duration, 7 * DAY),
        )
    if kind == "cost_share":

        def ratio(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(
                    "must be a positive number, e.g. 4 for '10% of the traffic, 40% of the resources'"
                )
            return float(v)

        def resource(v: Any) -> str:
            if v in PLANNED_RESOURCES:
                raise ValueError(f"{v!r} is planned but not available yet; use span_duration")
            if v not in RESOURCE_MEASURES:
                raise ValueError(f"must be one of {', '.join(RESOURCE_MEASURES)}")
            return str(v)

        if raw.get("min_ratio") is None:
            errs.add(label, "min_ratio", "is required")
            return None
        return CostShare(
            min_ratio=get("min_ratio", ratio, 1.0),
            resource=get("resource", resource, "span_duration"),
            min_resource_share=get("min_resource_share", parse_fraction, 0.05),
        )
    if kind == "incident_recurrence":

        def count(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError("must be a positive integer")
            return v

        def by(v: Any) -> str:
            if v not in ("module", "service"):
                raise ValueError("must be module or service")
            return str(v)

        if raw.get("min_incidents") is None:
            errs.add(label, "min_incidents", "is required")
            return None
        return Recurrence(min_incidents=get("min_incidents", count, 1), by=get("by", by, "module"))
    return Unused()


def _no_bare(v: Any) -> float:
    raise ValueError(f"{v!r}: give a unit, e.g. 250ms or 1.5s")


def _latency_value(v: Any) -> float:
    return float(parse_duration(v) if isinstance(v, str) else _no_bare(v))


# -- evaluation inputs and outputs -------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredModule:
    """A module of ``modules.yaml``: its name, the services it is limited to, its code paths."""

    name: str
    services: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    repository: str = ""


@dataclass(frozen=True)
class EvaluationData:
    """Everything rules are evaluated over, loaded by the adapter.

    ``rows``: merged per-window aggregates (``ClickHouseStore.load_rows``) covering the
    ranges of :func:`required_ranges`; ``window_ns``: the aggregation window; ``last_seen``:
    (service, environment, module) -> end of the last window with spans; ``data_since``:
    start of the oldest aggregate window in the store (None: empty store).
    """

    rows: Sequence[AggregateRow] = ()
    window_ns: int = MINUTE
    deploys: Sequence[DeployEvent] = ()
    incidents: Sequence[IncidentEvent] = ()
    declared_modules: Sequence[DeclaredModule] = ()
    last_seen: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    data_since_unix_nano: int | None = None


@dataclass(frozen=True, order=True)
class FindingKey:
    rule: str
    service: str
    environment: str
    module: str

    def fingerprint(self) -> str:
        """A stable id of (rule, service, environment, module): 16 hex digits of SHA-256."""
        text = "\x1f".join((self.rule, self.service, self.environment, self.module))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Measurement:
    """One number of the evidence; ``before``/``after`` for regressions, ``value`` vs ``threshold``."""

    metric: str
    value: float = math.nan
    threshold: float = math.nan
    before: float = math.nan
    after: float = math.nan
    relative_change: float = math.nan
    p_value: float = math.nan
    test: str = ""
    breached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | str | None:
            if math.isnan(x):
                return None
            if math.isinf(x):
                return "inf"
            return x

        return {
            "metric": self.metric,
            "value": num(self.value),
            "threshold": num(self.threshold),
            "before": num(self.before),
            "after": num(self.after),
            "relative_change": num(self.relative_change),
            "p_value": num(self.p_value),
            "test": self.test or None,
            "breached": self.breached,
            "note": self.note or None,
        }


@dataclass(frozen=True)
class Observation:
    """The rule's verdict for one key at one evaluation instant."""

    status: Status
    summary: str
    measurements: tuple[Measurement, ...] = ()
    samples: int = 0
    owners: tuple[str, ...] = ()
    range_from_unix_nano: int = 0
    range_to_unix_nano: int = 0
    deploy: DeployEvent | None = None
    previous_deploy: DeployEvent | None = None
    incidents: tuple[str, ...] = ()
    repository: str = ""


@dataclass(frozen=True)
class Finding:
    """A rule's verdict for one key at ``evaluated_at``, with the history that matters.

    ``firing``: breached at every instant over ``for``.  ``breach_since``: the first instant
    of the current run of breaches (None when not breaching).  ``recovered``: clear at every
    instant over the ticket's ``recover_after``.
    """

    rule: Rule
    key: FindingKey
    evaluated_at_unix_nano: int
    observation: Observation
    firing: bool
    breach_since_unix_nano: int | None
    recovered: bool
    code_paths: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return self.observation.status

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint()

    def to_json(self) -> dict[str, Any]:
        o = self.observation
        return {
            "rule": self.rule.name,
            "kind": self.rule.kind,
            "severity": self.rule.severity,
            "fingerprint": self.fingerprint,
            "service": self.key.service,
            "environment": self.key.environment,
            "module": self.key.module,
            "status": o.status,
            "firing": self.firing,
            "recovered": self.recovered,
            "breach_since_unix_nano": self.breach_since_unix_nano,
            "evaluated_at_unix_nano": self.evaluated_at_unix_nano,
            "summary": o.summary,
            "samples": o.samples,
            "owners": list(o.owners),
            "code_paths": list(self.code_paths),
            "measurements": [m.to_json() for m in o.measurements],
            "deploy": _deploy_json(o.deploy),
            "previous_deploy": _deploy_json(o.previous_deploy),
            "incidents": list(o.incidents),
            "range_from_unix_nano": o.range_from_unix_nano,
            "range_to_unix_nano": o.range_to_unix_nano,
            "condition": self.rule.describe(),
        }


def _deploy_json(d: DeployEvent | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "deploy_id": d.deploy_id,
        "service": d.service,
        "environment": d.environment,
        "commit_sha": d.commit_sha,
        "previous_sha": d.previous_sha,
        "deployed_at_unix_nano": d.deployed_at_unix_nano,
        "repository": d.repository,
        "url": d.url,
    }


@dataclass(frozen=True)
class DataRange:
    """Aggregates the adapter must load: windows starting in ``[from, to)`` (None: any)."""

    from_unix_nano: int
    to_unix_nano: int
    service: str | None = None
    environment: str | None = None


# -- shared helpers ----------------------------------------------------------------------------


class _Pool:
    """Merged numbers of some rows."""

    __slots__ = ("bins", "dmax", "dmin", "dsum_adj", "err_adj", "owners", "repository", "spans", "spans_adj")

    def __init__(self) -> None:
        self.spans = 0
        self.spans_adj = 0
        self.err_adj = 0
        self.dsum_adj = 0
        self.dmin = 1 << 63
        self.dmax = -1
        self.bins: dict[int, int] = {}
        self.owners: set[str] = set()
        self.repository = ""

    def add(self, r: AggregateRow) -> None:
        self.spans += r.spans
        self.spans_adj += r.spans_adjusted_milli
        self.err_adj += r.errors_adjusted_milli
        self.dsum_adj += r.duration_adjusted_sum_ns
        self.dmin = min(self.dmin, r.duration_min_ns)
        self.dmax = max(self.dmax, r.duration_max_ns)
        b = self.bins
        for k, v in r.latency_bins.items():
            b[k] = b.get(k, 0) + v
        self.owners.update(r.owners)
        self.repository = self.repository or r.repository

    @property
    def error_rate(self) -> float:
        return self.err_adj / self.spans_adj if self.spans_adj else 0.0

    def metric(self, name: str, seconds: float) -> float:
        if name in LATENCY_QUANTILES:
            if not self.spans:
                return math.nan
            return quantile(self.bins, LATENCY_QUANTILES[name], minimum=self.dmin, maximum=self.dmax)
        if name == "error_rate":
            return self.error_rate
        return self.spans_adj / 1000.0 / seconds if seconds > 0 else math.nan


class _RowIndex:
    """Rows by window start, for range scans."""

    def __init__(self, rows: Iterable[AggregateRow]) -> None:
        by: dict[int, list[AggregateRow]] = {}
        for r in rows:
            by.setdefault(r.window_start_unix_nano, []).append(r)
        self.windows = sorted(by)
        self.by_window = by

    def scan(self, start: int, end: int) -> Iterable[AggregateRow]:
        """Rows of windows starting in ``[start, end)``."""
        i = bisect_left(self.windows, start)
        ws = self.windows
        while i < len(ws) and ws[i] < end:
            yield from self.by_window[ws[i]]
            i += 1


def _relative(before: float, after: float) -> float:
    if math.isnan(before) or math.isnan(after):
        return math.nan
    if before == 0:
        return math.inf if after > 0 else 0.0
    return after / before - 1.0


def _pct(x: float) -> str:
    return "inf" if math.isinf(x) else f"{100 * x:+.0f}%"


# -- evaluators: one verdict per key at one instant --------------------------------------------

Verdicts = dict[FindingKey, Observation]


class _Evaluator:
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        self.rule = rule
        self.data = data

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        raise NotImplementedError

    def key(self, service: str, environment: str, module: str) -> FindingKey:
        return FindingKey(self.rule.name, service, environment, module)


class _ThresholdEval(_Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        self.index = _RowIndex(
            r
            for r in data.rows
            if not r.unattributed_reason and rule.scope.match(r.service, r.environment, r.module, r.owners)
        )

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, Threshold)
        start = t - rule.window_ns
        pools: dict[FindingKey, _Pool] = {}
        for r in self.index.scan(start, t):
            if r.window_start_unix_nano + self.data.window_ns > t:
                continue  # an incomplete window
            k = self.key(r.service, r.environment, r.module)
            if only is not None and k not in only:
                continue
            pool = pools.get(k)
            if pool is None:
                pool = pools[k] = _Pool()
            pool.add(r)
        for k in only or ():
            pools.setdefault(k, _Pool())
        out: Verdicts = {}
        seconds = rule.window_ns / S
        for k, pool in pools.items():
            value = pool.metric(p.metric, seconds)
            enough = pool.spans >= rule.min_samples or (p.metric == "span_rate" and p.op == "below")
            shown = format_value(p.metric, value)
            limit = format_value(p.metric, p.value)
            if not enough or math.isnan(value):
                out[k] = Observation(
                    NO_DATA,
                    f"{pool.spans} spans in {format_duration(rule.window_ns)} (< {rule.min_samples})",
                    samples=pool.spans,
                    owners=tuple(sorted(pool.owners)),
                    range_from_unix_nano=start,
                    range_to_unix_nano=t,
                )
                continue
            breached = value > p.value if p.op == "above" else value < p.value
            sign = (">" if p.op == "above" else "<") if breached else ("<=" if p.op == "above" else ">=")
            out[k] = Observation(
                BREACH if breached else OK,
                f"{p.metric} {shown} {sign} {limit}",
                (Measurement(p.metric, value=value, threshold=p.value, breached=breached),),
                samples=pool.spans,
                owners=tuple(sorted(pool.owners)),
                range_from_unix_nano=start,
                range_to_unix_nano=t,
                repository=pool.repository,
            )
        return out


def latency_test(before: Mapping[int, int], after: Mapping[int, int], q: float, test: str) -> TestResult:
    """The one-sided latency test a regression rule uses.

    ``auto`` runs both the Mann-Whitney test (a shift of the whole distribution) and the
    quantile-exceedance test at ``q`` (a slower tail), and reports the smaller p-value
    doubled (Bonferroni), so the false-positive rate stays at most ``alpha``.
    """
    if test == "mann_whitney":
        return mann_whitney_bins(before, after)
    if test == "quantile":
        return quantile_exceedance_bins(before, after, q)
    mw = mann_whitney_bins(before, after)
    qe = quantile_exceedance_bins(before, after, q)
    best = mw if mw.p_value <= qe.p_value else qe
    return TestResult(
        f"min({mw.name}, {qe.name}) x2", best.statistic, min(1.0, 2 * best.p_value), mw.n_before, mw.n_after
    )


def compare(before: _Pool, after: _Pool, change: MetricChange, alpha: float, test: str) -> Measurement:
    """One metric of a before/after comparison: relative change and significance."""
    if change.metric in LATENCY_QUANTILES:
        b = before.metric(change.metric, 0)
        a = after.metric(change.metric, 0)
        result = latency_test(before.bins, after.bins, LATENCY_QUANTILES[change.metric], test)
    else:
        b, a = before.error_rate, after.error_rate
        result = two_proportion_z(b, before.spans, a, after.spans)
    rel = _relative(b, a)
    breached = (
        not math.isnan(rel)
        and rel >= change.min_relative_change
        and (a - b) >= change.min_absolute_change
        and result.p_value < alpha
    )
    return Measurement(
        change.metric,
        before=b,
        after=a,
        relative_change=rel,
        threshold=change.min_relative_change,
        p_value=result.p_value,
        test=result.name,
        breached=breached,
    )


class _RegressionEval(_Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        scope = rule.scope
        self.timeline = DeployTimeline(
            d
            for d in data.deploys
            if scope.match_service(d.service) and scope.match_environment(d.environment)
        )
        self.pairs = sorted({(d.service, d.environment) for d in self.timeline.events()})
        self.index = _RowIndex(
            r
            for r in data.rows
            if not r.unattributed_reason
            and scope.match(r.service, r.environment, r.module, r.owners)
            and (r.service, r.environment) in set(self.pairs)
        )

    def sides(
        self, t: int, service: str, environment: str
    ) -> tuple[DeployEvent, DeployEvent, int, int] | None:
        """The live deploy at ``t``, its predecessor, and the compared length ``[d - L, d + L)``."""
        p = self.rule.params
        assert isinstance(p, Regression)
        deploy = self.timeline.deploy_at(service, environment, t - 1)
        if deploy is None or t - deploy.deployed_at_unix_nano > p.max_deploy_age_ns:
            return None
        previous = self.timeline.previous(deploy)
        if previous is None:
            return None
        d = deploy.deployed_at_unix_nano
        length = min(t - d, self.rule.window_ns, d - previous.deployed_at_unix_nano)
        # whole aggregation windows only: the window holding d splits by deploy id
        w = self.data.window_ns
        length -= length % w
        return deploy, previous, d, length

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, Regression)
        w = self.data.window_ns
        out: Verdicts = {}
        for service, environment in self.pairs:
            sides = self.sides(t, service, environment)
            if sides is None:
                continue
            deploy, previous, d, length = sides
            before: dict[str, _Pool] = {}
            after: dict[str, _Pool] = {}
            if length > 0:
                # windows overlapping [d - length, d) that ran the previous deploy, and
                # [d, d + length) that ran this one; the window holding d splits by deploy id
                d_floor = d - d % w
                for r in self.index.scan(d_floor - length, d_floor + length + w):
                    if r.service != service or r.environment != environment:
                        continue
                    if only is not None and self.key(service, environment, r.module) not in only:
                        continue
                    ws = r.window_start_unix_nano
                    if r.deploy_id == deploy.deploy_id and ws < d + length and ws + w > d:
                        after.setdefault(r.module, _Pool()).add(r)
                    elif r.deploy_id == previous.deploy_id and ws < d and ws + w > d - length:
                        before.setdefault(r.module, _Pool()).add(r)
            modules = set(before) | set(after)
            if only is not None:
                modules |= {k.module for k in only if (k.service, k.environment) == (service, environment)}
            for module in sorted(modules):
                k = self.key(service, environment, module)
                if only is not None and k not in only:
                    continue
                b = before.get(module, _Pool())
                a = after.get(module, _Pool())
                owners = tuple(sorted(a.owners | b.owners))
                common = {
                    "owners": owners,
                    "range_from_unix_nano": d - max(length, rule.window_ns),
                    "range_to_unix_nano": d + max(length, rule.window_ns),
                    "deploy": deploy,
                    "previous_deploy": previous,
                    "repository": a.repository or b.repository or deploy.repository,
                }
                if b.spans < rule.min_samples or a.spans < rule.min_samples:
                    out[k] = Observation(
                        NO_DATA,
                        f"{b.spans} spans before, {a.spans} after {deploy.deploy_id} (< {rule.min_samples} each side)",
                        samples=min(a.spans, b.spans),
                        **common,  # type: ignore[arg-type]
                    )
                    continue
                ms = tuple(compare(b, a, c, p.alpha, p.test) for c in p.changes)
                hit = [m for m in ms if m.breached]
                shown = hit or list(ms)
                text = ", ".join(
                    f"{m.metric} {format_value(m.metric, m.before)} → {format_value(m.metric, m.after)} "
                    f"({_pct(m.relative_change)}, p={m.p_value:.2g})"
                    for m in shown
                )
                summary = (
                    f"regressed after {deploy.deploy_id}: "
                    if hit
                    else f"no regression after {deploy.deploy_id}: "
                ) + text
                out[k] = Observation(
                    BREACH if hit else OK,
                    summary,
                    ms,
                    samples=min(a.spans, b.spans),
                    **common,  # type: ignore[arg-type]
                )
        return out


class _CostShareEval(_Evaluator):
    def __init__(self, rule: Rule, data: EvaluationData) -> None:
        super().__init__(rule, data)
        scope = rule.scope
        # the denominators are the whole service, so rows are filtered by service/env only
        self.index = _RowIndex(
            r for r in data.rows if scope.match_service(r.service) and scope.match_environment(r.environment)
        )

    def at(self, t: int, only: Collection[FindingKey] | None = None) -> Verdicts:
        rule = self.rule
        p = rule.params
        assert isinstance(p, CostShare)
        measure = RESOURCE_MEASURES[p.resource]
        start = t - rule.window_ns
        totals: dict[tuple[str, str], list[int]] = {}
        per: dict[FindingKey, list[Any]] = {}
        for r in self.index.scan(start, t):
            if r.window_start_unix_nano + self.data.window_ns > t:
                continue
            amount = measure(r)
            tot = totals.setdefault((r.service, r.environment), [0, 0])
            tot[0] += amount
            tot[1] += r.spans_adjusted_milli
            if r.unattributed_reason or not rule.scope.match(r.service, r.environment, r.module, r.owners):
                continue
            k = self.key(r.service, r.environment, r.module)
            acc = per.setdefault(k, [0, 0, 0, set(), ""])
            acc[0] += amount
            acc[1] += r.spans_adjusted_milli
            acc[2] += r.spans
            acc[3].update(r.owners)
            acc[4] = acc[4] or r.repository
        for k in only or ():
            per.setdefault(k, [0, 0, 0, set(), ""])
        out: Verdicts = {}
        for k, (amount, traffic, spans, owners, repo) in per.items():
            if only is not None and k not in only:
                continue
            tot_amount, tot_traffic = totals.get((k.service, k.environment), [0, 0])
            common: dict[str, Any] = {
                "owners": tuple(sorted(owners)),
                "range_from_unix_nano": start,
                "range_to_unix_nano": t,
                "samples": spans,
                "repository": repo,
            }
            if spans < rule.min_samples or not tot_amount or not tot_traffic or not traffic:
                out[k] = Observation(NO_DATA, f"{spans} spans (< {rule.min_samples})", **common)
                continue
            resource_share = amount / tot_amount
            traffic_share = traffic / tot_traffic
            ratio = resource_share / traffic_share
            breached = ratio >= p.min_ratio and resource_share >= p.min_resource_share
            ms = (
                Measurement(
                    "resource_share", value=resource_share, threshold=p.min_resource_share, note=p.resource
                ),
                Measurement("traffic_share", value=traffic_share),
                Measurement("ratio", value=ratio, threshold=p.min_ratio, breached=breached),
            )
            out[k] = Observation(
                BREACH if breached else OK,
                f"{100 * traffic_share:.1f}% of {k.service}'s traffic, {100 * resource_share:.1f}% of its "
                f"{p.resource.replace('_', ' ')} (x{ratio:.1f}, limit x{p.min_ratio:g})",
                ms,
                **common,
            )
        return out


class _RecurrenceEval(_Evaluator):
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


class _UnusedEval(_Evaluator):
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


_EVALUATORS: Final[Mapping[str, type[_Evaluator]]] = {
    "threshold": _ThresholdEval,
    "regression_after_deploy": _RegressionEval,
    "cost_share": _CostShareEval,
    "incident_recurrence": _RecurrenceEval,
    "unused": _UnusedEval,
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
    ev = _EVALUATORS[rule.kind](rule, data)
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
