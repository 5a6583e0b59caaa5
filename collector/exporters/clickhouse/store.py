"""The ClickHouse adapter: one client path (clickhouse-connect) for chDB and servers.

DSNs:

* ``chdb:///abs/path/to/dir`` - the embedded engine (chDB), the default, under ``./.prodloop/``;
* ``http(s)://user:pass@host:8123/database?option=value`` - a ClickHouse server; the
  options and percent-encoding are described in :func:`http_client_args`.

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
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from inspect import signature
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver import exceptions as cc_exceptions
from clickhouse_connect.driver import options as _cc_options
from clickhouse_connect.driver.httpclient import HttpClient

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.sketch import GAMMA
from collector.errors import ConfigError, SinkError, StoreError, StoreLockedError, StoreRejectedError

# We insert lists of rows and read rows, never DataFrames or arrays.  Without this, the first
# insert checks its data against pandas.DataFrame and so imports pandas (installed as a chDB
# dependency): about 80 MB of RSS and a second of start-up, for nothing.
_cc_options.pd = None
_cc_options.pd_time_test = None
_cc_options.np = None
# clickhouse-connect logs a traceback for every value it cannot encode; prodloop raises that as
# StoreRejectedError (with the column) and isolates the row, so the log would only repeat it.
logging.getLogger("clickhouse_connect.driver.transform").setLevel(logging.CRITICAL)

DEFAULT_DATABASE = "prodloop"
DEFAULT_STORE_DIR = ".prodloop/store"


# the top-level schemas/, linked into the package as collector/_schemas (the wheel carries a copy)
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "_schemas"
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


# ClickHouse error codes that mean "these values cannot go in", the same way on every retry:
# CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME,
# TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
# TOO_LARGE_STRING_SIZE, SIZES_OF_ARRAYS_DONT_MATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
# DECIMAL_OVERFLOW.  Everything else (network, memory, too many parts, ...) is retryable.
_REFUSED_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 407})
_TOO_MANY_PARTS = 252


def _refused(exc: Exception) -> bool:
    """Did the store refuse the rows themselves (so that retrying them cannot succeed)?"""
    if isinstance(exc, cc_exceptions.DataError | TypeError | ValueError | OverflowError):
        return True  # the client could not encode a value for its column: nothing was sent
    if not isinstance(exc, cc_exceptions.DatabaseError) or isinstance(exc, cc_exceptions.OperationalError):
        return False
    text = str(exc)
    code = exc.code
    if code is None:
        m = re.search(r"\bCode:\s*(\d+)", text)
        code = int(m.group(1)) if m else None
    if code == _TOO_MANY_PARTS:
        # one insert spanning more partitions (days) than max_partitions_per_insert_block: smaller
        # inserts go in; "too many parts" from merges falling behind is load, and retryable
        return "partitions for a single INSERT block" in text or "partitions for single INSERT block" in text
    return code in _REFUSED_CODES


def _ts(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)


# HttpClient arguments a DSN's query may not set: the URL's parts give them, or they are objects.
_DSN_RESERVED = frozenset(
    {"self", "interface", "host", "port", "username", "password", "database"}
    | {"settings", "headers", "pool_mgr", "token_provider"}
)
_DSN_OPTIONS = frozenset(signature(HttpClient).parameters) - _DSN_RESERVED
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def http_client_args(dsn: str, password: str | None = None) -> dict[str, Any]:
    """``clickhouse_connect.get_client`` keyword arguments for an ``http(s)://`` DSN.

    Built from the parsed URL, never by editing the string: host (IPv6 without brackets),
    port (default 8123, or 8443 with TLS), percent-decoded user and password, and
    ``database`` when the path names one.  In the query, ``secure`` selects TLS,
    ``user``/``user_name`` the user, ``compression`` is ``compress``, ``ch_NAME`` the
    ClickHouse setting NAME; any other key must be a clickhouse-connect HTTP client option
    (``verify``, ``ca_cert``, ``connect_timeout``, ...).  ``password``, when given, is used
    instead of the DSN's.  Errors show the DSN without user, password or query.
    """
    parts = urlsplit(dsn)
    if "@" in parts.path + parts.query + parts.fragment:
        # A raw / ? or # in the user or password moved it past the host: show none of it.
        raise ConfigError(
            f"store DSN {parts.scheme}://...: percent-encode / ? # @ : in its user and password"
        )
    shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"store DSN {shown}: scheme must be http:// or https://")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"store DSN {shown}: the port must be a number within 1-65535")
    host = parts.hostname
    if not host:
        raise ConfigError(f"store DSN {shown}: no host")
    args: dict[str, Any] = {"host": host}
    settings: dict[str, str] = {}
    secure: bool | None = None
    username = unquote(parts.username) if parts.username else None
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in seen:
            raise ConfigError(f"store DSN {shown}: query parameter {key!r} is given twice")
        seen.add(key)
        if key == "secure":
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"store DSN {shown}: secure must be true or false")
            secure = value.lower() in _TRUE
        elif key in ("user", "user_name"):
            if username is not None:
                raise ConfigError(f"store DSN {shown}: the user is given twice")
            username = value
        elif key == "compression":
            args["compress"] = value
        elif key.startswith("ch_") and len(key) > 3:
            settings[key[3:]] = value
        elif key in _DSN_OPTIONS:
            args[key] = value
        elif key in _DSN_RESERVED:
            raise ConfigError(f"store DSN {shown}: {key!r} cannot be set in the query")
        else:
            raise ConfigError(
                f"store DSN {shown}: unknown query parameter {key!r}; "
                "ClickHouse settings are written ch_NAME=VALUE"
            )
    if parts.scheme == "https" and secure is False:
        raise ConfigError(f"store DSN {shown}: https:// with secure=false")
    tls = parts.scheme == "https" or bool(secure)
    args["interface"] = "https" if tls else "http"
    args["port"] = port if port is not None else (8443 if tls else 8123)
    if username is not None:
        args["username"] = username
    if password:
        args["password"] = password
    elif parts.password:
        args["password"] = unquote(parts.password)
    if settings:
        args["settings"] = settings
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if len(segments) > 1:
        raise ConfigError(f"store DSN {shown}: the path must be one database name")
    if segments:
        args["database"] = segments[0]
    return args


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
        http_args: dict[str, Any] = {}
        if not self.embedded:
            http_args = http_client_args(dsn, password=password)
            self.database = http_args.pop("database", database)
            http_args.setdefault("connect_timeout", connect_timeout)
        try:
            if self.embedded:
                Path(parts.path).mkdir(parents=True, exist_ok=True)
                bootstrap = clickhouse_connect.get_client(dsn=dsn)
                bootstrap.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database}
                )
                self.client: Any = clickhouse_connect.get_client(dsn=dsn, database=database)
            else:
                # The bootstrap client names no database: the DSN's may not exist yet.
                bootstrap = clickhouse_connect.get_client(**http_args)
                bootstrap.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": self.database}
                )
                self.client = clickhouse_connect.get_client(**http_args, database=self.database)
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
            if _refused(exc):
                raise StoreRejectedError(f"{self.database}.{table} refused the rows: {exc}") from exc
            raise SinkError(f"insert into {self.database}.{table} failed on {self.dsn}: {exc}") from exc

    def _insert_isolating(
        self, table: str, rows: list[list[Any]], columns: Sequence[str], token: str, first: int = 0
    ) -> tuple[int, list[tuple[int, str]]]:
        """Insert ``rows`` under the deduplication ``token``; if the store refuses them, bisect
        (halves get ``token.0`` and ``token.1``) down to the rows it refuses alone.

        Returns (rows written, [(index of a refused row, the store's message)]).  The split
        depends only on the rows, so a replay makes the same inserts with the same tokens.
        """
        try:
            self._insert(table, rows, columns, {"insert_deduplicate": 1, "insert_deduplication_token": token})
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

    def write_deploys(
        self,
        events: Sequence[DeployEvent],
        received_at_unix_nano: int,
        sources: Sequence[tuple[int, int, int]] | None = None,
    ) -> int:
        """Store deploy events.  ``sources``: (partition, offset, record timestamp ms) per event,
        for events read from the deploys topic.

        The row version is ``(status_at, status_id, received_at + i)`` packed into a UInt256
        (migration 0007), so ``FINAL`` keeps the newest status of a deploy_id, not the last
        written: a replayed older status never wins, on any replica or after a restart."""
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
                (e.status_at_unix_nano << 128) | (e.status_id << 64) | (received_at_unix_nano + i),
                srcs[i][0],
                srcs[i][1],
                srcs[i][2],
                e.status_at_unix_nano,
                e.status_id,
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
            "status_at",
            "status_id",
        ]
        self._insert("deploys", rows, cols)
        return len(rows)

    def load_deploy_sources(self) -> list[tuple[DeployEvent, int, int, int]]:
        """Deploys with their topic provenance (partition, offset, timestamp ms; -1 when none)."""
        rows = self.query(
            "SELECT deploy_id, service, environment, commit_sha, toUnixTimestamp64Nano(deployed_at), repository, "
            "previous_sha, status, url, source_partition, source_offset, source_timestamp_ms, "
            "toUnixTimestamp64Nano(status_at), status_id FROM deploys FINAL ORDER BY deployed_at, deploy_id"
        )
        return [
            (
                DeployEvent(
                    r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], r[7], r[8], int(r[12]), int(r[13])
                ),
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
            "previous_sha, status, url, toUnixTimestamp64Nano(status_at), status_id "
            "FROM deploys FINAL ORDER BY deployed_at, deploy_id"
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
                status_at_unix_nano=int(r[9]),
                status_id=int(r[10]),
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
