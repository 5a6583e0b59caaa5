"""The typed seams between prodloop's components (the OpenTelemetry Collector's model).

Receivers hand data to a :class:`TraceSink` (and logs to a :class:`LogSink`); pipelines read
from sources and write through the store ports; exporters implement them.  This module imports
only ``attribution`` and the standard library, and no ``Any`` crosses it (mypy's
``disallow_any_explicit`` holds here): rows are dataclasses, JSON documents are :data:`JsonObject`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeAlias, TypedDict, runtime_checkable

from attribution.aggregate import AggregateRow, NameRow
from attribution.attribute import FileSeen
from attribution.codeowners import owner_kind
from attribution.cost import Allocation, CostEntry, ModuleCost
from attribution.history import Commit, HeadFile
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules.findings import Finding, FindingKey
from attribution.suspects import Suspect

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"


# --------------------------------------------------------------------------------------
# Receivers -> a trace sink (direct pipeline or Kafka gateway), a log sink (direct pipeline)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of one trace request: spans accepted, spans rejected, why (first reason)."""

    spans: int
    rejected: int = 0
    message: str = ""


# The splits of a module row (`query modules --by`), beyond (service, environment, module).
SPLITS = ("commit", "owners", "deploy")


def parse_splits(value: str | None) -> tuple[str, ...]:
    """``commit,owners`` as the splits it names (in SPLITS' order); ValueError names a bad one."""
    names = {v.strip() for v in (value or "").split(",") if v.strip()}
    unknown = sorted(names - set(SPLITS))
    if unknown:
        raise ValueError(f"cannot split by {', '.join(unknown)}: choose from {', '.join(SPLITS)}")
    return tuple(s for s in SPLITS if s in names)


@dataclass(frozen=True, slots=True)
class ModulesQuery:
    """The filters of ``prodloop query modules`` (and of ``GET /api/v1/modules``)."""

    from_unix_nano: int | None = None
    to_unix_nano: int | None = None
    service: str | None = None
    environment: str | None = None
    attributed_only: bool = False
    limit: int = 0
    by: tuple[str, ...] = ()  # split rows by these of SPLITS; () rolls up per module
    min_spans: int = 0


class TraceSink(Protocol):
    """Where received data goes: :class:`collector.pipelines.direct.DirectPipeline` or
    :class:`collector.exporters.kafka.gateway.KafkaGateway`.  Methods are called from many threads.

    ``export_traces`` raises :class:`DecodeError` for an undecodable request,
    :class:`BusyError` or :class:`UnavailableError` when it cannot take it now.
    """

    def export_traces(self, payload: bytes, encoding: str) -> Accepted: ...

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int: ...

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int: ...

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]: ...

    def close(self, grace_s: float = 10.0) -> None: ...


@runtime_checkable
class LogSink(Protocol):
    """Where received OTLP logs go (``POST /v1/logs``, ``LogsService/Export``), for the
    exceptions they carry: the write-ahead log's or the Kafka gateway, or the direct pipeline.
    Called from many threads.

    ``accept_logs`` takes the raw ``LogsData`` / ``ExportLogsServiceRequest`` bytes in
    ``encoding`` (``otlp_proto`` or ``otlp_json``) and raises as :meth:`TraceSink.export_traces`
    does; ``Accepted.spans`` counts the log records taken.  A receiver whose sink is no
    ``LogSink`` serves no logs endpoint.
    """

    def accept_logs(self, body: bytes, encoding: str, *, received_unix_nano: int) -> Accepted: ...


# --------------------------------------------------------------------------------------
# Store ports (pipelines -> ClickHouse exporter)
# --------------------------------------------------------------------------------------


class AggregateStore(Protocol):
    """Where partial aggregates go (``module_aggregates``).  A write retried with the same
    ``dedup_token`` is harmless.  Failures raise :class:`SinkError` (retryable) or
    :class:`StoreRejectedError` (the rows themselves; see ``on_refused``)."""

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
        """Write ``rows`` (in inserts of ``chunk_rows``, tokens suffixed by chunk number); rows
        the store refuses go to ``on_refused`` with its message.  Returns the rows written."""
        ...

    def write_names(self, rows: Sequence[NameRow], window_ns: int, *, dedup_token: str) -> int:
        """Write unattributed span names (coverage) under ``dedup_token``; returns the rows written."""
        ...

    def write_files_seen(self, rows: Sequence[FileSeen], *, dedup_token: str) -> int:
        """Write the code files a batch's spans came from (``file_last_seen``, merged by max)
        under ``dedup_token``; returns the rows written."""
        ...


class StreamIntent(TypedDict):
    """A stream batch's write-ahead intent: what a replay of the batch must reproduce."""

    start_offset: int
    end_offset: int
    deploy_positions: dict[int, int]  # deploys topic partition -> offset read up to
    deploy_bound_ms: int
    token: str
    chunk_rows: int
    low_offset: int  # the trace buffer's oldest record after the batch: the offset committed
    rebuild: str  # the trace buffer's rebuild state after the batch (JSON), "" when none
    tick: bool  # a batch of no records that completed an idle partition's traces


class IntentLog(Protocol):
    """The stream's write-ahead intents (``stream_intents``), one per batch of a partition."""

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
        *,
        low_offset: int = 0,
        rebuild: str = "",
        tick: bool = False,
    ) -> None: ...

    def intent_at(self, group: str, topic: str, partition: int, start_offset: int) -> StreamIntent | None:
        """The recorded batch that starts at ``start_offset``, if one was written."""
        ...

    def intents_between(self, group: str, topic: str, partition: int, lo: int, hi: int) -> list[StreamIntent]:
        """The recorded batches holding records of ``[lo, hi)``, in offset order."""
        ...


class DeploySource(NamedTuple):
    """A stored deploy with its provenance in the deploys topic (-1, -1, 0 when none)."""

    event: DeployEvent
    partition: int
    offset: int
    timestamp_ms: int


class DeployStore(Protocol):
    """Deploy and incident events (``deploys``, ``incidents``)."""

    def write_deploys(
        self,
        events: Sequence[DeployEvent],
        received_at_unix_nano: int,
        sources: Sequence[tuple[int, int, int]] | None = None,
    ) -> int:
        """``sources``: (partition, offset, record timestamp ms) per event read from the topic."""
        ...

    def load_deploys(self) -> list[DeployEvent]: ...

    def load_deploy_sources(self) -> list[DeploySource]: ...

    def write_incidents(self, events: Sequence[IncidentEvent], received_at_unix_nano: int) -> int: ...


class ModulesReadModel(Protocol):
    """The read model over the aggregates: per-module summaries and merged per-window rows."""

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
    ) -> list[JsonObject]:
        """Per (service, environment, module) and the ``by`` of SPLITS, over windows starting in [from, to)."""
        ...

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]: ...


class IngestStore(AggregateStore, DeployStore, Protocol):
    """What file ingest writes and reads."""


class DirectStore(IngestStore, ModulesReadModel, Protocol):
    """What direct mode uses: ingest, and the query API's read model."""


class StreamStore(IngestStore, IntentLog, Protocol):
    """What the stream pipeline uses: ingest, and the write-ahead intents."""


# --------------------------------------------------------------------------------------
# Coverage (issue 12): unattributed span names, and how much of each service is attributed
# --------------------------------------------------------------------------------------


class NameStore(Protocol):
    """Where the names of unattributed spans go (``unattributed_names``).  A write retried with
    the same ``dedup_token`` is harmless.  Failures raise :class:`SinkError` or
    :class:`StoreRejectedError`."""

    def write_names(self, rows: Sequence[NameRow], window_ns: int, *, dedup_token: str) -> int:
        """Write ``rows``; returns the rows written."""
        ...

    def write_files_seen(self, rows: Sequence[FileSeen], *, dedup_token: str) -> int:
        """Write the code files spans came from (``file_last_seen``, merged by max, so replays
        are harmless); returns the rows written."""
        ...


class CoverageReadModel(Protocol):
    """Coverage per (service, environment), and the configured modules nothing matched."""

    def query_coverage(
        self,
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
        service: str | None = None,
        environment: str | None = None,
        top: int = 10,
    ) -> list[JsonObject]:
        """Spans, attributed spans and shares (of spans, of self time), unattributed spans by
        reason and the ``top`` unattributed span names, over windows starting in [from, to)."""
        ...

    def unmatched_modules(
        self,
        modules: Iterable[str],
        *,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[str]:
        """Those of ``modules`` with no attributed span over windows starting in [from, to)."""
        ...

    def has_spans(self, *, from_unix_nano: int | None = None, to_unix_nano: int | None = None) -> bool: ...

    def load_files_seen(self, repository: str | None = None) -> list[FileSeen]:
        """Per (service, environment, repository, path) the latest span start of the batch that
        last saw that file, for dead-code candidates; only ``repository``'s when given."""
        ...

    def file_path_share(self) -> dict[str, float]:
        """Per repository: the share of its attributed spans from services that send code file
        paths (an upper bound of the share that carry one)."""
        ...


class CoverageStore(NameStore, CoverageReadModel, Protocol):
    """What ``prodloop query coverage`` and ``prodloop check --store`` use, and the names' writes."""


# --------------------------------------------------------------------------------------
# Costs (issue 12): imported billing entries, and cost per module
# --------------------------------------------------------------------------------------


class CostStore(Protocol):
    """Service costs (``service_costs``) and their split over modules (attribution.cost).
    Importing the same entries under the same ``source`` again adds nothing."""

    def write_costs(
        self,
        entries: Sequence[CostEntry],
        *,
        source: str,
        imported_at_unix_nano: int,
        billing_rows: Sequence[int] | None = None,
    ) -> int:
        """Store billing entries of the file ``source``; returns the entries written."""
        ...

    def load_costs(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> list[CostEntry]:
        """Stored billing entries whose period overlaps [start, end)."""
        ...

    def module_costs_micro_usd(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> dict[tuple[str, str, str], int]:
        """Micro-USD per (service, environment, module) over [start, end), idle capacity under
        ``(idle)``; billing entries where imported, else the configured rates."""
        ...

    def query_costs(
        self,
        start_unix_nano: int,
        end_unix_nano: int,
        service: str | None = None,
        environment: str | None = None,
    ) -> tuple[list[ModuleCost], Allocation]:
        """Per module: cost, cost and traffic shares, their ratio; and the allocation itself."""
        ...


@dataclass(frozen=True, slots=True)
class ScanState:
    """The last completed scan of a repository."""

    repository: str
    generation: int  # a full scan starts a new one; incremental scans add to it
    head: str
    scanned_at_unix_nano: int
    commits: int  # commits stored in this generation


class HistoryStore(Protocol):
    """Git history (migration 0011): what scans read, and the commits and head files of each
    repository's latest generation.  Writing the same scan again adds nothing."""

    def last_scan(self, repository: str) -> ScanState | None: ...

    def history_repositories(self) -> list[str]: ...

    def write_history(
        self,
        repository: str,
        *,
        head: str,
        since: str,
        commits: Sequence[Commit],
        head_files: Sequence[HeadFile],
        scanned_at_unix_nano: int,
    ) -> ScanState:
        """Store one scan (incremental when ``since`` is the previous scan's head)."""
        ...

    def load_commits(self, repository: str | None = None) -> list[Commit]:
        """Commits with their files, oldest first."""
        ...

    def load_head_files(self, repository: str | None = None) -> list[HeadFile]: ...


# --------------------------------------------------------------------------------------
# Sources and dead letters (pipelines <- Kafka)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a topic, as a source hands it to a pipeline."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class TraceSource(Protocol):
    """The traces topic in a consumer group with manual commits
    (:class:`collector.exporters.kafka.consumer.TraceConsumer`).  Partitions are numbers of
    ``topic``; offsets are "next to read".  Failures raise :class:`BrokerError`."""

    topic: str

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]: ...

    def committed(self, partition: int) -> int | None: ...

    def committed_with_metadata(self, partition: int) -> tuple[int, str] | None: ...

    def beginning(self, partition: int) -> int: ...

    def seek(self, partition: int, offset: int) -> None: ...

    def commit(self, offsets: Mapping[int, int], metadata: Mapping[int, str] | None = None) -> None: ...

    def pause(self, partitions: Iterable[int]) -> None: ...

    def resume(self, partitions: Iterable[int]) -> None: ...

    def assignment(self) -> list[int]: ...

    def ends(self) -> dict[int, int]: ...

    def close(self) -> None: ...


class EventSource(Protocol):
    """A small topic read whole, outside any group (deploys, incidents:
    :class:`collector.exporters.kafka.consumer.EventReader`).  Failures raise :class:`BrokerError`."""

    topic: str

    def poll(self, timeout_ms: int = 0) -> list[Record]: ...

    def seek(self, positions: Mapping[int, int]) -> None: ...

    def positions(self) -> dict[int, int]: ...

    def at_end(self) -> bool: ...


class DeadLetterSink(Protocol):
    """Where records that cannot be processed go, with why
    (:class:`collector.exporters.kafka.producer.DeadLetters`).  ``flush`` returns once every
    record sent is durable; failures raise :class:`BrokerError`."""

    def send(self, record: Record, reason: str, error: str) -> None: ...

    def flush(self, timeout_s: float = 30) -> None: ...


# --------------------------------------------------------------------------------------
# Alerts: lease and ticket state, ticket sinks
# --------------------------------------------------------------------------------------


class TicketBody(Protocol):
    """A ticket's body, rendered as each sink needs it
    (:class:`collector.codec.ticket_document.Doc`)."""

    def markdown(self) -> str: ...

    def adf(self) -> JsonObject:
        """Atlassian Document Format (version 1)."""
        ...


@dataclass(frozen=True)
class TicketDraft:
    """A ticket to create: the engine's finding, rendered once for every sink."""

    fingerprint: str
    generation: int
    title: str
    doc: TicketBody
    labels: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()  # CODEOWNERS owners: users are assigned, teams mentioned
    assign_owners: bool = True
    severity: str = "medium"
    previous_url: str = ""
    data: Mapping[str, JsonValue] = field(default_factory=dict)  # the finding, for the webhook/file
    at_unix_nano: int = 0

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(o.lstrip("@") for o in self.owners if owner_kind(o) == "user")

    @property
    def teams(self) -> tuple[str, ...]:
        return tuple(o for o in self.owners if owner_kind(o) == "team")


@dataclass(frozen=True)
class Note:
    """A comment: fresh numbers, a recovery, or a closing remark."""

    kind: str  # "update" | "recovered" | "closing"
    doc: TicketBody
    fingerprint: str
    generation: int
    data: Mapping[str, JsonValue] = field(default_factory=dict)
    at_unix_nano: int = 0


@dataclass(frozen=True)
class TicketRef:
    """A created ticket: GitHub issue number, Jira issue key, or a synthetic id; its URL."""

    key: str
    url: str = ""


@dataclass(frozen=True)
class RemoteState:
    """A ticket's state at its sink: open, or closed (when, and whether by prodloop)."""

    open: bool
    closed_at_unix_nano: int | None = None
    closed_by_us: bool = False


class TicketSink(Protocol):
    """Where tickets go (``collector/exporters/tickets/``: GitHub, Jira, webhook, file).

    ``find`` lists by the fingerprint label, so an intent left by a crash resolves to the ticket
    an earlier attempt created.  Failures raise :class:`TicketError`.
    """

    name: str

    def find(self, fingerprint: str, generation: int) -> TicketRef | None: ...

    def create(self, draft: TicketDraft) -> TicketRef: ...

    def comment(self, ref: TicketRef, note: Note) -> None: ...

    def state(self, ref: TicketRef) -> RemoteState: ...

    def close_ticket(self, ref: TicketRef, note: Note) -> None: ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class TicketRecord:
    """The recorded state of one (fingerprint, sink, generation): a row of the ``tickets`` table."""

    fingerprint: str
    sink: str
    generation: int
    rule: str
    service: str
    environment: str
    module: str
    state: str  # intent | open | recovered | closed | void
    ticket_key: str = ""
    ticket_url: str = ""
    previous_url: str = ""
    opened_at: int = 0
    last_comment_at: int = 0
    recovered_at: int | None = None
    closed_at: int | None = None
    closed_by: str = ""
    summary: str = ""
    kind: str = ""  # the rule's kind (threshold, regression_after_deploy, ...)
    deploy_id: str = ""  # the deploy a regression_after_deploy finding blames

    @property
    def key(self) -> FindingKey:
        return FindingKey(self.rule, self.service, self.environment, self.module)

    @property
    def ref(self) -> TicketRef:
        return TicketRef(self.ticket_key, self.ticket_url)


@dataclass(frozen=True, slots=True)
class FindingSuspects:
    """The commits most likely behind a finding (attribution.suspects), from git history."""

    deploy_id: str
    repository_url: str  # a GitHub repository URL for commit and pull request links, or ""
    suspects: tuple[Suspect, ...]


SuspectSource = Callable[[Finding], FindingSuspects | None]
"""A finding's suspect commits, None without history (collector.app.longloop.StoreSuspects)."""


class AlertLease(Protocol):
    """The evaluation lease: of several replicas, one holds it until it expires
    (:class:`collector.exporters.clickhouse.alert_state.Lease`)."""

    def acquire(self, now_unix_nano: int) -> bool:
        """Take or renew the lease; False while another replica's unexpired lease stands."""
        ...

    def held(self) -> bool:
        """Still the latest term (no one took over since)?"""
        ...

    def release(self, now_unix_nano: int) -> None:
        """Hand over at once (on shutdown)."""
        ...


class AlertState(Protocol):
    """What the alert engine reads (aggregates, deploys, incidents, last-seen times) and records
    (the ``tickets`` table: intents and ticket states), in
    :class:`collector.exporters.clickhouse.alert_state.ClickHouseAlertState`.  Failures raise
    :class:`StoreError`."""

    def load_deploys(self) -> list[DeployEvent]: ...

    def load_rows(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        from_unix_nano: int | None = None,
        to_unix_nano: int | None = None,
    ) -> list[AggregateRow]:
        """Merged per-window aggregate rows (partial rows of one key summed)."""
        ...

    def load_incidents(self, since_unix_nano: int) -> list[IncidentEvent]:
        """Incidents started at or after ``since``, oldest first."""
        ...

    def last_seen(self, since_unix_nano: int) -> dict[tuple[str, str, str], int]:
        """(service, environment, module) -> end of its last attributed window since ``since``."""
        ...

    def data_since(self) -> int | None:
        """Start of the oldest stored window; None when nothing is stored."""
        ...

    def latest_tickets(self) -> dict[tuple[str, str], TicketRecord]:
        """Per (fingerprint, sink): the record of the highest generation."""
        ...

    def save_ticket(self, rec: TicketRecord, now_unix_nano: int) -> None:
        """Record ``rec`` as the latest state of its (fingerprint, sink, generation)."""
        ...
