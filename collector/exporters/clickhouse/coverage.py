"""Coverage: ``unattributed_names`` (writes), and the read model of how much of each service
is attributed and why not, over ``module_aggregates`` and ``unattributed_names``; and
``file_last_seen``: the code files spans came from, and when last (dead-code candidates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attribution.aggregate import NameRow
from attribution.attribute import FileSeen
from collector.exporters.clickhouse.aggregates import whole_seconds, window_range_where
from collector.exporters.clickhouse.client import ClickHouseClient
from collector.ports import JsonObject

NAME_COLUMNS = (
    "window_start",
    "window_seconds",
    "service",
    "environment",
    "unattributed_reason",
    "span_name",
    "spans",
)

FILE_SEEN_COLUMNS = ("service", "environment", "repository", "path", "last_seen")


def _share(part: int | None, whole: int | None) -> float | None:
    return None if not whole or part is None else part / whole


class CoverageTables(ClickHouseClient):
    """Writes ``unattributed_names`` and ``file_last_seen``; reads coverage per (service,
    environment) and the files last seen."""

    def write_names(self, rows: Sequence[NameRow], window_ns: int, *, dedup_token: str) -> int:
        """Insert unattributed span names.  Retrying with the same ``dedup_token`` is harmless.

        Returns the number of rows written.
        """
        window_seconds = whole_seconds(window_ns)
        data = [
            [
                r.window_start_unix_nano // 1_000_000_000,
                window_seconds,
                r.service,
                r.environment,
                r.unattributed_reason,
                r.span_name,
                r.spans,
            ]
            for r in rows
        ]
        self.insert_partials("unattributed_names", data, NAME_COLUMNS, dedup_token)
        return len(data)

    def write_files_seen(self, rows: Sequence[FileSeen], *, dedup_token: str) -> int:
        """Insert the code files a batch's spans came from.  Rows merge by max, so a replay or
        a duplicate is harmless; retrying with the same ``dedup_token`` writes nothing.

        Returns the number of rows written.
        """
        data = [[r.service, r.environment, r.repository, r.path, r.last_seen_unix_nano] for r in rows]
        self.insert_partials("file_last_seen", data, FILE_SEEN_COLUMNS, dedup_token)
        return len(data)

    def load_files_seen(self, repository: str | None = None) -> list[FileSeen]:
        """Every (service, environment, repository, path) spans came from, with the start of
        the latest span of the batch it was last seen in (see ``Attributor.drain_files_seen``); only
        ``repository``'s (its name or URL as attribution writes it) when given.  Sorted."""
        where, params = "1", {}
        if repository is not None:
            where, params = "repository = {repository:String}", {"repository": repository}
        rows = self.query(
            f"""
            SELECT service, environment, repository, path, toUnixTimestamp64Nano(max(last_seen))
            FROM file_last_seen
            WHERE {where}
            GROUP BY service, environment, repository, path
            ORDER BY service, environment, repository, path
            """,
            params,
        )
        return [FileSeen(str(s), str(e), str(r), str(p), int(t)) for s, e, r, p, t in rows]

    def file_path_share(self) -> dict[str, float]:
        """Per repository with attributed spans: the share of them from (service, environment)s
        that ever sent a code file path attributed to it, an upper bound of the share of its
        attributed spans that carry a path (which is not stored: ``module_aggregates`` keeps
        no paths).  0 for a repository none of whose services sends paths."""
        rows = self.query(
            """
            SELECT repository,
                   sumIf(spans, (service, environment, repository) IN (
                       SELECT DISTINCT service, environment, repository FROM file_last_seen)),
                   sum(spans)
            FROM module_aggregates
            WHERE unattributed_reason = ''
            GROUP BY repository
            ORDER BY repository
            """
        )
        return {str(r): (int(part) / int(whole) if whole else 0.0) for r, part, whole in rows}

    def query_coverage(
        self,
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
        service: str | None = None,
        environment: str | None = None,
        top: int = 10,
    ) -> list[JsonObject]:
        """Per (service, environment) over windows starting in ``[from, to)``: spans, attributed
        spans and share, attributed share of self time (None without self time), unattributed
        spans by reason, and the ``top`` unattributed span names (most spans first).

        Shares count raw spans (``unattributed_names`` holds raw counts too).
        """
        where, params = window_range_where(from_unix_nano, to_unix_nano, service, environment)
        totals = self.query(
            f"""
            SELECT service, environment,
                   sum(spans), sumIf(spans, unattributed_reason = ''),
                   sum(self_time_sum_ns), sumIf(self_time_sum_ns, unattributed_reason = '')
            FROM module_aggregates
            WHERE {where}
            GROUP BY service, environment
            ORDER BY service, environment
            """,
            params,
        )
        reasons: dict[tuple[str, str], dict[str, int]] = {}
        for svc, env, reason, n in self.query(
            f"""
            SELECT service, environment, unattributed_reason, sum(spans) AS n
            FROM module_aggregates
            WHERE {where} AND unattributed_reason != ''
            GROUP BY service, environment, unattributed_reason
            ORDER BY n DESC, unattributed_reason
            """,
            params,
        ):
            reasons.setdefault((svc, env), {})[reason] = int(n)
        names: dict[tuple[str, str], list[JsonObject]] = {}
        if top > 0:
            for svc, env, reason, name, n in self.query(
                f"""
                SELECT service, environment, unattributed_reason, span_name, sum(spans) AS n
                FROM unattributed_names
                WHERE {where}
                GROUP BY service, environment, unattributed_reason, span_name
                ORDER BY n DESC, span_name, unattributed_reason
                LIMIT {{top:UInt32}} BY service, environment
                """,
                {**params, "top": top},
            ):
                names.setdefault((svc, env), []).append(
                    {"span_name": name, "unattributed_reason": reason, "spans": int(n)}
                )
        out: list[JsonObject] = []
        for svc, env, spans, attributed, self_all, self_attributed in totals:
            spans, attributed = int(spans), int(attributed)
            self_all = None if self_all is None else int(self_all)
            self_attributed = None if self_attributed is None else int(self_attributed)
            by_reason: dict[str, int] = reasons.get((svc, env), {})
            out.append(
                {
                    "service": svc,
                    "environment": env,
                    "spans": spans,
                    "attributed_spans": attributed,
                    "unattributed_spans": spans - attributed,
                    "attributed_share": _share(attributed, spans),
                    "self_time_ns": self_all,
                    "attributed_self_time_ns": self_attributed,
                    "attributed_self_time_share": _share(self_attributed, self_all),
                    "unattributed_by_reason": dict(by_reason),
                    "top_unattributed": list(names.get((svc, env), [])),
                }
            )
        return out

    def unmatched_modules(
        self,
        modules: Iterable[str],
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[str]:
        """Those of ``modules`` (configured module names) with no attributed span in any window
        starting in ``[from, to)``, sorted."""
        wanted = sorted(set(modules))
        if not wanted:
            return []
        where, params = window_range_where(from_unix_nano, to_unix_nano)
        seen = {
            str(r[0])
            for r in self.query(
                f"""
                SELECT DISTINCT module FROM module_aggregates
                WHERE {where} AND unattributed_reason = '' AND spans > 0 AND has({{modules:Array(String)}}, module)
                """,
                {**params, "modules": wanted},
            )
        }
        return [m for m in wanted if m not in seen]

    def has_spans(self, *, from_unix_nano: int | None = None, to_unix_nano: int | None = None) -> bool:
        """Whether any span is stored in a window starting in ``[from, to)``."""
        where, params = window_range_where(from_unix_nano, to_unix_nano)
        rows = self.query(f"SELECT sum(spans) FROM module_aggregates WHERE {where}", params)
        return bool(rows and rows[0][0])
