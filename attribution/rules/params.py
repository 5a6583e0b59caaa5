"""Parsing the kind-specific fields of one rule into its parameters (threshold, regression, ...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attribution.rules.errors import Problems
from attribution.rules.schema import (
    DEFAULT_RESOURCE,
    PLANNED_RESOURCES,
    RESOURCE_MEASURES,
    TESTS,
    CostShare,
    MetricChange,
    Params,
    Recurrence,
    Regression,
    Threshold,
    Unused,
)
from attribution.rules.values import (
    DAY,
    ERROR_RATES,
    LATENCY_QUANTILES,
    METRICS,
    REGRESSION_METRICS,
    SELF_QUANTILES,
    parse_duration,
    parse_fraction,
    parse_rate,
)


def parse_params(
    kind: str,
    label: str,
    raw: Mapping[str, Any],
    errs: Problems,
    get: Callable[[str, Callable[[Any], Any], Any], Any],
) -> Params | None:
    """The parameters of a rule of ``kind``, or None after adding the problems to ``errs``."""
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
        if metric in LATENCY_QUANTILES or metric in SELF_QUANTILES:
            parse: Callable[[Any], float] = _latency_value
        elif metric in ERROR_RATES:
            parse = parse_fraction
        else:
            parse = parse_rate
        value = get("value", parse, None)
        if value is None:
            return None
        if metric in ERROR_RATES and value > 1:
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
            if metric not in REGRESSION_METRICS:
                errs.add(label, f"{f}.metric", f"is required, one of {', '.join(REGRESSION_METRICS)}")
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
                        if metric in ERROR_RATES
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
                raise ValueError(
                    f"{v!r} is planned but not available yet; use {', '.join(RESOURCE_MEASURES)}"
                )
            if v not in RESOURCE_MEASURES:
                raise ValueError(f"must be one of {', '.join(RESOURCE_MEASURES)}")
            return str(v)

        if raw.get("min_ratio") is None:
            errs.add(label, "min_ratio", "is required")
            return None
        return CostShare(
            min_ratio=get("min_ratio", ratio, 1.0),
            resource=get("resource", resource, DEFAULT_RESOURCE),
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
