"""Cost per module: cost rates, billing files (FOCUS columns), apportionment.  Pure.

Money is integer micro-USD everywhere (``1 USD = 1_000_000``); decimal text is parsed with
:class:`decimal.Decimal`, never float.  The method (docs/cost.md):

* a service's cost for a period comes from imported billing entries or, on the UTC days no
  billing entry of that service and environment covers, from its configured rate
  (:func:`effective_costs`);
* each period's cost is split over the modules that ran in it by :func:`apportion`
  (largest remainder, exact) on one weight: CPU time when the service's spans in that period
  carry it, else self time, else wall time (span durations), else spans;
* a period with cost and no spans at all goes to the module ``(idle)``, so the allocation
  always sums back to the cost.
"""

from __future__ import annotations

import bisect
import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, NamedTuple, Protocol, TypeVar

from attribution.events import EventValidationError, parse_rfc3339

MICRO_USD = 1_000_000  # micro-USD per USD
HOUR_NS = 3_600 * 1_000_000_000
DAY_NS = 24 * HOUR_NS
IDLE_MODULE = "(idle)"

# FOCUS 1.x column names, and prodloop's custom (x_) columns
CHARGE_PERIOD_START = "ChargePeriodStart"
CHARGE_PERIOD_END = "ChargePeriodEnd"
BILLING_CURRENCY = "BillingCurrency"
EFFECTIVE_COST = "EffectiveCost"
BILLED_COST = "BilledCost"
TAGS = "Tags"
X_SERVICE = "x_service"
X_ENVIRONMENT = "x_environment"

# weights, in the order they are tried for a service and period
BASES = ("cpu_time", "self_time", "wall_time", "spans")


# -- rates ------------------------------------------------------------------------------------


class CostRate(NamedTuple):
    """A configured cost of one (service, environment): micro-USD per hour, optionally only
    within ``[since, until)``."""

    service: str
    environment: str
    micro_usd_per_hour: int
    since_unix_nano: int | None = None
    until_unix_nano: int | None = None


def rate_micro_usd_per_hour(
    *,
    usd_per_cpu_hour: Decimal | None = None,
    cpus_per_instance: Decimal = Decimal(1),
    instances: Decimal = Decimal(1),
    usd_per_hour: Decimal | None = None,
) -> int:
    """``usd_per_cpu_hour x cpus_per_instance x instances``, or ``usd_per_hour``, in micro-USD
    per hour (rounded half-even).  Exactly one of the two prices must be given."""
    if (usd_per_cpu_hour is None) == (usd_per_hour is None):
        raise ValueError("give either usd_per_cpu_hour (with instances, cpus_per_instance) or usd_per_hour")
    if usd_per_hour is not None:
        usd = usd_per_hour
    else:
        assert usd_per_cpu_hour is not None
        usd = usd_per_cpu_hour * cpus_per_instance * instances
    if usd < 0 or cpus_per_instance < 0 or instances < 0:
        raise ValueError("rates, cpus and instances must not be negative")
    return int((usd * MICRO_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def rate_cost(micro_usd_per_hour: int, start_unix_nano: int, end_unix_nano: int) -> int:
    """A rate's cost over ``[start, end)``: rate x hours, in integers (floored to a micro-USD)."""
    return micro_usd_per_hour * max(0, end_unix_nano - start_unix_nano) // HOUR_NS


# -- cost entries and billing files -------------------------------------------------------------


class CostEntry(NamedTuple):
    """The cost of one (service, environment) over ``[start, end)``; ``source`` names where it
    came from (a billing file, or ``rate``)."""

    service: str
    environment: str
    start_unix_nano: int
    end_unix_nano: int
    micro_usd: int
    source: str = ""


class CostError(NamedTuple):
    """A row of a billing file that cannot be read: ``file:line: column: message``."""

    source: str
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.column}: {self.message}"


@dataclass
class BillingFile:
    """What :func:`parse_billing_csv` read: entries summed per (service, environment, period)."""

    source: str
    cost_column: str = ""
    entries: list[CostEntry] = field(default_factory=list)
    errors: list[CostError] = field(default_factory=list)
    rows: int = 0  # data rows read
    skipped_rows: int = 0  # rows naming no prodloop service (shared costs, untagged resources)
    skipped_micro_usd: int = 0

    @property
    def micro_usd(self) -> int:
        return sum(e.micro_usd for e in self.entries)


def to_micro_usd(text: str) -> int:
    """Decimal text (``12.345678``, ``-0.5``, ``1e3``) -> micro-USD, rounded half-even."""
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    return int((d * MICRO_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def parse_period_time(text: str) -> int:
    """A FOCUS charge period bound -> unix ns: RFC 3339, ``YYYY-MM-DD HH:MM:SS`` (UTC when it
    names no zone), or a date (its midnight, UTC)."""
    v = text.strip()
    if len(v) == 10:
        v += "T00:00:00Z"
    elif v and v[-1] not in "Zz" and v[-6:-5] not in ("+", "-"):
        v += "Z"
    try:
        return parse_rfc3339(v, "time")
    except EventValidationError:
        raise ValueError(f"{text!r} is not a date or RFC 3339 time (e.g. 2026-01-10T00:00:00Z)") from None


def _decimal(text: str) -> Decimal:
    to_micro_usd(text)  # validates
    return Decimal(text.strip())


def _micro(d: Decimal) -> int:
    return int((d * MICRO_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _records(text: str) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """(first line, fields) per CSV record; a malformed record ends the file with its error."""
    reader = csv.reader(text.splitlines(keepends=True))
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, exc
            return
        yield line, row


def parse_billing_csv(
    text: str,
    source: str,
    *,
    cost_column: str | None = None,
    service_tag: str = "service",
    environment_tag: str = "environment",
    default_service: str = "",
    default_environment: str = "",
) -> BillingFile:
    """Read a billing export with FOCUS 1.x columns (no I/O: ``text`` is the file's content).

    Columns: ``ChargePeriodStart``, ``ChargePeriodEnd`` (exclusive), the cost column
    (``cost_column``, else ``EffectiveCost`` when present, else ``BilledCost``), optional
    ``BillingCurrency`` (USD only).  The prodloop service is the ``x_service`` column, else the
    ``Tags`` JSON object's ``service_tag`` key, else ``default_service``; the environment
    likewise (``x_environment``, ``environment_tag``, ``default_environment``).  Rows naming no
    service are skipped and counted.  Every unreadable row is an error naming
    ``source:line`` and the column; the entries are then still those of the good rows.
    """
    out = BillingFile(source)
    records = _records(text.removeprefix("\ufeff"))
    header: list[str] | None = None
    sums: dict[tuple[str, str, int, int], Decimal] = {}
    skipped = Decimal(0)
    for line, row in records:
        if isinstance(row, csv.Error):
            out.errors.append(CostError(source, line, "-", f"not valid CSV: {row}"))
            break
        if header is None:
            header = [h.strip() for h in row]
            column = cost_column or (EFFECTIVE_COST if EFFECTIVE_COST in header else BILLED_COST)
            out.cost_column = column
            missing = [c for c in (CHARGE_PERIOD_START, CHARGE_PERIOD_END, column) if c not in header]
            for c in missing:
                out.errors.append(CostError(source, line, c, "no such column in the header"))
            if missing:
                return out
            continue
        if not any(c.strip() for c in row):
            continue
        out.rows += 1
        if len(row) != len(header):
            out.errors.append(
                CostError(source, line, "-", f"{len(row)} fields, the header has {len(header)}")
            )
            continue
        cells = dict(zip(header, row, strict=True))
        errors = len(out.errors)

        def bad(column: str, message: str, line: int = line) -> None:
            out.errors.append(CostError(source, line, column, message))

        currency = cells.get(BILLING_CURRENCY, "USD").strip()
        if currency.upper() != "USD":
            bad(
                BILLING_CURRENCY,
                f"currency {currency!r}: prodloop accounts in USD only (integer micro-USD); "
                "export the bill in USD or convert it first",
            )
        try:
            amount = _decimal(cells[out.cost_column])
        except ValueError as exc:
            bad(out.cost_column, str(exc))
        times: list[int] = []
        for c in (CHARGE_PERIOD_START, CHARGE_PERIOD_END):
            try:
                times.append(parse_period_time(cells[c]))
            except ValueError as exc:
                bad(c, str(exc))
        if len(times) == 2 and times[1] <= times[0]:
            bad(CHARGE_PERIOD_END, "the charge period ends before it starts")
        tags: Mapping[str, Any] = {}
        raw_tags = cells.get(TAGS, "").strip()
        if raw_tags:
            try:
                loaded = json.loads(raw_tags)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                tags = loaded
            else:
                bad(TAGS, "not a JSON object of tag keys and values")
        if len(out.errors) > errors:
            continue
        service = (
            cells.get(X_SERVICE, "").strip() or str(tags.get(service_tag, "")).strip() or default_service
        )
        environment = (
            cells.get(X_ENVIRONMENT, "").strip()
            or str(tags.get(environment_tag, "")).strip()
            or default_environment
        )
        if not service:
            out.skipped_rows += 1
            skipped += amount
            continue
        key = (service, environment, times[0], times[1])
        sums[key] = sums.get(key, Decimal(0)) + amount
    out.entries = [CostEntry(*k, _micro(v), source) for k, v in sorted(sums.items())]
    out.skipped_micro_usd = _micro(skipped)
    return out


# -- apportionment -----------------------------------------------------------------------------


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Ordered)


def apportion(total_micro_usd: int, weights: Mapping[K, int]) -> dict[K, int]:
    """Split ``total`` over ``weights`` in proportion, in integers, summing back exactly.

    Largest remainder: each key gets the floor of its exact share, and the micro-USD left go one
    each to the largest remainders (ties: the smaller key first).  A negative total (a credit)
    is split as its absolute value, negated.  Every share is within 1 of the exact one.

    When the weights sum to zero (or there are none) nothing can be split: the result is empty
    and the caller decides where the total goes (:func:`module_costs`: to ``(idle)``).
    Raises :class:`ValueError` for a negative weight.
    """
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must not be negative")
    wsum = sum(weights.values())
    if wsum == 0:
        return {}
    if total_micro_usd < 0:
        return {k: -v for k, v in apportion(-total_micro_usd, weights).items()}
    out: dict[K, int] = {}
    remainders: list[tuple[int, K]] = []
    for k, w in weights.items():
        q, r = divmod(total_micro_usd * w, wsum)
        out[k] = q
        remainders.append((-r, k))
    left = total_micro_usd - sum(out.values())
    remainders.sort()
    for _, k in remainders[:left]:
        out[k] += 1
    return out


# -- costs of a range ----------------------------------------------------------------------------


def _overlap(a0: int, a1: int, b0: int, b1: int) -> tuple[int, int]:
    return max(a0, b0), min(a1, b1)


def _utc_days(start: int, end: int) -> Iterator[int]:
    d = start - start % DAY_NS
    while d < end:
        yield d
        d += DAY_NS


def effective_costs(
    billing: Iterable[CostEntry], rates: Iterable[CostRate], start_unix_nano: int, end_unix_nano: int
) -> list[CostEntry]:
    """The costs of ``[start, end)``, one entry per (service, environment, period), sorted.

    Billing entries are clipped to the range; one that lies partly outside keeps the part of
    its cost proportional to the time inside (floored).  Each rate adds, per UTC day of the
    range (and of its own ``[since, until)``), rate x hours - except on days some billing
    entry of the same service and environment overlaps: billing wins where it exists.
    """
    sums: dict[tuple[str, str, int, int], int] = {}
    billed_days: set[tuple[str, str, int]] = set()
    for e in billing:
        for d in _utc_days(e.start_unix_nano, e.end_unix_nano):
            billed_days.add((e.service, e.environment, d))
        a, b = _overlap(e.start_unix_nano, e.end_unix_nano, start_unix_nano, end_unix_nano)
        if a >= b:
            continue
        part = e.micro_usd * (b - a) // (e.end_unix_nano - e.start_unix_nano)
        key = (e.service, e.environment, a, b)
        sums[key] = sums.get(key, 0) + part
    for rate in rates:
        lo = max(
            start_unix_nano, rate.since_unix_nano if rate.since_unix_nano is not None else start_unix_nano
        )
        hi = min(end_unix_nano, rate.until_unix_nano if rate.until_unix_nano is not None else end_unix_nano)
        for d in _utc_days(lo, hi):
            if (rate.service, rate.environment, d) in billed_days:
                continue
            a, b = _overlap(d, d + DAY_NS, lo, hi)
            key = (rate.service, rate.environment, a, b)
            sums[key] = sums.get(key, 0) + rate_cost(rate.micro_usd_per_hour, a, b)
    return [CostEntry(*k, v, "") for k, v in sorted(sums.items())]


def breakpoints(costs: Iterable[CostEntry], start_unix_nano: int, end_unix_nano: int) -> list[int]:
    """``start``, ``end`` and every cost period bound between them, sorted: the segments over
    which the store sums weights (each cost period is a union of segments)."""
    points = {start_unix_nano, end_unix_nano}
    for e in costs:
        for t in (e.start_unix_nano, e.end_unix_nano):
            if start_unix_nano < t < end_unix_nano:
                points.add(t)
    return sorted(points)


class WeightSample(NamedTuple):
    """What one module did in one segment of time starting at ``at_unix_nano``: the weights
    costs are split by, and its traffic."""

    service: str
    environment: str
    module: str
    at_unix_nano: int
    cpu_time_ns: int = 0
    self_time_ns: int = 0
    duration_ns: int = 0
    spans_adjusted_milli: int = 0


def _measure(s: WeightSample, basis: str) -> int:
    if basis == "cpu_time":
        return s.cpu_time_ns
    if basis == "self_time":
        return s.self_time_ns
    if basis == "wall_time":
        return s.duration_ns
    return s.spans_adjusted_milli


@dataclass
class Allocation:
    """Micro-USD per (service, environment, module); per (service, environment) the total and
    the weights used (:data:`BASES`, in the order of first use)."""

    costs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    totals: dict[tuple[str, str], int] = field(default_factory=dict)
    bases: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def module_costs(costs: Iterable[CostEntry], weights: Iterable[WeightSample]) -> Allocation:
    """Split every cost entry over the modules with samples in its period (``start <= at <
    end``), on the first of :data:`BASES` that is non-zero for the service in that period.
    An entry with no weight at all (idle capacity) goes to ``(idle)``.  Sums exactly."""
    by_service: dict[tuple[str, str], list[WeightSample]] = {}
    for s in weights:
        by_service.setdefault((s.service, s.environment), []).append(s)
    times_of: dict[tuple[str, str], list[int]] = {}
    for pair, samples in by_service.items():
        samples.sort(key=lambda s: s.at_unix_nano)
        times_of[pair] = [s.at_unix_nano for s in samples]
    out = Allocation()
    for e in costs:
        pair = (e.service, e.environment)
        out.totals[pair] = out.totals.get(pair, 0) + e.micro_usd
        samples = by_service.get(pair, [])
        times = times_of.get(pair, [])
        inside = samples[
            bisect.bisect_left(times, e.start_unix_nano) : bisect.bisect_left(times, e.end_unix_nano)
        ]
        shares: dict[str, int] = {}
        for basis in BASES:
            per_module: dict[str, int] = {}
            for s in inside:
                per_module[s.module] = per_module.get(s.module, 0) + _measure(s, basis)
            shares = apportion(e.micro_usd, per_module)
            if shares:
                used = out.bases.setdefault(pair, [])
                if basis not in used:
                    used.append(basis)
                break
        if not shares:
            shares = {IDLE_MODULE: e.micro_usd}
        for module, v in shares.items():
            k = (e.service, e.environment, module)
            out.costs[k] = out.costs.get(k, 0) + v
    return out


# -- the report: cost share vs traffic share ----------------------------------------------------


class ModuleCost(NamedTuple):
    """One module's cost over a range, beside its share of its service's traffic and self time.

    ``ratio`` = cost share / traffic share (None without traffic): 4.0 reads "10% of the
    traffic, 40% of the cost"."""

    service: str
    environment: str
    module: str
    owners: tuple[str, ...]
    micro_usd: int
    cost_share: float
    traffic_share: float
    self_time_share: float | None
    ratio: float | None


def cost_report(
    allocation: Allocation,
    weights: Sequence[WeightSample],
    owners: Mapping[tuple[str, str, str], Sequence[str]] | None = None,
) -> list[ModuleCost]:
    """Per module of every costed (service, environment): its cost, cost share, traffic share
    (sampling-adjusted spans), self-time share and ratio; sorted by ratio (highest first, no
    traffic last), then cost."""
    traffic: dict[tuple[str, str, str], int] = {}
    self_time: dict[tuple[str, str, str], int] = {}
    for s in weights:
        if (s.service, s.environment) not in allocation.totals:
            continue
        k = (s.service, s.environment, s.module)
        traffic[k] = traffic.get(k, 0) + s.spans_adjusted_milli
        self_time[k] = self_time.get(k, 0) + s.self_time_ns
    svc_traffic: dict[tuple[str, str], int] = {}
    svc_self: dict[tuple[str, str], int] = {}
    for (svc, env, module), v in traffic.items():
        svc_traffic[(svc, env)] = svc_traffic.get((svc, env), 0) + v
        svc_self[(svc, env)] = svc_self.get((svc, env), 0) + self_time[(svc, env, module)]
    rows = []
    for k in sorted(set(allocation.costs) | set(traffic)):
        svc, env, module = k
        total = allocation.totals[(svc, env)]
        cost = allocation.costs.get(k, 0)
        t_total = svc_traffic.get((svc, env), 0)
        s_total = svc_self.get((svc, env), 0)
        cost_share = cost / total if total else 0.0
        traffic_share = traffic.get(k, 0) / t_total if t_total else 0.0
        rows.append(
            ModuleCost(
                svc,
                env,
                module,
                tuple(sorted((owners or {}).get(k, ()))),
                cost,
                cost_share,
                traffic_share,
                self_time.get(k, 0) / s_total if s_total else None,
                cost_share / traffic_share if traffic_share else None,
            )
        )
    rows.sort(key=lambda r: (r.ratio is None, -(r.ratio or 0.0), -r.micro_usd, r[:3]))
    return rows


def headline(rows: Sequence[ModuleCost]) -> str:
    """One line naming the module whose cost share most exceeds its traffic share."""
    named = [r for r in rows if r.ratio is not None and not r.module.startswith("(")]
    if not named:
        return "no module has both cost and traffic in this range"
    w = max(named, key=lambda r: (r.ratio or 0.0, r.micro_usd))
    env = f"/{w.environment}" if w.environment else ""
    return (
        f"{w.module} ({w.service}{env}): {100 * w.traffic_share:.1f}% of the traffic, "
        f"{100 * w.cost_share:.1f}% of the cost (x{w.ratio:.1f}), {format_usd(w.micro_usd)}"
    )


def format_usd(micro_usd: int) -> str:
    """``$1,234.56`` (rounded to the cent for display only)."""
    cents = (abs(micro_usd) + 5_000) // 10_000
    sign = "-" if micro_usd < 0 else ""
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"
