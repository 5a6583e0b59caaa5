"""Gateway mode: received requests are produced to Kafka; ``prodloop run`` consumes them.

This is the durable path: a request is answered only after the broker acknowledged every
record made from it (``acks=all``).  A request the broker did not acknowledge within
``ack_timeout_s`` is answered 503 / UNAVAILABLE with a retry delay; the client retries.
Some of its records may have landed, so a retry can duplicate spans on the topic: the
consumer drops repeated span ids within its dedup horizon.

**Records.**  The traces topic gets ``otlp_proto``: a serialized
``ExportTraceServiceRequest``, as the Collector's Kafka exporter writes it.  OTLP/JSON
requests are transcoded to protobuf first (:func:`collector.codec.transcode.otlp_json_to_proto`).

**Keys: one record per trace.**  A request's spans are split by trace id, with their
resource and scope, and each trace becomes one record keyed by its trace id (32 lowercase
hex characters, like the Collector's ``partition_traces_by_id``).  All spans of a trace
that arrive in one request therefore land in one partition, in order, whatever other traces
shared the request.  (Keying a whole request by its first trace id would scatter every other
trace of the batch across partitions at random.)  A request that holds a single trace is
produced as received, byte for byte, when it was protobuf.  Spans whose trace id is not 16
bytes, or all zeroes, cannot be keyed: they are rejected and counted in the response's
partial success.

**Logs.**  OTLP logs requests (``/v1/logs``, ``LogsService/Export``) go to the logs topic as
``otlp_proto`` ``ExportLogsServiceRequest`` records, split the same way: one record per trace
id, keyed by it, and one unkeyed record for the log records without a trace id (the producer
spreads those over the partitions).  The consumer takes the exceptions they carry.  Log
records have no span id: those of a retried request are not deduplicated.

**Events.**  Deploy and incident events (validated against their schemas first) go to the
deploys and incidents topics, keyed by ``deploy_id`` / ``incident_id``, as JSON.

**Overload.**  At most ``max_inflight_bytes`` of requests may await broker acks; past it
requests get 429 / RESOURCE_EXHAUSTED with a retry delay.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from attribution.events import deploy_event_to_json
from attribution.model import DeployEvent, IncidentEvent
from collector.codec.transcode import (
    count_log_records,
    count_spans,
    otlp_json_to_proto,
    otlp_logs_json_to_proto,
    parse_export_request,
    parse_logs_request,
    split_by_trace,
    split_logs_by_trace,
)
from collector.errors import BrokerError, BusyError, UnavailableError
from collector.ports import Accepted, JsonObject, ModulesQuery


class AckFuture(Protocol):
    """A send's outcome: ``get`` returns once the broker acknowledged, or raises why not."""

    def get(self, timeout: float | None = None) -> Any: ...


class Producer(Protocol):
    """The seam to Kafka: ``send`` returns a future that resolves once the broker acked."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> AckFuture: ...

    def close(self, timeout_s: float) -> None: ...


class KafkaGateway:
    """Receivers' sink in gateway mode (see the module docstring)."""

    def __init__(
        self,
        producer: Producer,
        *,
        traces_topic: str,
        logs_topic: str,
        deploys_topic: str,
        incidents_topic: str,
        max_inflight_bytes: int = 64 * 1024 * 1024,
        ack_timeout_s: float = 10.0,
        retry_after_s: int = 2,
    ) -> None:
        self.producer = producer
        self.traces_topic = traces_topic
        self.logs_topic = logs_topic
        self.deploys_topic = deploys_topic
        self.incidents_topic = incidents_topic
        self.max_inflight_bytes = max_inflight_bytes
        self.ack_timeout_s = ack_timeout_s
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._inflight = 0
        self._closing = False
        self.records_produced = 0

    def _admit(self, size: int) -> None:
        with self._lock:
            if self._closing:
                raise UnavailableError("prodloop is shutting down", self.retry_after_s)
            if self._inflight and self._inflight + size > self.max_inflight_bytes:
                raise BusyError(
                    f"prodloop is overloaded: {self._inflight} bytes are waiting for Kafka acks "
                    f"(gateway_max_inflight_bytes={self.max_inflight_bytes})",
                    self.retry_after_s,
                )
            self._inflight += size

    def _release(self, size: int) -> None:
        with self._lock:
            self._inflight -= size

    def _produce(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> list[str]:
        """Send and wait for every ack.  Returns per-record errors ("" when acked) for records
        the broker refused for good; raises UnavailableError when it may be transient."""
        deadline = time.monotonic() + self.ack_timeout_s
        try:
            futures = [self.producer.send(topic, key, value) for key, value in records]
        except BrokerError as exc:
            raise UnavailableError(f"Kafka is unavailable: {exc}", self.retry_after_s) from exc
        errors: list[str] = []
        for fut in futures:
            try:
                fut.get(timeout=max(0.0, deadline - time.monotonic()))
                errors.append("")
            except Exception as exc:
                if _retriable(exc):
                    raise UnavailableError(
                        f"Kafka did not acknowledge within {self.ack_timeout_s:g}s: {type(exc).__name__}: {exc}",
                        self.retry_after_s,
                    ) from exc
                errors.append(f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.records_produced += sum(1 for e in errors if not e)
        return errors

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        size = len(payload)
        req = otlp_json_to_proto(payload) if encoding == "otlp_json" else parse_export_request(payload)
        traces, rejected, message = split_by_trace(req)
        if not traces:
            return Accepted(0, rejected, message)
        if len(traces) == 1 and not rejected and encoding == "otlp_proto":
            ((tid, single),) = traces.items()
            records = [(tid.hex().encode(), payload)]
            counts = [count_spans(single)]
        else:
            records = [(tid.hex().encode(), r.SerializeToString()) for tid, r in traces.items()]
            counts = [count_spans(r) for r in traces.values()]
        self._admit(size)
        try:
            errors = self._produce(self.traces_topic, records)
        finally:
            self._release(size)
        accepted = 0
        for n, err in zip(counts, errors, strict=True):
            if err:
                rejected += n
                message = message or f"Kafka refused a trace's record: {err}"
            else:
                accepted += n
        return Accepted(accepted, rejected, message)

    def accept_logs(self, body: bytes, encoding: str, *, received_unix_nano: int) -> Accepted:
        """Produce a logs request to the logs topic (see the module docstring); answered once
        the broker acknowledged every record of it."""
        req = otlp_logs_json_to_proto(body) if encoding == "otlp_json" else parse_logs_request(body)
        groups = split_logs_by_trace(req)
        if not groups:
            return Accepted(0, 0, "")
        records: list[tuple[bytes | None, bytes]]
        if len(groups) == 1 and encoding == "otlp_proto":
            ((tid, single),) = groups.items()
            records = [(tid.hex().encode() or None, body)]
            counts = [count_log_records(single)]
        else:
            records = [(tid.hex().encode() or None, r.SerializeToString()) for tid, r in groups.items()]
            counts = [count_log_records(r) for r in groups.values()]
        size = len(body)
        self._admit(size)
        try:
            errors = self._produce(self.logs_topic, records)
        finally:
            self._release(size)
        accepted = rejected = 0
        message = ""
        for n, err in zip(counts, errors, strict=True):
            if err:
                rejected += n
                message = message or f"Kafka refused a record of log records: {err}"
            else:
                accepted += n
        return Accepted(accepted, rejected, message)

    def _events(self, topic: str, keyed: list[tuple[bytes, bytes]]) -> int:
        if not keyed:
            return 0
        size = sum(len(v) for _, v in keyed)
        self._admit(size)
        try:
            errors = self._produce(topic, keyed)
        finally:
            self._release(size)
        failed = [e for e in errors if e]
        if failed:
            raise UnavailableError(f"Kafka refused {len(failed)} event(s): {failed[0]}", self.retry_after_s)
        return len(keyed)

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int:
        docs = list(raw) if len(raw) == len(events) else [deploy_event_to_json(e) for e in events]
        return self._events(
            self.deploys_topic,
            [
                (e.deploy_id.encode(), json.dumps(d, separators=(",", ":")).encode())
                for e, d in zip(events, docs, strict=True)
            ],
        )

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int:
        return self._events(
            self.incidents_topic,
            [
                (e.incident_id.encode(), json.dumps(d, separators=(",", ":")).encode())
                for e, d in zip(events, raw, strict=True)
            ],
        )

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]:
        raise UnavailableError(
            "this gateway holds no store: query the store with `prodloop query modules --store DSN`, "
            "or the service that consumes the traces topic",
            self.retry_after_s,
        )

    def close(self, grace_s: float = 10.0) -> None:
        with self._lock:
            self._closing = True
        self.producer.close(grace_s)


def _retriable(exc: Exception) -> bool:
    retriable = getattr(exc, "retriable", None)
    if retriable is None:  # timeouts and unknown failures: let the client retry
        return True
    return bool(retriable)
