"""The costs table (``service_costs``) and the cost read model: imported billing entries,
the costs of a range (billing plus the configured rates), the per-module weights, and their
split (:mod:`attribution.cost`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from attribution.cost import (
    Allocation,
    CostEntry,
    CostRate,
    ModuleCost,
    WeightSample,
    breakpoints,
    cost_report,
    effective_costs,
    module_costs,
)
from collector.exporters.clickhouse.client import ClickHouseClient, utc_datetime

COST_COLUMNS = (
    "service",
    "environment",
    "period_start",
    "period_end",
    "source",
    "cost_micro_usd",
    "currency",
    "billing_rows",
    "imported_at",
    "version",
)


def _ceil_s(unix_nano: int) -> int:
    return -(-unix_nano // 1_000_000_000)


def _filters(service: str | None, environment: str | None, params: dict[str, Any]) -> str:
    where = ""
    if service:
        where += " AND service = {service:String}"
        params["service"] = service
    if environment is not None:
        where += " AND environment = {environment:String}"
        params["environment"] = environment
    return where


class CostTables(ClickHouseClient):
    """Writes ``service_costs``; reads costs and weights, and splits costs over modules."""

    cost_rates: tuple[CostRate, ...] = ()

    def configure_costs(self, rates: Sequence[CostRate]) -> None:
        """The configured rates (settings ``cost.rates``) applied where no billing entry is."""
        self.cost_rates = tuple(rates)

    def write_costs(
        self,
        entries: Sequence[CostEntry],
        *,
        source: str,
        imported_at_unix_nano: int,
        billing_rows: Sequence[int] | None = None,
    ) -> int:
        """Store billing entries under ``source`` (the file name).  The insert's deduplication
        token hashes the entries, so importing the same file again adds nothing; a changed file
        under the same source replaces the previous values of its keys (newer version).
        Returns the entries written."""
        if billing_rows is not None and len(billing_rows) != len(entries):
            raise ValueError("one billing row count per entry")
        counts = list(billing_rows) if billing_rows is not None else [1] * len(entries)
        digest = hashlib.sha256(source.encode())
        for e in entries:
            digest.update(
                repr((e.service, e.environment, e.start_unix_nano, e.end_unix_nano, e.micro_usd)).encode()
            )
        rows = [
            [
                e.service,
                e.environment,
                e.start_unix_nano,
                e.end_unix_nano,
                source,
                e.micro_usd,
                "USD",
                counts[i],
                utc_datetime(imported_at_unix_nano),
                imported_at_unix_nano,
            ]
            for i, e in enumerate(entries)
        ]
        self.insert_rows("service_costs", rows, COST_COLUMNS, token=f"costs:{digest.hexdigest()}")
        return len(rows)

    def load_costs(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> list[CostEntry]:
        """The stored billing entries whose period overlaps ``[start, end)`` (unclipped)."""
        params: dict[str, Any] = {"from_ns": start_unix_nano, "to_ns": end_unix_nano}
        rows = self.query(
            f"""
            SELECT service, environment, toUnixTimestamp64Nano(period_start), toUnixTimestamp64Nano(period_end),
                   cost_micro_usd, source
            FROM service_costs FINAL
            WHERE period_start < fromUnixTimestamp64Nano({{to_ns:Int64}}, 'UTC')
              AND period_end > fromUnixTimestamp64Nano({{from_ns:Int64}}, 'UTC'){_filters(service, environment, params)}
            ORDER BY service, environment, period_start, period_end, source
            """,
            params,
        )
        return [CostEntry(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows]

    def load_weights(
        self,
        breaks: Sequence[int],
        service: str | None = None,
        environment: str | None = None,
    ) -> tuple[list[WeightSample], dict[tuple[str, str, str], tuple[str, ...]]]:
        """Per module and segment ``[breaks[i], breaks[i+1])`` (windows by their start): CPU
        time, sampling-adjusted self time and wall time, adjusted spans; and each module's owners."""
        if len(breaks) < 2:
            return [], {}
        seconds = [_ceil_s(b) for b in breaks]
        params: dict[str, Any] = {"breaks": seconds, "from_s": seconds[0], "to_s": seconds[-1]}
        rows = self.query(
            f"""
            SELECT service, environment, module,
                   arrayFirstIndex(b -> b > toInt64(toUnixTimestamp(window_start)), {{breaks:Array(Int64)}}) AS seg,
                   sum(cpu_time_sum_ns), sum(ifNull(self_time_adjusted_sum_ns, 0)), sum(duration_adjusted_sum_ns),
                   sum(spans_adjusted_milli), groupUniqArrayArray(owners)
            FROM module_aggregates
            WHERE window_start >= toDateTime({{from_s:Int64}}, 'UTC')
              AND window_start < toDateTime({{to_s:Int64}}, 'UTC'){_filters(service, environment, params)}
            GROUP BY service, environment, module, seg
            ORDER BY service, environment, module, seg
            """,
            params,
        )
        samples = []
        owners: dict[tuple[str, str, str], set[str]] = {}
        for svc, env, module, seg, cpu, self_ns, dur, adj, own in rows:
            samples.append(
                WeightSample(
                    svc, env, module, breaks[int(seg) - 2], int(cpu), int(self_ns), int(dur), int(adj)
                )
            )
            owners.setdefault((svc, env, module), set()).update(own)
        return samples, {k: tuple(sorted(v)) for k, v in owners.items()}

    def allocate_costs(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> tuple[Allocation, list[WeightSample], dict[tuple[str, str, str], tuple[str, ...]]]:
        """The costs of ``[start, end)`` split over modules, with the weights and owners used."""
        rates = [
            r
            for r in self.cost_rates
            if (not service or r.service == service) and (environment is None or r.environment == environment)
        ]
        costs = effective_costs(
            self.load_costs(start_unix_nano, end_unix_nano, service, environment),
            rates,
            start_unix_nano,
            end_unix_nano,
        )
        samples, owners = self.load_weights(
            breakpoints(costs, start_unix_nano, end_unix_nano), service, environment
        )
        return module_costs(costs, samples), samples, owners

    def module_costs_micro_usd(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> dict[tuple[str, str, str], int]:
        """Micro-USD per (service, environment, module) over ``[start, end)``; idle capacity
        under the module ``(idle)``.  Sums exactly to the range's costs."""
        allocation, _, _ = self.allocate_costs(start_unix_nano, end_unix_nano, service, environment)
        return allocation.costs

    def query_costs(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> tuple[list[ModuleCost], Allocation]:
        """Per module: cost, cost share, traffic share, self-time share and their ratio."""
        allocation, samples, owners = self.allocate_costs(
            start_unix_nano, end_unix_nano, service, environment
        )
        return cost_report(allocation, samples, owners), allocation
