"""Which modules regressed during an incident.  Pure.

An incident names services, not code.  To infer its modules (:mod:`attribution.incident_links`),
each module of the incident's services is compared between the **incident window**
``[started_at, resolved_at)`` (an open incident: one hour from its start) and the **baseline**,
the same length just before it.  A module regressed when, with at least ``min_spans`` spans
in both:

* its **own error rate** (errored spans with no errored child, issue 12: an error is blamed on
  the code that failed, not on every caller it propagated through) rose by ``error_ratio``
  times and by at least ``min_error_rate_delta``; or
* its **mean self time** per span rose by ``latency_ratio`` times.

Means and rates, not percentiles: they add up exactly over the store's rows (one per commit
and owners), where percentiles of different rows do not merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR_NS = 3_600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class ModuleSignal:
    """One module's sums over a window."""

    spans: int = 0
    own_errors: int = 0
    self_time_sum_ns: int = 0
    self_spans: int = 0

    def __add__(self, other: ModuleSignal) -> ModuleSignal:
        return ModuleSignal(
            self.spans + other.spans,
            self.own_errors + other.own_errors,
            self.self_time_sum_ns + other.self_time_sum_ns,
            self.self_spans + other.self_spans,
        )

    @property
    def own_error_rate(self) -> float:
        return self.own_errors / self.spans if self.spans else 0.0

    @property
    def mean_self_ns(self) -> float:
        return self.self_time_sum_ns / self.self_spans if self.self_spans else 0.0


def incident_windows(started_at: int, resolved_at: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(baseline, incident window) as ``[from, to)`` ranges in Unix nanoseconds."""
    end = resolved_at if resolved_at > started_at else started_at + HOUR_NS
    length = end - started_at
    return (started_at - length, started_at), (started_at, end)


def sum_signals(rows: Iterable[tuple[str, ModuleSignal]]) -> dict[str, ModuleSignal]:
    out: dict[str, ModuleSignal] = {}
    for module, s in rows:
        out[module] = out.get(module, ModuleSignal()) + s
    return out


def regressed_modules(
    baseline: Mapping[str, ModuleSignal],
    incident: Mapping[str, ModuleSignal],
    *,
    min_spans: int = 20,
    error_ratio: float = 2.0,
    min_error_rate_delta: float = 0.01,
    latency_ratio: float = 1.5,
) -> dict[str, str]:
    """The modules that regressed, each with why ("own error rate 0.4% -> 3.1%")."""
    out: dict[str, str] = {}
    for module in sorted(incident):
        now, before = incident[module], baseline.get(module, ModuleSignal())
        if now.spans < min_spans or before.spans < min_spans:
            continue
        a, b = before.own_error_rate, now.own_error_rate
        if b >= a * error_ratio and b - a >= min_error_rate_delta:
            out[module] = f"own error rate {a:.2%} -> {b:.2%}"
            continue
        x, y = before.mean_self_ns, now.mean_self_ns
        if x > 0 and y >= x * latency_ratio:
            out[module] = f"mean self time {x / 1e6:.1f} ms -> {y / 1e6:.1f} ms"
    return out
