"""The alert engine's state in ClickHouse: the evaluation lease, the ``tickets`` table, and the
reads its rules need beside the aggregates (incidents, last-seen times, the oldest window).

:class:`ClickHouseAlertState` implements :class:`collector.ports.AlertState` and
:class:`Lease` implements :class:`collector.ports.AlertLease`, over the store's public API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from collector.errors import ConfigError
from collector.ports import TicketRecord

NS = 1_000_000_000
_MS = 1_000_000


class StateStore(Protocol):
    """The public store methods used here: :class:`collector.exporters.clickhouse.store.ClickHouseStore`,
    or the service's ``SharedStore`` around it."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def insert_rows(
        self, table: str, rows: list[list[Any]], column_names: Sequence[str], *, token: str | None = None
    ) -> None: ...

    def load_deploys(self) -> list[DeployEvent]: ...

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]: ...


def _dt(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)


# -- the lease -------------------------------------------------------------------------------------

_LEASE_COLUMNS = ["name", "term", "holder", "acquired_at", "expires_at"]


class Lease:
    """A lease row in ClickHouse: of several replicas, one holds it until it expires.

    Every acquisition *and* renewal claims the next term with the insert deduplication
    token ``lease:<name>:<term>``.  ClickHouse keeps the first insert of a token and drops
    the rest, so when two replicas claim the same term exactly one row lands; each reads
    the term back and only the one named there holds the lease.  A replica never claims
    while another's unexpired lease stands.
    """

    def __init__(self, store: StateStore, holder: str, ttl_ns: int, name: str = "alerts") -> None:
        if ttl_ns <= 0:
            raise ConfigError("alerts.lease_ttl_seconds must be positive")
        self.store = store
        self.holder = holder
        self.ttl_ns = ttl_ns
        self.name = name
        self.term = 0

    def current(self) -> tuple[int, str, int] | None:
        """(term, holder, expires_at_unix_nano) of the latest term."""
        rows = self.store.query(
            "SELECT term, holder, toUnixTimestamp64Milli(expires_at) FROM alert_lease FINAL "
            "WHERE name = {n:String} ORDER BY term DESC LIMIT 1",
            {"n": self.name},
        )
        if not rows:
            return None
        return int(rows[0][0]), str(rows[0][1]), int(rows[0][2]) * _MS

    def _claim(self, term: int, acquired_at: int, expires_at: int) -> None:
        self.store.insert_rows(
            "alert_lease",
            [[self.name, term, self.holder, _dt(acquired_at), _dt(expires_at)]],
            _LEASE_COLUMNS,
            token=f"lease:{self.name}:{term}",
        )

    def acquire(self, now_unix_nano: int) -> bool:
        cur = self.current()
        if cur is not None and cur[1] != self.holder and cur[2] > now_unix_nano:
            self.term = 0
            return False
        term = (cur[0] if cur else 0) + 1
        self._claim(term, now_unix_nano, now_unix_nano + self.ttl_ns)
        rows = self.store.query(
            "SELECT holder FROM alert_lease FINAL WHERE name = {n:String} AND term = {t:UInt64}",
            {"n": self.name, "t": term},
        )
        won = bool(rows) and rows[0][0] == self.holder
        self.term = term if won else 0
        return won

    def held(self) -> bool:
        """Still the latest term (no one took over since)?"""
        cur = self.current()
        return self.term > 0 and cur is not None and cur[0] == self.term and cur[1] == self.holder

    def release(self, now_unix_nano: int) -> None:
        """Hand over at once (on shutdown): claim the next term as already expired."""
        if not self.held():
            return
        self._claim(self.term + 1, now_unix_nano, now_unix_nano)
        self.term = 0


# -- the tickets table -----------------------------------------------------------------------------

_TICKET_COLUMNS = [
    "fingerprint",
    "sink",
    "generation",
    "rule",
    "service",
    "environment",
    "module",
    "state",
    "ticket_key",
    "ticket_url",
    "previous_url",
    "opened_at",
    "last_comment_at",
    "recovered_at",
    "closed_at",
    "closed_by",
    "summary",
    "updated_at",
    "version",
    "kind",
    "deploy_id",
]


class TicketBook:
    """The ``tickets`` table: the latest state of each (fingerprint, sink, generation)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._seq = 0

    def latest(self) -> dict[tuple[str, str], TicketRecord]:
        """Per (fingerprint, sink): the record of the highest generation."""
        rows = self.store.query(
            "SELECT fingerprint, sink, generation, rule, service, environment, module, state, ticket_key, "
            "ticket_url, previous_url, toUnixTimestamp64Milli(opened_at), toUnixTimestamp64Milli(last_comment_at), "
            "toUnixTimestamp64Milli(recovered_at), toUnixTimestamp64Milli(closed_at), closed_by, summary, kind, deploy_id "
            "FROM tickets FINAL ORDER BY fingerprint, sink, generation"
        )
        out: dict[tuple[str, str], TicketRecord] = {}
        for r in rows:
            out[(r[0], r[1])] = TicketRecord(
                r[0],
                r[1],
                int(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                int(r[11]) * _MS,
                int(r[12]) * _MS,
                int(r[13]) * _MS if r[13] is not None else None,
                int(r[14]) * _MS if r[14] is not None else None,
                r[15],
                r[16],
                r[17],
                r[18],
            )
        return out

    def save(self, rec: TicketRecord, now_unix_nano: int) -> None:
        self._seq += 1
        self.store.insert_rows(
            "tickets",
            [
                [
                    rec.fingerprint,
                    rec.sink,
                    rec.generation,
                    rec.rule,
                    rec.service,
                    rec.environment,
                    rec.module,
                    rec.state,
                    rec.ticket_key,
                    rec.ticket_url,
                    rec.previous_url,
                    _dt(rec.opened_at),
                    _dt(rec.last_comment_at),
                    _dt(rec.recovered_at) if rec.recovered_at is not None else None,
                    _dt(rec.closed_at) if rec.closed_at is not None else None,
                    rec.closed_by,
                    rec.summary[:1000],
                    _dt(now_unix_nano),
                    # versions grow with time, and within one process with each save
                    (now_unix_nano // 1_000) * 1_000 + self._seq % 1_000,
                    rec.kind,
                    rec.deploy_id,
                ]
            ],
            _TICKET_COLUMNS,
        )


# -- the engine's state ----------------------------------------------------------------------------


class ClickHouseAlertState:
    """:class:`collector.ports.AlertState` over the ClickHouse store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.book = TicketBook(store)

    def load_deploys(self) -> list[DeployEvent]:
        return self.store.load_deploys()

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]:
        return self.store.load_rows(
            service=service, environment=environment, from_unix_nano=from_unix_nano, to_unix_nano=to_unix_nano
        )

    def load_incidents(self, since_unix_nano: int) -> list[IncidentEvent]:
        rows = self.store.query(
            "SELECT incident_id, services, toUnixTimestamp64Nano(started_at), severity, "
            "ifNull(toUnixTimestamp64Nano(resolved_at), 0), deploy_id, commit_sha, modules, postmortem_url, title "
            "FROM incidents FINAL WHERE started_at >= fromUnixTimestamp64Nano({since:Int64}) ORDER BY started_at",
            {"since": since_unix_nano},
        )
        return [
            IncidentEvent(r[0], tuple(r[1]), int(r[2]), r[3], int(r[4]), r[5], r[6], tuple(r[7]), r[8], r[9])
            for r in rows
        ]

    def last_seen(self, since_unix_nano: int) -> dict[tuple[str, str, str], int]:
        rows = self.store.query(
            "SELECT service, environment, module, "
            "toInt64(toUnixTimestamp(max(window_start))) + toInt64(any(window_seconds)) "
            "FROM module_aggregates WHERE window_start >= toDateTime({since:Int64}, 'UTC') "
            "AND unattributed_reason = '' GROUP BY service, environment, module",
            {"since": since_unix_nano // NS},
        )
        return {(r[0], r[1], r[2]): int(r[3]) * NS for r in rows}

    def data_since(self) -> int | None:
        rows = self.store.query(
            "SELECT toInt64(toUnixTimestamp(min(window_start))), count() FROM module_aggregates"
        )
        if not rows or not rows[0][1]:
            return None
        return int(rows[0][0]) * NS

    def latest_tickets(self) -> dict[tuple[str, str], TicketRecord]:
        return self.book.latest()

    def save_ticket(self, rec: TicketRecord, now_unix_nano: int) -> None:
        self.book.save(rec, now_unix_nano)
