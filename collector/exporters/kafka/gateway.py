"""Gateway mode: received requests are produced to Kafka; ``prodloop run`` consumes them.

This is the durable path: a request is answered only after the broker acknowledged every
record made from it (``acks=all``).  A request the broker did not acknowledge within
``ack_timeout_s`` is answered 503 / UNAVAILABLE with a retry delay; the client retries.
Some of its records may have landed, so a retry can duplicate spans on the topic: the
consumer drops repeated span ids within its dedup horizon.

**Records.**  The traces topic gets ``otlp_proto``: a serialized
``ExportTraceServiceRequest``, as the Collector's Kafka exporter writes it.  OTLP/JSON
requests are transcoded to protobuf first (:func:`otlp_json_to_proto`).

**Keys: one record per trace.**  A request's spans are split by trace id, with their
resource and scope, and each trace becomes one record keyed by its trace id (32 lowercase
hex characters, like the Collector's ``partition_traces_by_id``).  All spans of a trace
that arrive in one request therefore land in one partition, in order, whatever other traces
shared the request.  (Keying a whole request by its first trace id would scatter every other
trace of the batch across partitions at random.)  A request that holds a single trace is
produced as received, byte for byte, when it was protobuf.  Spans whose trace id is not 16
bytes, or all zeroes, cannot be keyed: they are rejected and counted in the response's
partial success.

**Events.**  Deploy and incident events (validated against their schemas first) go to the
deploys and incidents topics, keyed by ``deploy_id`` / ``incident_id``, as JSON.

**Overload.**  At most ``max_inflight_bytes`` of requests may await broker acks; past it
requests get 429 / RESOURCE_EXHAUSTED with a retry delay.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from attribution.events import deploy_event_to_json
from attribution.model import DeployEvent, IncidentEvent
from collector.codec.otlp import MAX_NESTING_DEPTH, load_json
from collector.errors import BrokerError, BusyError, DecodeError, UnavailableError
from collector.ports import Accepted, ModulesQuery

log = logging.getLogger("prodloop.gateway")

_ExportRequest = trace_service_pb2.ExportTraceServiceRequest
_ZERO_TRACE_ID = bytes(16)
_ID_FIELDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


class AckFuture(Protocol):
    def get(self, timeout: float | None = None) -> Any: ...


class Producer(Protocol):
    """The seam to Kafka: ``send`` returns a future that resolves once the broker acked."""

    def send(self, topic: str, key: bytes, value: bytes) -> AckFuture: ...

    def close(self, timeout_s: float) -> None: ...


# --------------------------------------------------------------------------------------
# OTLP/JSON -> protobuf, and splitting by trace
# --------------------------------------------------------------------------------------


def _hex_ids_to_base64(obj: dict[str, Any], where: str) -> None:
    """OTLP/JSON spells ids in hex; the protobuf JSON mapping wants base64."""
    for camel, snake in _ID_FIELDS:
        for key in (camel, snake):
            v = obj.get(key)
            if v is None or v == "":
                continue
            if not isinstance(v, str):
                raise DecodeError(f"{where}.{camel} must be a hex string, got {type(v).__name__}")
            try:
                obj[key] = base64.b64encode(bytes.fromhex(v)).decode()
            except ValueError:
                raise DecodeError(f"{where}.{camel} is not hex: {v[:80]!r}") from None


def _list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    v = obj.get(camel, obj.get(snake))
    if v is None:
        return []
    if not isinstance(v, list):
        raise DecodeError(f"{where}.{camel} must be a list")
    return v


def otlp_json_to_proto(data: bytes) -> Any:
    """An OTLP/JSON trace request -> ``ExportTraceServiceRequest`` (raises DecodeError)."""
    doc = load_json(data)
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}")
    for ri, rs in enumerate(_list(doc, "resourceSpans", "resource_spans", "")):
        if not isinstance(rs, dict):
            raise DecodeError(f"resourceSpans[{ri}] must be an object")
        for si, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", f"resourceSpans[{ri}]")):
            if not isinstance(ss, dict):
                raise DecodeError(f"resourceSpans[{ri}].scopeSpans[{si}] must be an object")
            for pi, sp in enumerate(_list(ss, "spans", "spans", f"resourceSpans[{ri}].scopeSpans[{si}]")):
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                if not isinstance(sp, dict):
                    raise DecodeError(f"{where} must be an object")
                _hex_ids_to_base64(sp, where)
                for li, link in enumerate(_list(sp, "links", "links", where)):
                    if isinstance(link, dict):
                        _hex_ids_to_base64(link, f"{where}.links[{li}]")
    msg = _ExportRequest()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True, max_recursion_depth=MAX_NESTING_DEPTH)
    except json_format.ParseError as exc:
        if "recursion" in str(exc).lower():
            raise DecodeError(f"the request nests too deeply: {exc}", reason="too_deep") from exc
        raise DecodeError(f"not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    except RecursionError:
        raise DecodeError(
            f"the request nests too deeply: OTLP allows at most {MAX_NESTING_DEPTH} levels of nesting",
            reason="too_deep",
        ) from None
    return msg


def split_by_trace(req: Any) -> tuple[dict[bytes, Any], int, str]:
    """Split a request into one request per trace id, keeping each span's resource and scope.

    Returns ``(trace_id -> request, rejected_spans, first rejection message)``.
    """
    out: dict[bytes, Any] = {}
    rs_map: dict[tuple[bytes, int], Any] = {}
    ss_map: dict[tuple[bytes, int, int], Any] = {}
    rejected = 0
    message = ""
    for ri, rs in enumerate(req.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            for pi, sp in enumerate(ss.spans):
                tid = sp.trace_id
                if len(tid) != 16 or tid == _ZERO_TRACE_ID:
                    rejected += 1
                    if not message:
                        what = "all zeroes" if tid == _ZERO_TRACE_ID else f"{len(tid)} bytes"
                        message = (
                            f"resource_spans[{ri}].scope_spans[{si}].spans[{pi}]: "
                            f"trace_id must be 16 bytes and not all zeroes, got {what}"
                        )
                    continue
                nss = ss_map.get((tid, ri, si))
                if nss is None:
                    nrs = rs_map.get((tid, ri))
                    if nrs is None:
                        r = out.get(tid)
                        if r is None:
                            r = out[tid] = _ExportRequest()
                        nrs = r.resource_spans.add()
                        if rs.HasField("resource"):
                            nrs.resource.CopyFrom(rs.resource)
                        nrs.schema_url = rs.schema_url
                        rs_map[(tid, ri)] = nrs
                    nss = nrs.scope_spans.add()
                    if ss.HasField("scope"):
                        nss.scope.CopyFrom(ss.scope)
                    nss.schema_url = ss.schema_url
                    ss_map[(tid, ri, si)] = nss
                nss.spans.append(sp)
    return out, rejected, message


def _count_spans(req: Any) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


# --------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------


class KafkaGateway:
    """Receivers' sink in gateway mode (see the module docstring)."""

    def __init__(
        self,
        producer: Producer,
        *,
        traces_topic: str,
        deploys_topic: str,
        incidents_topic: str,
        max_inflight_bytes: int = 64 * 1024 * 1024,
        ack_timeout_s: float = 10.0,
        retry_after_s: int = 2,
    ) -> None:
        self.producer = producer
        self.traces_topic = traces_topic
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

    def _produce(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[str]:
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
        if encoding == "otlp_json":
            req = otlp_json_to_proto(payload)
        else:
            try:
                req = _ExportRequest.FromString(payload)
            except ProtobufDecodeError as exc:
                raise DecodeError(
                    f"not a valid OTLP protobuf ExportTraceServiceRequest ({len(payload)} bytes; truncated, "
                    f"or nested deeper than {MAX_NESTING_DEPTH} levels): {exc}"
                ) from exc
        traces, rejected, message = split_by_trace(req)
        if not traces:
            return Accepted(0, rejected, message)
        if len(traces) == 1 and not rejected and encoding == "otlp_proto":
            ((tid, single),) = traces.items()
            records = [(tid.hex().encode(), payload)]
            counts = [_count_spans(single)]
        else:
            records = [(tid.hex().encode(), r.SerializeToString()) for tid, r in traces.items()]
            counts = [_count_spans(r) for r in traces.values()]
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

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[dict[str, Any]]) -> int:
        docs = list(raw) if len(raw) == len(events) else [deploy_event_to_json(e) for e in events]
        return self._events(
            self.deploys_topic,
            [
                (e.deploy_id.encode(), json.dumps(d, separators=(",", ":")).encode())
                for e, d in zip(events, docs, strict=True)
            ],
        )

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[dict[str, Any]]) -> int:
        return self._events(
            self.incidents_topic,
            [
                (e.incident_id.encode(), json.dumps(d, separators=(",", ":")).encode())
                for e, d in zip(events, raw, strict=True)
            ],
        )

    def query_modules(self, q: ModulesQuery) -> list[dict[str, Any]]:
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


# --------------------------------------------------------------------------------------
# kafka-python adapter
# --------------------------------------------------------------------------------------


class KafkaProducerAdapter:
    """:class:`Producer` over kafka-python's ``KafkaProducer`` (acks=all, idempotence off)."""

    def __init__(
        self, client_config: dict[str, Any], *, max_request_size: int, max_block_s: float = 10.0
    ) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "read_text is deprecated", DeprecationWarning)
            warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
            from kafka import KafkaProducer
            from kafka.errors import KafkaError
        self._kafka_error = KafkaError
        try:
            self._p = KafkaProducer(
                acks="all",
                linger_ms=2,
                retries=3,
                max_block_ms=int(max_block_s * 1000),
                max_request_size=max(max_request_size, 1024 * 1024),
                **client_config,
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot connect a producer to {client_config.get('bootstrap_servers')}: {exc}"
            ) from exc

    def send(self, topic: str, key: bytes, value: bytes) -> AckFuture:
        try:
            fut: AckFuture = self._p.send(topic, value=value, key=key)
        except self._kafka_error as exc:
            raise BrokerError(f"cannot produce to {topic!r}: {exc}") from exc
        return fut

    def close(self, timeout_s: float) -> None:
        try:
            self._p.close(timeout=timeout_s)
        except Exception as exc:  # closing is best effort
            log.warning("closing the gateway's Kafka producer failed: %s", exc)
