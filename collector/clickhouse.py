"""The ClickHouse adapter: one client path (clickhouse-connect) for chDB and servers.

DSNs:

* ``chdb:///abs/path/to/dir`` - the embedded engine (chDB), the default, under ``./.prodloop/``;
* ``http(s)://user:pass@host:8123/database`` - a ClickHouse server.

The SQL is the same for both.  Values are always bound as query parameters, never
formatted into SQL text.  Tables live in one database (``prodloop`` unless configured); the
client is opened on that database so migrations and queries use unqualified names.

chDB allows one store directory per process and one process per directory.  Opening a
directory another process holds raises :class:`StoreLockedError` with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver import options as _cc_options

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.sketch import GAMMA
from collector.errors import ConfigError, SinkError, StoreError, StoreLockedError

# We insert lists of rows and read rows, never DataFrames or arrays.  Without this, the first
# insert checks its data against pandas.DataFrame and so imports pandas (installed as a chDB
# dependency): about 80 MB of RSS and a second of start-up, for nothing.
_cc_options.pd = None
_cc_options.pd_time_test = None
_cc_options.np = None

DEFAULT_DATABASE = "prodloop"
DEFAULT_STORE_DIR = ".prodloop/store"


def _schemas_dir() -> Path:
    """``schemas/`` of the checkout this runs from, else the copy the wheel carries."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "schemas"
    return checkout if (checkout / "clickhouse").is_dir() else here / "_schemas"


SCHEMAS_DIR = _schemas_dir()
MIGRATIONS_DIR = SCHEMAS_DIR / "clickhouse"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

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
)


def default_dsn(base: Path | None = None) -> str:
    return "chdb://" + str(((base or Path.cwd()) / DEFAULT_STORE_DIR).resolve())


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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if not directory.is_dir():
        raise ConfigError(f"migrations directory {directory} does not exist")
    out = []
    for p in sorted(directory.iterdir()):
        if p.suffix != ".sql":
            continue
        m = _MIGRATION_FILE.match(p.name)
        if m is None:
            raise ConfigError(f"{p}: migration files are named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"{directory}: two migrations share a version number")
    return out


def _held_by_another_process(directory: Path) -> bool:
    """Is the chDB directory's ``status`` file flock-ed (by another server instance)?"""
    status = directory / "status"
    if not status.exists():
        return False
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _wrap(exc: Exception, what: str, dsn: str) -> StoreError:
    text = str(exc)
    parts = urlsplit(dsn)
    held = parts.scheme == "chdb" and "EmbeddedServer" in text and _held_by_another_process(Path(parts.path))
    if held or "Cannot lock file" in text or "already running" in text:
        return StoreLockedError(
            f"the embedded store {dsn} is held by another process (is `prodloop run` running?). "
            "Stop it, query it through the service with --url http://HOST:PORT, "
            "or use another --store directory."
        )
    return StoreError(f"{what} failed on {dsn}: {text.strip()[:2000]}")


def _ts(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)


class ClickHouseStore:
    """Reads and writes prodloop's tables."""

    def __init__(
        self,
        dsn: str,
        database: str = DEFAULT_DATABASE,
        *,
        connect_timeout: float = 10,
        password: str | None = None,
    ) -> None:
        """``password``: for http(s) DSNs, when it is not in the DSN (e.g. from a mounted secret)."""
        if not _IDENT.match(database):
            raise ConfigError(f"database name {database!r} must match {_IDENT.pattern}")
        self.dsn = dsn
        self.database = database
        parts = urlsplit(dsn)
        if parts.scheme not in ("chdb", "http", "https"):
            raise ConfigError(f"store DSN {dsn!r}: scheme must be chdb://, http:// or https://")
        self.embedded = parts.scheme == "chdb"
        try:
            if self.embedded:
                Path(parts.path).mkdir(parents=True, exist_ok=True)
                bootstrap = clickhouse_connect.get_client(dsn=dsn)
                bootstrap.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database}
                )
                self.client: Any = clickhouse_connect.get_client(dsn=dsn, database=database)
            else:
                db_in_dsn = parts.path.strip("/")
                if db_in_dsn and db_in_dsn != database:
                    self.database = db_in_dsn
                extra: dict[str, Any] = {"password": password} if password else {}
                bootstrap = clickhouse_connect.get_client(
                    dsn=dsn.replace(parts.path, "") if parts.path else dsn,
                    connect_timeout=connect_timeout,
                    **extra,
                )
                bootstrap.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": self.database}
                )
                self.client = clickhouse_connect.get_client(
                    dsn=dsn, database=self.database, connect_timeout=connect_timeout, **extra
                )
        except StoreError:
            raise
        except Exception as exc:
            raise _wrap(exc, "opening the store", dsn) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self.client.close()

    # -- low level -------------------------------------------------------------------------

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.command(sql, parameters=parameters)
        except Exception as exc:
            raise _wrap(exc, "command", self.dsn) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql, parameters=parameters).result_rows)
        except Exception as exc:
            raise _wrap(exc, "query", self.dsn) from exc

    # -- migrations ------------------------------------------------------------------------

    def apply_migrations(self, migrations: Sequence[Migration] | None = None) -> list[Migration]:
        """Apply pending migrations in order; idempotent.  Returns those applied now."""
        migrations = list(migrations) if migrations is not None else load_migrations()
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String, "
            "applied_at DateTime('UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        applied = {
            int(v): (str(n), str(c))
            for v, n, c in self.query("SELECT version, name, checksum FROM schema_migrations FINAL")
        }
        done = []
        for m in migrations:
            if m.version in applied:
                name, checksum = applied[m.version]
                if checksum != m.checksum:
                    raise ConfigError(
                        f"migration {m.version:04d}_{m.name}.sql changed after it was applied "
                        f"(as {name}); never edit an applied migration, add a new one"
                    )
                continue
            for stmt in m.statements():
                self.command(stmt)
            self._insert(
                "schema_migrations",
                [[m.version, m.name, m.checksum, datetime.now(tz=UTC)]],
                ["version", "name", "checksum", "applied_at"],
            )
            done.append(m)
        return done

    def applied_versions(self) -> list[int]:
        try:
            return [
                int(r[0]) for r in self.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
            ]
        except StoreError:
            return []

    def set_ttl(self, days: int | None) -> None:
        """Expire aggregates older than ``days`` (None: keep forever, the default)."""
        if days is None:
            try:
                self.command("ALTER TABLE module_aggregates REMOVE TTL")
            except StoreError as exc:
                if "TTL" not in str(exc):
                    raise
            return
        if not isinstance(days, int) or days < 1:
            raise ConfigError(f"ttl_days must be a positive integer, got {days!r}")
        self.command(
            "ALTER TABLE module_aggregates MODIFY TTL window_start + toIntervalDay({days:UInt32})",
            {"days": days},
        )

    # -- writes ----------------------------------------------------------------------------

    def _insert(
        self,
        table: str,
        rows: list[list[Any]],
        columns: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        if not rows:
            return
        try:
            self.client.insert(table, rows, column_names=list(columns), settings=settings or {})
        except Exception as exc:
            raise SinkError(f"insert into {self.database}.{table} failed on {self.dsn}: {exc}") from exc

    def write_aggregates(
        self,
        rows: Iterable[AggregateRow],
        window_ns: int,
        *,
        dedup_token: str,
        chunk_rows: int = 0,
        on_chunk: Callable[[int], None] | None = None,
    ) -> int:
        """Insert partial aggregates.  Retrying with the same ``dedup_token`` is harmless.

        With ``chunk_rows``, the rows (in their given, deterministic order) go in inserts of
        at most that many rows, each with the token suffixed by its chunk number, so a write
        interrupted between chunks is completed, not doubled, by a retry.
        """
        if window_ns % 1_000_000_000:
            raise ConfigError("the aggregation window must be a whole number of seconds")
        window_seconds = window_ns // 1_000_000_000
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
            ]
            for r in rows
        ]
        if not chunk_rows or len(data) <= chunk_rows:
            self._insert(
                "module_aggregates",
                data,
                AGGREGATE_COLUMNS,
                {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token},
            )
            if on_chunk is not None:
                on_chunk(0)
            return len(data)
        for i in range(0, len(data), chunk_rows):
            self._insert(
                "module_aggregates",
                data[i : i + chunk_rows],
                AGGREGATE_COLUMNS,
                {"insert_deduplicate": 1, "insert_deduplication_token": f"{dedup_token}#{i // chunk_rows}"},
            )
            if on_chunk is not None:
                on_chunk(i // chunk_rows)
        return len(data)

    def write_deploys(
        self,
        events: Sequence[DeployEvent],
        received_at_unix_nano: int,
        sources: Sequence[tuple[int, int, int]] | None = None,
    ) -> int:
        """Store deploy events.  ``sources``: (partition, offset, record timestamp ms) per event,
        for events read from the deploys topic."""
        if sources is not None and len(sources) != len(events):
            raise ValueError("one source per event")
        srcs = list(sources) if sources is not None else [(-1, -1, 0)] * len(events)
        rows = [
            [
                e.deploy_id,
                e.service,
                e.environment,
                e.commit_sha,
                e.previous_sha,
                e.deployed_at_unix_nano,  # DateTime64(9) takes integer nanoseconds exactly
                e.repository,
                e.status,
                e.url,
                _ts(received_at_unix_nano),
                received_at_unix_nano + i,
                srcs[i][0],
                srcs[i][1],
                srcs[i][2],
            ]
            for i, e in enumerate(events)
        ]
        cols = [
            "deploy_id",
            "service",
            "environment",
            "commit_sha",
            "previous_sha",
            "deployed_at",
            "repository",
            "status",
            "url",
            "received_at",
            "version",
            "source_partition",
            "source_offset",
            "source_timestamp_ms",
        ]
        self._insert("deploys", rows, cols)
        return len(rows)

    def load_deploy_sources(self) -> list[tuple[DeployEvent, int, int, int]]:
        """Deploys with their topic provenance (partition, offset, timestamp ms; -1 when none)."""
        rows = self.query(
            "SELECT deploy_id, service, environment, commit_sha, toUnixTimestamp64Nano(deployed_at), repository, "
            "previous_sha, status, url, source_partition, source_offset, source_timestamp_ms "
            "FROM deploys FINAL ORDER BY deployed_at, deploy_id"
        )
        return [
            (
                DeployEvent(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], r[7], r[8]),
                int(r[9]),
                int(r[10]),
                int(r[11]),
            )
            for r in rows
        ]

    # -- stream intents --------------------------------------------------------------------

    def write_intent(
        self,
        group: str,
        topic: str,
        partition: int,
        start_offset: int,
        end_offset: int,
        deploy_positions: dict[int, int],
        deploy_bound_ms: int,
        token: str,
        now_unix_nano: int,
        chunk_rows: int = 0,
    ) -> None:
        self._insert(
            "stream_intents",
            [
                [
                    group,
                    topic,
                    partition,
                    start_offset,
                    end_offset,
                    deploy_positions,
                    deploy_bound_ms,
                    chunk_rows,
                    token,
                    _ts(now_unix_nano),
                ]
            ],
            [
                "consumer_group",
                "topic",
                "partition",
                "start_offset",
                "end_offset",
                "deploy_positions",
                "deploy_bound_ms",
                "chunk_rows",
                "token",
                "created_at",
            ],
            {"insert_deduplicate": 1, "insert_deduplication_token": f"intent:{token}"},
        )

    def intent_at(self, group: str, topic: str, partition: int, start_offset: int) -> dict[str, Any] | None:
        """The recorded batch that starts at ``start_offset``, if one was written."""
        rows = self.query(
            "SELECT end_offset, deploy_positions, deploy_bound_ms, token, chunk_rows FROM stream_intents FINAL "
            "WHERE consumer_group = {g:String} AND topic = {t:String} AND partition = {p:UInt32} "
            "AND start_offset = {s:UInt64} ORDER BY created_at DESC LIMIT 1",
            {"g": group, "t": topic, "p": partition, "s": start_offset},
        )
        if not rows:
            return None
        end, positions, bound, token, chunk_rows = rows[0]
        return {
            "chunk_rows": int(chunk_rows),
            "end_offset": int(end),
            "deploy_positions": {int(k): int(v) for k, v in positions.items()},
            "deploy_bound_ms": int(bound),
            "token": str(token),
        }

    def load_deploys(self) -> list[DeployEvent]:
        rows = self.query(
            "SELECT deploy_id, service, environment, commit_sha, toUnixTimestamp64Nano(deployed_at), repository, "
            "previous_sha, status, url FROM deploys FINAL ORDER BY deployed_at, deploy_id"
        )
        return [
            DeployEvent(
                deploy_id=r[0],
                service=r[1],
                environment=r[2],
                commit_sha=r[3],
                deployed_at_unix_nano=int(r[4]),
                repository=r[5],
                previous_sha=r[6],
                status=r[7],
                url=r[8],
            )
            for r in rows
        ]

    def write_incidents(self, events: Sequence[IncidentEvent], received_at_unix_nano: int) -> int:
        rows = [
            [
                e.incident_id,
                e.title,
                list(e.services),
                "",
                e.started_at_unix_nano,
                e.resolved_at_unix_nano or None,
                e.severity,
                e.deploy_id,
                e.commit_sha,
                list(e.modules),
                e.postmortem_url,
                _ts(received_at_unix_nano),
                received_at_unix_nano + i,
            ]
            for i, e in enumerate(events)
        ]
        cols = [
            "incident_id",
            "title",
            "services",
            "environment",
            "started_at",
            "resolved_at",
            "severity",
            "deploy_id",
            "commit_sha",
            "modules",
            "postmortem_url",
            "received_at",
            "version",
        ]
        self._insert("incidents", rows, cols)
        return len(rows)

    # -- reads -----------------------------------------------------------------------------

    def query_modules(
        self,
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
        service: str | None = None,
        environment: str | None = None,
        attributed_only: bool = False,
        group_by_deploy: bool = False,
    ) -> list[dict[str, Any]]:
        """Per (service, environment, module, owners, commit_sha) over a time range.

        The range selects windows whose start lies in ``[from, to)``.
        """
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
        if attributed_only:
            where.append("unattributed_reason = ''")
        extra = ", deploy_id" if group_by_deploy else ""
        sql = f"""
            SELECT service, environment, module, owners, commit_sha{extra},
                   spans, spans_adjusted, errors, errors_adjusted, duration_sum_ns, duration_adjusted_sum_ns,
                   duration_min_ns, duration_max_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.5)} AS p50_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.95)} AS p95_ns,
                   {quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", 0.99)} AS p99_ns,
                   reasons, first_ns, last_ns
            FROM (
                SELECT service, environment, module, owners, commit_sha{extra},
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
                       toInt64(toUnixTimestamp(max(window_start)) + any(window_seconds)) * 1000000000 AS last_ns
                FROM module_aggregates
                WHERE {" AND ".join(where)}
                GROUP BY service, environment, module, owners, commit_sha{extra}
            )
            ORDER BY p95_ns DESC, service, environment, module, commit_sha
        """
        rows = self.query(sql, params)
        out = []
        for raw in rows:
            r = list(raw)
            deploy_id = r.pop(5) if group_by_deploy else None
            (
                svc,
                env,
                module,
                owners,
                commit,
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
            ) = r
            item: dict[str, Any] = {
                "service": svc,
                "environment": env,
                "module": module,
                "owners": list(owners),
                "commit_sha": commit,
                "spans": int(spans),
                "spans_adjusted": float(spans_adj),
                "errors": int(errors),
                "errors_adjusted": float(errors_adj),
                "error_rate": float(errors_adj) / float(spans_adj) if spans_adj else 0.0,
                "p50_ms": float(p50) / 1e6,
                "p95_ms": float(p95) / 1e6,
                "p99_ms": float(p99) / 1e6,
                "duration_sum_ms": int(dsum) / 1e6,
                "duration_adjusted_sum_ms": int(dsum_adj) / 1e6,
                "duration_min_ms": int(dmin) / 1e6,
                "duration_max_ms": int(dmax) / 1e6,
                "unattributed_reasons": sorted(reasons),
                "first_window_unix_nano": int(first_ns),
                "last_window_end_unix_nano": int(last_ns),
            }
            if deploy_id is not None:
                item["deploy_id"] = deploy_id
            out.append(item)
        return out

    def time_range(self) -> tuple[int, int] | None:
        rows = self.query(
            "SELECT toInt64(toUnixTimestamp(min(window_start))), toInt64(toUnixTimestamp(max(window_start))), count() "
            "FROM module_aggregates"
        )
        if not rows or not rows[0][2]:
            return None
        return int(rows[0][0]) * 1_000_000_000, int(rows[0][1]) * 1_000_000_000

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]:
        """Merged per-window rows (partial rows of one key summed), for analysis."""
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
                   sumMap(latency_bins)
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
            )
            for r in rows
        ]
