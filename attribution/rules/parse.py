"""Parsing a loaded rules file (plain dicts) into a :class:`~attribution.rules.schema.RuleSet`.

Every problem is collected, each naming the file, the rule and the field.  The kind-specific
fields are parsed by :mod:`attribution.rules.params`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any, Final

from attribution.globs import GlobSyntaxError, compile_glob
from attribution.rules.errors import Problems, RuleError, RulesFileError, unknown_key
from attribution.rules.params import parse_params
from attribution.rules.schema import KINDS, SEVERITIES, TEMPLATE_FIELDS, Rule, RuleSet, Scope, TicketTemplate
from attribution.rules.values import DAY, MINUTE, parse_duration

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
    errs = Problems(source)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RulesFileError([RuleError(source, "(file)", "", "the top level must be a mapping with rules:")])
    for key in data:
        if key not in ("version", "defaults", "rules"):
            errs.add("(file)", str(key), unknown_key(str(key), ("version", "defaults", "rules")))
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
    index: int, label: str, raw: Mapping[str, Any], errs: Problems, *, explicit: Mapping[str, Any]
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
            errs.add(label, str(key), unknown_key(str(key), _RULE_KEYS))
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
    params = parse_params(kind, label, raw, errs, get)
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


def _parse_scope(label: str, raw: Any, errs: Problems) -> Scope:
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


def _parse_ticket(label: str, raw: Any, errs: Problems) -> TicketTemplate:
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
