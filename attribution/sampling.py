"""Sampling probability of a span, for adjusted (1/p) counts.  Pure.

Two sources, first that applies wins:

1. a configured span attribute such as ``SampleRate`` holding N for "1 in N kept";
2. the W3C ``tracestate`` entry ``ot=th:<hex>`` of OpenTelemetry probability sampling:
   the rejection threshold T is the hex value right-padded to 14 digits (56 bits), and the
   keep probability is ``(2**56 - T) / 2**56``.  ``th:0`` means "always kept".

Anything unparsable means probability 1 (the span counts once): a sampler's metadata is
advisory, never a reason to drop a span.
"""

from __future__ import annotations

from functools import lru_cache

_MAX_THRESHOLD = 1 << 56
_HEX = frozenset("0123456789abcdef")


@lru_cache(maxsize=4096)
def probability_from_tracestate(trace_state: str) -> float:
    """Keep-probability from the ``ot=th:`` threshold in a W3C tracestate, else 1.0."""
    if "ot=" not in trace_state:
        return 1.0
    for member in trace_state.split(","):
        key, sep, value = member.strip().partition("=")
        if key != "ot" or not sep:
            continue
        for sub in value.split(";"):
            name, colon, th = sub.partition(":")
            if name != "th" or not colon:
                continue
            if not th or len(th) > 14 or not all(c in _HEX for c in th):
                return 1.0
            try:
                threshold = int(th.ljust(14, "0"), 16)
            except ValueError:
                return 1.0
            p = (_MAX_THRESHOLD - threshold) / _MAX_THRESHOLD
            return p if p > 0.0 else 1.0
    return 1.0


def probability_from_sample_rate(value: object) -> float:
    """Keep-probability from a "1 in N" sample-rate attribute value, else 1.0."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1.0
    if not rate >= 1.0 or rate == float("inf"):
        return 1.0
    return 1.0 / rate
