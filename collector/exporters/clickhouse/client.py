"""The ClickHouse connection: DSNs, the client (clickhouse-connect, for chDB and servers), errors.

DSNs:

* ``chdb:///abs/path/to/dir`` - the embedded engine (chDB), the default, under ``./.prodloop/``;
* ``http(s)://user:pass@host:8123/database?option=value`` - a ClickHouse server; the
  options and percent-encoding are described in :func:`http_client_args`.

The SQL is the same for both.  Values are always bound as query parameters, never
formatted into SQL text.  Tables live in one database (``prodloop`` unless configured); the
client is opened on that database so migrations and queries use unqualified names.

chDB allows one store directory per process and one process per directory.  Opening a
directory another process holds raises :class:`StoreLockedError` with what to do.
Third-party errors are wrapped here, once: :class:`StoreError` (and :class:`StoreLockedError`)
for statements and queries, :class:`StoreRejectedError` or :class:`SinkError` for inserts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from inspect import signature
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver import exceptions as cc_exceptions
from clickhouse_connect.driver import options as _cc_options
from clickhouse_connect.driver.httpclient import HttpClient

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
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def default_dsn(base: Path | None = None) -> str:
    """The default store: the embedded engine under ``base`` (the working directory)."""
    return "chdb://" + str(((base or Path.cwd()) / DEFAULT_STORE_DIR).resolve())


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


def redact_dsn(dsn: str) -> str:
    """``dsn`` as it may be shown: its password (``user:PASSWORD@host``) replaced by ``***``.

    (A ``password`` query key is refused by :func:`http_client_args`.)"""
    parts = urlsplit(dsn)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return dsn
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _wrap(exc: Exception, what: str, dsn: str) -> StoreError:
    dsn = redact_dsn(dsn)
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


def dedup_settings(token: str) -> dict[str, Any]:
    """The settings of an insert under the deduplication ``token`` (a replay of it is dropped)."""
    return {"insert_deduplicate": 1, "insert_deduplication_token": token}


def utc_datetime(unix_nano: int) -> datetime:
    """A ``DateTime`` column value for a time in Unix nanoseconds."""
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


def _exists(client: Any, database: str) -> bool:
    rows = client.query("EXISTS DATABASE {db:Identifier}", parameters={"db": database}).result_rows
    return bool(rows and rows[0][0])


class ClickHouseClient:
    """A connection to prodloop's database: statements, queries and inserts, errors wrapped once.

    The table-specific parts (:mod:`.migrations`, :mod:`.aggregates`, :mod:`.state`) build on it;
    :class:`collector.exporters.clickhouse.store.ClickHouseStore` combines them."""

    def __init__(
        self,
        dsn: str,
        database: str = DEFAULT_DATABASE,
        *,
        connect_timeout: float = 10,
        password: str | None = None,
        create: bool = True,
    ) -> None:
        """``password``: for http(s) DSNs, when it is not in the DSN (e.g. from a mounted secret).
        Without ``create``, a missing store directory or database is an error (read commands)."""
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
        if self.embedded and not create and not Path(parts.path).is_dir():
            raise StoreError(f"no store at {parts.path}: the directory does not exist (nothing was created)")
        try:
            # The bootstrap client names no database: it may not exist yet.
            if self.embedded:
                Path(parts.path).mkdir(parents=True, exist_ok=True)
                bootstrap = clickhouse_connect.get_client(dsn=dsn)
            else:
                bootstrap = clickhouse_connect.get_client(**http_args)
            if create:
                bootstrap.command(
                    "CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": self.database}
                )
            elif not _exists(bootstrap, self.database):
                raise StoreError(
                    f"no database {self.database!r} in the store at {redact_dsn(dsn)} (nothing was created)"
                )
            if self.embedded:
                self.client: Any = clickhouse_connect.get_client(dsn=dsn, database=self.database)
            else:
                self.client = clickhouse_connect.get_client(**http_args, database=self.database)
        except StoreError:
            raise
        except Exception as exc:
            raise _wrap(exc, "opening the store", dsn) from exc

    @property
    def display_dsn(self) -> str:
        """The DSN as logs and messages show it, without its password."""
        return redact_dsn(self.dsn)

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

    def insert(
        self,
        table: str,
        rows: list[list[Any]],
        columns: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert ``rows`` with the ClickHouse ``settings``.  A refusal of the rows themselves
        raises :class:`StoreRejectedError`, any other failure :class:`SinkError`."""
        if not rows:
            return
        try:
            self.client.insert(table, rows, column_names=list(columns), settings=settings or {})
        except Exception as exc:
            if _refused(exc):
                raise StoreRejectedError(f"{self.database}.{table} refused the rows: {exc}") from exc
            raise SinkError(
                f"insert into {self.database}.{table} failed on {self.display_dsn}: {exc}"
            ) from exc

    def insert_rows(
        self, table: str, rows: list[list[Any]], column_names: Sequence[str], *, token: str | None = None
    ) -> None:
        """Insert ``rows`` into ``table``; with ``token``, under that insert-deduplication token
        (a replay of the same token is dropped).  For the state tables (alert_state.py)."""
        self.insert(table, rows, column_names, dedup_settings(token) if token else None)

    def insert_partials(self, table: str, rows: list[list[Any]], columns: Sequence[str], token: str) -> None:
        """Insert rows of partial aggregates into an AggregatingMergeTree ``table`` under the
        deduplication ``token``.  The block is not merged by key on insert
        (``optimize_on_insert``): a batch's rows have distinct keys already, and every query
        aggregates.  ``bench/store_insert.py``: 72 -> 38 ms CPU per 900-row insert on chDB."""
        self.insert(table, rows, columns, {**dedup_settings(token), "optimize_on_insert": 0})
