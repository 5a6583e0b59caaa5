"""File ingestion: OTLP files + deploy events -> attribution -> aggregates -> ClickHouse.

Each trace file is one write, with an insert-deduplication token derived from the file's
content and the window length.  Ingesting the same file twice is therefore harmless:
ClickHouse drops the second insert (within its deduplication window of 10,000 inserts).
The flip side: re-ingesting a file after changing modules.yaml or CODEOWNERS is also a
no-op; re-attribute into a fresh store or database.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.repository import Repository
from collector.codec.events import decode_deploy_json, decode_incident_json
from collector.codec.framing import iter_json_lines, iter_length_prefixed, sniff_file_format
from collector.errors import ConfigError, DecodeError, EventError
from collector.ports import IngestStore
from collector.processing.batch import BatchProcessor, ProcessorConfig
from collector.processing.tokens import FileContent, dedup_token

MAX_MESSAGES_PER_REASON = 5


@dataclass
class IngestSummary:
    records: int = 0
    spans_read: int = 0
    spans_attributed: int = 0
    rejected_records: int = 0
    rejected_spans: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    unattributed_by_reason: Counter[str] = field(default_factory=Counter)
    overflow_spans: int = 0
    messages: list[str] = field(default_factory=list)
    rows_written: int = 0
    deploys_read: int = 0
    deploys_rejected: int = 0
    incidents_read: int = 0
    incidents_rejected: int = 0
    files: int = 0

    @property
    def attributed_ratio(self) -> float:
        return self.spans_attributed / self.spans_read if self.spans_read else 0.0

    @property
    def rejected(self) -> int:
        return self.rejected_records + self.rejected_spans + self.deploys_rejected + self.incidents_rejected

    def note(self, reason: str, message: str) -> None:
        self.rejected_by_reason[reason] += 1
        if self.rejected_by_reason[reason] <= MAX_MESSAGES_PER_REASON:
            self.messages.append(message)

    def to_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "records": self.records,
            "spans_read": self.spans_read,
            "spans_attributed": self.spans_attributed,
            "attributed_ratio": round(self.attributed_ratio, 6),
            "unattributed_by_reason": dict(sorted(self.unattributed_by_reason.items())),
            "rejected_records": self.rejected_records,
            "rejected_spans": self.rejected_spans,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "overflow_spans": self.overflow_spans,
            "deploys_read": self.deploys_read,
            "deploys_rejected": self.deploys_rejected,
            "incidents_read": self.incidents_read,
            "incidents_rejected": self.incidents_rejected,
            "rows_written": self.rows_written,
            "messages": self.messages,
        }


_DEFAULT_PROCESSING = ProcessorConfig()
E = TypeVar("E")


def _read_events(
    path: Path, kind: str, decode: Callable[[bytes], E], summary: IngestSummary
) -> tuple[list[E], int]:
    """Events, one JSON object per line, and the number of invalid lines (each noted in
    ``summary`` with its FILE:LINE)."""
    events: list[E] = []
    rejected = 0
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {kind} file: {exc.strerror}") from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                events.append(decode(line))
            except EventError as exc:
                rejected += 1
                summary.note(exc.reason, f"{path}:{lineno}: invalid {kind} event: {exc}")
    return events, rejected


def read_deploy_file(path: Path, summary: IngestSummary) -> list[DeployEvent]:
    """Deploy events, one JSON object per line (schemas/events/deploy.schema.json)."""
    events, rejected = _read_events(path, "deploy", decode_deploy_json, summary)
    summary.deploys_read += len(events)
    summary.deploys_rejected += rejected
    return events


def read_incident_file(path: Path, summary: IngestSummary) -> list[IncidentEvent]:
    """Incident events, one JSON object per line (schemas/events/incident.schema.json)."""
    events, rejected = _read_events(path, "incident", decode_incident_json, summary)
    summary.incidents_read += len(events)
    summary.incidents_rejected += rejected
    return events


def iter_records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(encoding, where, payload) for each record of an OTLP file (JSON lines or length-prefixed)."""
    fmt = sniff_file_format(path)
    reader = iter_json_lines if fmt == "otlp_json" else iter_length_prefixed
    for where, payload in reader(path):
        yield fmt, where, payload


class FileIngestor:
    """The batch processing of files: one batch per file; the store write is separate."""

    def __init__(
        self,
        repositories: list[Repository],
        deploys: Iterable[DeployEvent],
        processing: ProcessorConfig,
    ) -> None:
        self.processor = BatchProcessor(processing, repositories, deploys)
        self.decoder = self.processor.decoder
        self.window_ns = processing.window_ns
        self.summary = IngestSummary()

    def add_payload(self, encoding: str, where: str, payload: bytes) -> None:
        s = self.summary
        s.records += 1
        try:
            decoded = self.decoder.decode(payload, encoding, where)
        except DecodeError as exc:
            s.rejected_records += 1
            s.note(exc.reason, str(exc))
            return
        for rej in decoded.rejected:
            s.rejected_spans += 1
            s.note(rej.reason, rej.message)
        self.processor.add(decoded.spans)

    def add_file(self, path: Path, progress: Callable[[int], None] | None = None) -> str:
        """Ingest one file; returns a digest of its content for the dedup token."""
        self.summary.files += 1
        digest = hashlib.sha256()
        try:
            for encoding, where, payload in iter_records(path):
                digest.update(len(payload).to_bytes(8, "big"))
                digest.update(payload)
                self.add_payload(encoding, where, payload)
                if progress is not None:
                    progress(len(payload) + 4)
        except DecodeError as exc:  # a truncated frame: everything before it got through
            self.summary.rejected_records += 1
            self.summary.note(exc.reason, str(exc))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read trace file: {exc.strerror}") from None
        return digest.hexdigest()

    def drain(self) -> list[AggregateRow]:
        """The rows of the file added since the last drain: its traces complete at its end."""
        self.processor.complete_traces()
        rows, st = self.processor.drain()
        self.summary.spans_read += st.spans
        self.summary.spans_attributed += st.attributed
        self.summary.overflow_spans += st.overflow
        self.summary.unattributed_by_reason.update(st.unattributed_by_reason)
        return rows


def ingest(
    store: IngestStore,
    repositories: list[Repository],
    trace_files: list[Path],
    deploy_files: list[Path],
    *,
    now_unix_nano: int,
    processing: ProcessorConfig = _DEFAULT_PROCESSING,
    progress: Callable[[int], None] | None = None,
    incident_files: Sequence[Path] = (),
) -> IngestSummary:
    """The whole file ingest: deploys and incidents first (so the timeline is complete), then
    traces."""
    events = IngestSummary()
    deploys = [e for p in deploy_files for e in read_deploy_file(p, events)]
    if deploys:
        store.write_deploys(deploys, now_unix_nano)
    incidents = [e for p in incident_files for e in read_incident_file(p, events)]
    if incidents:
        store.write_incidents(incidents, now_unix_nano)
    window_ns = processing.window_ns
    ing = FileIngestor(repositories, store.load_deploys(), processing)
    s = ing.summary
    s.deploys_read, s.deploys_rejected = events.deploys_read, events.deploys_rejected
    s.incidents_read, s.incidents_rejected = events.incidents_read, events.incidents_rejected
    s.rejected_by_reason.update(events.rejected_by_reason)
    s.messages.extend(events.messages)
    for p in trace_files:
        digest = ing.add_file(p, progress)
        rows = ing.drain()

        def refused(row: AggregateRow, message: str, path: Path = p) -> None:
            s.note(
                "store_refused",
                f"{path}: the store refused an aggregate row of {row.spans} span(s): {message}",
            )

        token = dedup_token(FileContent(digest, window_ns))
        s.rows_written += store.write_aggregates(rows, window_ns, dedup_token=token, on_refused=refused)
        names = ing.processor.drain_names()
        if names:
            store.write_names(names, window_ns, dedup_token=f"{token}.names")
        files_seen = ing.processor.drain_files_seen()
        if files_seen:
            store.write_files_seen(files_seen, dedup_token=f"{token}.files")
    return s
