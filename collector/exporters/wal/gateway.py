"""The receivers' sink in direct mode with ``receiver.durability: wal``: a request is answered
only after an fsync covered its records.

Trace requests go to the traces log as ``otlp_proto`` (OTLP/JSON is transcoded first), one
record per request, and OTLP logs requests (exceptions recorded as log records) to the log
records' log the same way; deploy and incident events go to their logs as JSON, one record
each.  The
stream pipeline reads the logs as topics (:mod:`collector.exporters.wal.source`) with its
intents, dedup horizon and trace buffer, so a client's retry of a request whose answer was lost
is not counted twice.  A full log answers 429 / RESOURCE_EXHAUSTED with a retry delay.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from attribution.events import deploy_event_to_json
from attribution.model import DeployEvent, IncidentEvent
from collector.codec.transcode import (
    count_log_records,
    count_spans,
    otlp_json_to_proto,
    otlp_logs_json_to_proto,
    parse_export_request,
    parse_logs_request,
)
from collector.errors import BusyError, UnavailableError
from collector.exporters.wal.log import WalError, WalFullError, WriteAheadLog
from collector.ports import Accepted, JsonObject, ModulesQuery


class WalGateway:
    """Receivers' sink that appends to the write-ahead logs (see the module docstring)."""

    def __init__(
        self,
        traces: WriteAheadLog,
        log_records: WriteAheadLog,
        deploys: WriteAheadLog,
        incidents: WriteAheadLog,
        *,
        retry_after_s: int = 2,
    ) -> None:
        self.traces = traces
        self.log_records = log_records
        self.deploys = deploys
        self.incidents = incidents
        self.wals = (traces, log_records, deploys, incidents)
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._closing = False
        self.requests = 0
        self.requests_refused_busy = 0
        self.spans_accepted = 0

    def _append(self, wal: WriteAheadLog, payloads: Sequence[bytes], at_ms: int | None = None) -> None:
        with self._lock:
            if self._closing:
                raise UnavailableError("prodloop is shutting down", self.retry_after_s)
        try:
            wal.sync(wal.append(payloads, time.time_ns() // 1_000_000 if at_ms is None else at_ms))
        except WalFullError as exc:
            with self._lock:
                self.requests_refused_busy += 1
            raise BusyError(str(exc), self.retry_after_s) from exc
        except WalError as exc:
            raise UnavailableError(str(exc), self.retry_after_s) from exc

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        if encoding == "otlp_json":
            req = otlp_json_to_proto(payload)
            payload = req.SerializeToString()
        else:
            req = parse_export_request(payload)
        spans = count_spans(req)
        if spans:
            self._append(self.traces, [payload])
        with self._lock:
            self.requests += 1
            self.spans_accepted += spans
        return Accepted(spans)

    def accept_logs(self, body: bytes, encoding: str, *, received_unix_nano: int) -> Accepted:
        if encoding == "otlp_json":
            req = otlp_logs_json_to_proto(body)
            body = req.SerializeToString()
        else:
            req = parse_logs_request(body)
        records = count_log_records(req)
        if records:
            self._append(self.log_records, [body], received_unix_nano // 1_000_000)
        return Accepted(records)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int:
        docs = list(raw) if len(raw) == len(events) else [deploy_event_to_json(e) for e in events]
        if docs:
            self._append(self.deploys, [json.dumps(d, separators=(",", ":")).encode() for d in docs])
        return len(docs)

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int:
        if raw:
            self._append(self.incidents, [json.dumps(d, separators=(",", ":")).encode() for d in raw])
        return len(raw)

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]:
        raise UnavailableError("the service answers this from its store", self.retry_after_s)

    def close(self, grace_s: float = 10.0) -> None:
        with self._lock:
            self._closing = True
