"""Values in rules files: time units, metric names, durations, fractions and rates, parsed and formatted."""

from __future__ import annotations

import math
import re
from typing import Any, Final

S: Final = 1_000_000_000
MINUTE: Final = 60 * S
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR

LATENCY_QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
# quantiles of self time (a span's duration minus its children's), over the self-time sketch
SELF_QUANTILES: Final = {"self_p50": 0.5, "self_p95": 0.95, "self_p99": 0.99}
# error_rate: errored spans / spans; own_error_rate: errored spans with no errored child / spans
# whose trace completed (the code that failed, not the callers the error went through)
ERROR_RATES: Final = ("error_rate", "own_error_rate")
# what a regression compares before and after a deploy
REGRESSION_METRICS: Final = (*LATENCY_QUANTILES, *SELF_QUANTILES, *ERROR_RATES)
# what a threshold compares with a value
METRICS: Final = (*REGRESSION_METRICS, "span_rate")

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
    if metric in LATENCY_QUANTILES or metric in SELF_QUANTILES or metric.endswith("_ns"):
        if value >= S:
            return f"{value / S:.2f} s"
        return f"{value / 1e6:.1f} ms" if value >= 1e7 else f"{value / 1e6:.2f} ms"
    if metric in ERROR_RATES or metric in ("share", "resource_share", "traffic_share"):
        return f"{100 * value:.2f}%"
    if metric == "span_rate":
        return f"{value:.2f}/s"
    if metric == "ratio":
        return "inf" if math.isinf(value) else f"x{value:.2f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"
