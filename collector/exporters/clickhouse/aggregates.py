"""The aggregates table: writing partial aggregates (chunks, tokens, bisection of refused rows)
and the read model over it (per-module summaries with sketch quantiles, merged per-window rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

from attribution.aggregate import AggregateRow
from attribution.sketch import GAMMA
from collector.errors import ConfigError, StoreRejectedError
from collector.exporters.clickhouse.client import ClickHouseClient
from collector.ports import SPLITS, JsonObject, JsonValue

AGGREGATE_COLUMNS = (
    "window_start",
    "window_seconds",
    "service",
    "environment",
    "repository",
    "module",
    "owners",
    "commit_sha",
    "deploy_id",
    "unattributed_reason",
    "spans",
    "spans_adjusted_milli",
    "errors",
    "errors_adjusted_milli",
    "duration_sum_ns",
    "duration_adjusted_sum_ns",
    "duration_min_ns",
    "duration_max_ns",
    "latency_bins",
    "self_spans",
    "self_spans_adjusted_milli",
    "self_time_sum_ns",
    "self_time_adjusted_sum_ns",
    "self_time_min_ns",
    "self_time_max_ns",
    "self_bins",
    "own_errors",
    "own_errors_adjusted_milli",
    "cpu_time_sum_ns",
    "exception_events",
    "exceptions",
    "exception_types",
)


def quantile_sql(bins: str, spans: str, dmin: str, dmax: str, q: float) -> str:
    """SQL for the rank-based sketch quantile (ns), the same formula as attribution.sketch.

    ``bins`` etc. are SQL expressions written by prodloop, never user input; ``q`` is a
    float literal from code.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    qs = repr(float(q))
    k = (
        f"toInt64(mapKeys(mapSort({bins}))[arrayFirstIndex(c -> c >= greatest(1, toUInt64(ceil({qs} * {spans}))), "
        f"arrayCumSum(mapValues(mapSort({bins}))))])"
    )
    g = "(1.01 / 0.99)"
    return (
        f"if({spans} = 0, nan, least(greatest(if({k} = 0, 0., 2. * pow({g}, {k} - 1) / ({g} + 1.)), "
        f"toFloat64({dmin})), toFloat64({dmax})))"
    )


assert abs(GAMMA - 1.01 / 0.99) < 1e-15, "sketch gamma and the SQL literal must agree"


def whole_seconds(window_ns: int) -> int:
    """The aggregation window in seconds, as the tables store it; it must be whole seconds."""
    if window_ns % 1_000_000_000:
        raise ConfigError("the aggregation window must be a whole number of seconds")
    return window_ns // 1_000_000_000


def window_range_where(
    from_unix_nano: int | None,
    to_unix_nano: int | None,
    service: str | None = None,
    environment: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of windows starting in ``[from, to)`` , and its parameters."""
    where = ["1"]
    params: dict[str, Any] = {}
    if from_unix_nano is not None:
        where.append("window_start >= toDateTime({from_s:Int64}, 'UTC')")
        params["from_s"] = from_unix_nano // 1_000_000_000
    if to_unix_nano is not None:
        where.append("window_start < toDateTime({to_s:Int64}, 'UTC')")
        params["to_s"] = -(-to_unix_nano // 1_000_000_000)
    if service:
        where.append("service = {service:String}")
        params["service"] = service
    if environment is not None:
        where.append("environment = {environment:String}")
        params["environment"] = environment
    return " AND ".join(where), params


class AggregateTables(ClickHouseClient):
    """Writes and reads ``module_aggregates``."""

    def _insert_isolating(
        self, table: str, rows: list[list[Any]], columns: Sequence[str], token: str, first: int = 0
    ) -> tuple[int, list[tuple[int, str]]]:
        """Insert ``rows`` under the deduplication ``token``; if the store refuses them, bisect
        (halves get ``token.0`` and ``token.1``) down to the rows it refuses alone.

        Returns (rows written, [(index of a refused row, the store's message)]).  The split
        depends only on the rows, so a replay makes the same inserts with the same tokens.
        """
        try:
            self.insert_partials(table, rows, columns, token)
        except StoreRejectedError as exc:
            if len(rows) <= 1:
                return 0, [(first, str(exc))]
            mid = len(rows) // 2
            a_written, a_refused = self._insert_isolating(table, rows[:mid], columns, f"{token}.0", first)
            b_written, b_refused = self._insert_isolating(
                table, rows[mid:], columns, f"{token}.1", first + mid
            )
            return a_written + b_written, a_refused + b_refused
        return len(rows), []

    def write_aggregates(
        self,
        rows: Sequence[AggregateRow],
        window_ns: int,
        *,
        dedup_token: str,
        chunk_rows: int = 0,
        on_chunk: Callable[[int], None] | None = None,
        on_refused: Callable[[AggregateRow, str], None] | None = None,
    ) -> int:
        """Insert partial aggregates.  Retrying with the same ``dedup_token`` is harmless.

        With ``chunk_rows``, the rows (in their given, deterministic order) go in inserts of
        at most that many rows, each with the token suffixed by its chunk number, so a write
        interrupted between chunks is completed, not doubled, by a retry.

        Rows the store refuses (:class:`StoreRejectedError`: retrying cannot help) are
        isolated by bisection and handed to ``on_refused`` with the store's message; the
        others are written.  Without ``on_refused``, a refusal raises once the rest is in.
        Returns the number of rows written.
        """
        window_seconds = whole_seconds(window_ns)
        data = [
            [
                r.window_start_unix_nano // 1_000_000_000,
                window_seconds,
                r.service,
                r.environment,
                r.repository,
                r.module,
                list(r.owners),
                r.commit_sha,
                r.deploy_id,
                r.unattributed_reason,
                r.spans,
                r.spans_adjusted_milli,
                r.errors,
                r.errors_adjusted_milli,
                r.duration_sum_ns,
                r.duration_adjusted_sum_ns,
                r.duration_min_ns,
                r.duration_max_ns,
                r.latency_bins,
                r.self_spans,
                r.self_spans_adjusted_milli,
                r.self_time_sum_ns,
                r.self_time_adjusted_sum_ns,
                r.self_time_min_ns,
                r.self_time_max_ns,
                r.self_bins,
                r.own_errors,
                r.own_errors_adjusted_milli,
                r.cpu_time_sum_ns,
                r.exception_events,
                r.exceptions,
                r.exception_types,
            ]
            for r in rows
        ]
        if not chunk_rows or len(data) <= chunk_rows:
            chunks = [(dedup_token, 0)] if data else []
            chunk_rows = len(data)
        else:
            chunks = [(f"{dedup_token}#{i // chunk_rows}", i) for i in range(0, len(data), chunk_rows)]
        written = 0
        refused: list[tuple[int, str]] = []
        for n, (token, first) in enumerate(chunks):
            w, r = self._insert_isolating(
                "module_aggregates", data[first : first + chunk_rows], AGGREGATE_COLUMNS, token, first
            )
            written += w
            refused += r
            if on_chunk is not None:
                on_chunk(n)
        if not chunks and on_chunk is not None:
            on_chunk(0)
        if refused:
            if on_refused is None:
                raise StoreRejectedError(
                    f"{len(refused)} of {len(data)} aggregate rows were refused (the rest is written); "
                    f"first: {refused[0][1]}"
                )
            for i, message in refused:
                on_refused(rows[i], message)
        return written

    def query_modules(
        self,
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
        service: str | None = None,
        environment: str | None = None,
        attributed_only: bool = False,
        by: Collection[str] = ("owners", "commit"),
        min_spans: int = 0,
        top_exception_types: int = 10,
    ) -> list[JsonObject]:
        """Per (service, environment, module) and the ``by`` of :data:`SPLITS` over a time range.

        The range selects windows whose start lies in ``[from, to)``.  A split not in ``by`` is
        rolled up: owners are the union, commit and deploy those of the latest deploy (by deploy
        time, then window); sums and sketches are merged before percentiles are computed.
        Groups of fewer than ``min_spans`` spans are left out.  Within a service and
        environment, rows come by sampling-adjusted self time, then adjusted errors, descending.

        Self time is NULL (None) for a group whose every row predates migration 0008;
        ``self_share`` is the group's share of its service and environment's (sampling-adjusted)
        self time over the same range, unattributed rows included.  ``top_exception_types``: the
        most thrown types (by count) kept per group.
        """
        # the service totals (range_where) ignore attributed_only
        range_where, params = window_range_where(from_unix_nano, to_unix_nano, service, environment)
        where = [range_where, "unattributed_reason = ''"] if attributed_only else [range_where]
        params["min_spans"] = max(0, min_spans)
        latest = "(d.deployed_at, window_start)"  # the latest deploy; no deploy reads as 1970
        keys = {
            "owners": ("owners", "arraySort(groupUniqArrayArray(owners))"),
            "commit": ("commit_sha", f"argMax(commit_sha, {latest})"),
            "deploy": ("deploy_id", f"argMax(deploy_id, {latest})"),
        }
        split = [keys[k][0] for k in SPLITS if k in by]
        picked = ", ".join(
            f"{keys[k][0] if k in by else keys[k][1]} AS k_{k}" for k in ("owners", "commit", "deploy")
        )
        sq = [quantile_sql("sbins", "self_spans", "self_min_ns", "self_max_ns", q) for q in (0.5, 0.95, 0.99)]
        sql = f"""
            SELECT service, environment, module, k_owners, k_commit, k_deploy,
                   spans, spans_adjusted, errors, errors_adjusted, duration_sum_ns, duration_adjusted_sum_ns,
                   duration_min_ns, duration_max_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.5)} AS p50_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.95)} AS p95_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.99)} AS p99_ns,
                   reasons, first_ns, last_ns,
                   self_spans, self_spans_adj_milli, self_sum_ns, self_adj_sum_ns,
                   {sq[0]} AS self_p50_ns, {sq[1]} AS self_p95_ns, {sq[2]} AS self_p99_ns,
                   t.svc_self_adj_ns, own_errors, own_errors_adj_milli, cpu_ns, exception_events, exceptions,
                   etypes
            FROM (
                SELECT service, environment, module, {picked},
                       sum(spans) AS spans,
                       sum(spans_adjusted_milli) / 1000 AS spans_adjusted,
                       sum(errors) AS errors,
                       sum(errors_adjusted_milli) / 1000 AS errors_adjusted,
                       sum(duration_sum_ns) AS duration_sum_ns,
                       sum(duration_adjusted_sum_ns) AS duration_adjusted_sum_ns,
                       min(duration_min_ns) AS duration_min_ns,
                       max(duration_max_ns) AS duration_max_ns,
                       sumMap(latency_bins) AS bins,
                       groupUniqArrayIf(unattributed_reason, unattributed_reason != '') AS reasons,
                       toInt64(toUnixTimestamp(min(window_start))) * 1000000000 AS first_ns,
                       toInt64(toUnixTimestamp(max(window_start)) + any(window_seconds)) * 1000000000 AS last_ns,
                       sum(self_spans) AS self_spans,
                       sum(self_spans_adjusted_milli) AS self_spans_adj_milli,
                       sum(self_time_sum_ns) AS self_sum_ns,
                       sum(self_time_adjusted_sum_ns) AS self_adj_sum_ns,
                       min(self_time_min_ns) AS self_min_ns,
                       max(self_time_max_ns) AS self_max_ns,
                       sumMap(self_bins) AS sbins,
                       sum(own_errors) AS own_errors,
                       sum(own_errors_adjusted_milli) AS own_errors_adj_milli,
                       sum(cpu_time_sum_ns) AS cpu_ns,
                       sum(exception_events) AS exception_events,
                       sum(exceptions) AS exceptions,
                       sumMap(exception_types) AS etypes
                FROM module_aggregates
                LEFT JOIN (
                    SELECT deploy_id, max(deployed_at) AS deployed_at FROM deploys FINAL GROUP BY deploy_id
                ) AS d USING (deploy_id)
                WHERE {" AND ".join(where)}
                GROUP BY {", ".join(["service", "environment", "module", *split])}
                HAVING spans >= {{min_spans:UInt64}}
            ) AS g
            LEFT JOIN (
                SELECT service, environment, sum(self_time_adjusted_sum_ns) AS svc_self_adj_ns
                FROM module_aggregates
                WHERE {range_where}
                GROUP BY service, environment
            ) AS t USING (service, environment)
            ORDER BY service, environment, ifNull(self_adj_sum_ns, 0) DESC, errors_adjusted DESC, p95_ns DESC,
                     module, k_commit, k_deploy
        """
        rows = self.query(sql, params)
        out = []
        for raw in rows:
            (
                svc,
                env,
                module,
                owners,
                commit,
                deploy_id,
                spans,
                spans_adj,
                errors,
                errors_adj,
                dsum,
                dsum_adj,
                dmin,
                dmax,
                p50,
                p95,
                p99,
                reasons,
                first_ns,
                last_ns,
                self_spans,
                self_spans_adj_milli,
                self_sum,
                self_adj_sum,
                self_p50,
                self_p95,
                self_p99,
                svc_self_adj,
                own_errors,
                own_errors_adj_milli,
                cpu_ns,
                exception_events,
                exceptions,
                etypes,
            ) = raw
            item: JsonObject = {
                "service": svc,
                "environment": env,
                "module": module,
                "owners": list(owners),
                "commit_sha": commit,
                "deploy_id": deploy_id,
                "spans": int(spans),
                "spans_adjusted": float(spans_adj),
                "errors": int(errors),
                "errors_adjusted": float(errors_adj),
                "error_rate": float(errors_adj) / float(spans_adj) if spans_adj else 0.0,
                "p50_ms": float(p50) / 1e6,
                "p95_ms": float(p95) / 1e6,
                "p99_ms": float(p99) / 1e6,
                "duration_sum_ms": int(dsum) / 1e6,
                "self_time_sum_ms": None if self_sum is None else int(self_sum) / 1e6,
                "duration_adjusted_sum_ms": int(dsum_adj) / 1e6,
                "duration_min_ms": int(dmin) / 1e6,
                "duration_max_ms": int(dmax) / 1e6,
                "unattributed_reasons": sorted(reasons),
                "first_window_unix_nano": int(first_ns),
                "last_window_end_unix_nano": int(last_ns),
                "self_spans": int(self_spans),
                "self_time_sum_ns": _int_or_none(self_sum),
                "self_time_adjusted_sum_ns": _int_or_none(self_adj_sum),
                "self_p50_ms": _ms_or_none(self_p50),
                "self_p95_ms": _ms_or_none(self_p95),
                "self_p99_ms": _ms_or_none(self_p99),
                "self_share": (
                    int(self_adj_sum) / int(svc_self_adj)
                    if self_adj_sum is not None and svc_self_adj
                    else None
                ),
                "own_errors": int(own_errors),
                "own_error_rate": (
                    int(own_errors_adj_milli) / int(self_spans_adj_milli) if self_spans_adj_milli else None
                ),
                "cpu_time_sum_ns": int(cpu_ns),
                "exception_events": int(exception_events),
                "exceptions": int(exceptions),
                "top_exception_types": _top_types(etypes, top_exception_types),
                "cost_usd": None,  # `prodloop query modules` fills it in from the costs
            }
            out.append(item)
        return out

    def aggregates_extent(
        self, service: str | None = None, environment: str | None = None
    ) -> tuple[int, int] | None:
        """The range the stored windows cover: the first one's start and the last one's end (unix
        ns), or None when no window is stored (for ``service`` and ``environment`` if given)."""
        where, params = window_range_where(None, None, service, environment)
        ((n, first, last),) = self.query(
            f"""
            SELECT count(), toInt64(toUnixTimestamp(min(window_start))),
                   toInt64(toUnixTimestamp(max(window_start)) + max(window_seconds))
            FROM module_aggregates WHERE {where}
            """,
            params,
        )
        return (int(first) * 1_000_000_000, int(last) * 1_000_000_000) if n else None

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]:
        """Merged per-window rows (partial rows of one key summed), for analysis.

        A NULL self-time sum (rows written before migration 0008) reads as 0: the row's
        ``self_spans`` is 0 too, so nothing counts it as measured.
        """
        where = ["1"]
        params: dict[str, Any] = {}
        if service is not None:
            where.append("service = {service:String}")
            params["service"] = service
        if environment is not None:
            where.append("environment = {environment:String}")
            params["environment"] = environment
        if from_unix_nano is not None:
            where.append("window_start >= toDateTime({from_s:Int64}, 'UTC')")
            params["from_s"] = from_unix_nano // 1_000_000_000
        if to_unix_nano is not None:
            where.append("window_start < toDateTime({to_s:Int64}, 'UTC')")
            params["to_s"] = -(-to_unix_nano // 1_000_000_000)
        rows = self.query(
            f"""
            SELECT toInt64(toUnixTimestamp(window_start)), service, environment, repository, module, owners,
                   commit_sha, deploy_id, unattributed_reason,
                   sum(spans), sum(spans_adjusted_milli), sum(errors), sum(errors_adjusted_milli),
                   sum(duration_sum_ns), sum(duration_adjusted_sum_ns), min(duration_min_ns), max(duration_max_ns),
                   sumMap(latency_bins),
                   sum(self_spans), sum(self_spans_adjusted_milli),
                   ifNull(sum(self_time_sum_ns), 0), ifNull(sum(self_time_adjusted_sum_ns), 0),
                   min(self_time_min_ns), max(self_time_max_ns), sumMap(self_bins),
                   sum(own_errors), sum(own_errors_adjusted_milli), sum(cpu_time_sum_ns),
                   sum(exception_events), sum(exceptions), sumMap(exception_types)
            FROM module_aggregates
            WHERE {" AND ".join(where)}
            GROUP BY window_start, service, environment, repository, module, owners, commit_sha, deploy_id,
                     unattributed_reason
            ORDER BY window_start, service, environment, module, commit_sha, deploy_id
            """,
            params,
        )
        return [
            AggregateRow(
                int(r[0]) * 1_000_000_000,
                r[1],
                r[2],
                r[3],
                r[4],
                tuple(r[5]),
                r[6],
                r[7],
                r[8],
                int(r[9]),
                int(r[10]),
                int(r[11]),
                int(r[12]),
                int(r[13]),
                int(r[14]),
                int(r[15]),
                int(r[16]),
                {int(k): int(v) for k, v in r[17].items()},
                self_spans=int(r[18]),
                self_spans_adjusted_milli=int(r[19]),
                self_time_sum_ns=int(r[20]),
                self_time_adjusted_sum_ns=int(r[21]),
                self_time_min_ns=int(r[22]),
                self_time_max_ns=int(r[23]),
                self_bins={int(k): int(v) for k, v in r[24].items()},
                own_errors=int(r[25]),
                own_errors_adjusted_milli=int(r[26]),
                cpu_time_sum_ns=int(r[27]),
                exception_events=int(r[28]),
                exceptions=int(r[29]),
                exception_types={str(k): int(v) for k, v in r[30].items()},
            )
            for r in rows
        ]


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _ms_or_none(ns: Any) -> float | None:
    """A quantile in ms; None for the NaN of no samples (JSON has no NaN)."""
    x = float(ns)
    return None if math.isnan(x) else x / 1e6


def _top_types(types: Any, n: int) -> list[JsonValue]:
    """The ``n`` most thrown exception types, ``[{"type", "count"}]``, by count then name."""
    ranked = sorted(((str(t), int(c)) for t, c in types.items() if int(c)), key=lambda tc: (-tc[1], tc[0]))
    return [{"type": t, "count": c} for t, c in ranked[: max(n, 0)]]
