"""The OTLP answers: success bodies, and the one map from an error to its HTTP status and gRPC code.

* Success: 200 / OK with an ``ExportTraceServiceResponse`` (``ExportLogsServiceResponse`` for
  logs) in the request's encoding; invalid spans (log records) are counted in ``partial_success``.
* :class:`~collector.errors.RequestError`: its own HTTP status (400, 401, 404, 413, 415, ...).
* :class:`~collector.errors.BusyError`: HTTP 429 with ``Retry-After``; gRPC RESOURCE_EXHAUSTED
  with a ``google.rpc.RetryInfo`` (OTLP clients retry RESOURCE_EXHAUSTED only when it is present).
* :class:`~collector.errors.UnavailableError`: HTTP 503 with ``Retry-After``; gRPC UNAVAILABLE
  with RetryInfo.
* :class:`~collector.errors.PayloadError` (an undecodable request, values the store refused):
  HTTP 400, gRPC INVALID_ARGUMENT.  Not retryable.
* Anything else: HTTP 500, gRPC INTERNAL, logged with its traceback.

The gRPC code always follows from the HTTP status, through :data:`_GRPC_CODE_FOR_HTTP`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.errors import BusyError, PayloadError, RequestError, UnavailableError
from collector.ports import Accepted
from collector.receivers.bodies import JSON, PROTOBUF

INTERNAL_MESSAGE = "internal error (see prodloop's log)"

_GRPC_CODE_FOR_HTTP = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    408: code_pb2.DEADLINE_EXCEEDED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    431: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}
_GRPC_STATUS_CODES = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class Refusal:
    """How one failed request is answered, on either transport."""

    http_status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False  # close the HTTP connection after the answer
    retry_after_s: int | None = None  # gRPC: sent as RetryInfo
    internal: bool = False  # not a refusal but a failure: log it with its traceback

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC_STATUS_CODES[_GRPC_CODE_FOR_HTTP.get(self.http_status, code_pb2.UNKNOWN)]


def refusal(exc: BaseException) -> Refusal:
    """The answer to a request that failed with ``exc``: the one error -> status map."""
    if isinstance(exc, RequestError):
        return Refusal(exc.status, exc.message, exc.headers, exc.close)
    if isinstance(exc, BusyError | UnavailableError):
        status = 429 if isinstance(exc, BusyError) else 503
        retry = exc.retry_after_s
        return Refusal(status, str(exc), {"Retry-After": str(retry)}, retry_after_s=retry)
    if isinstance(exc, PayloadError):  # an undecodable request, values the store refused
        return Refusal(400, str(exc))
    return Refusal(500, INTERNAL_MESSAGE, close=True, internal=True)


def export_response(acc: Accepted, content_type: str) -> bytes:
    """``ExportTraceServiceResponse`` for a (partially) successful request."""
    if content_type == JSON:
        if not acc.rejected and not acc.message:
            return b"{}"
        body = {"partialSuccess": {"rejectedSpans": str(acc.rejected), "errorMessage": acc.message}}
        return json.dumps(body).encode()
    resp = trace_service_pb2.ExportTraceServiceResponse()
    if acc.rejected or acc.message:
        resp.partial_success.rejected_spans = acc.rejected
        resp.partial_success.error_message = acc.message
    data: bytes = resp.SerializeToString()
    return data


def export_logs_response(acc: Accepted, content_type: str) -> bytes:
    """``ExportLogsServiceResponse``: ``acc.rejected`` counts log records."""
    if content_type == JSON:
        if not acc.rejected and not acc.message:
            return b"{}"
        body = {"partialSuccess": {"rejectedLogRecords": str(acc.rejected), "errorMessage": acc.message}}
        return json.dumps(body).encode()
    resp = logs_service_pb2.ExportLogsServiceResponse()
    if acc.rejected or acc.message:
        resp.partial_success.rejected_log_records = acc.rejected
        resp.partial_success.error_message = acc.message
    data: bytes = resp.SerializeToString()
    return data


def status_body(http_status: int, message: str, content_type: str) -> bytes:
    """A ``google.rpc.Status`` body, as the OTLP/HTTP specification asks for failures."""
    code = _GRPC_CODE_FOR_HTTP.get(http_status, code_pb2.UNKNOWN)
    if content_type == PROTOBUF:
        data: bytes = status_pb2.Status(code=code, message=message).SerializeToString()
        return data
    return json.dumps({"code": code, "message": message}).encode()


def abort_grpc(context: grpc.ServicerContext, r: Refusal) -> None:
    """End a gRPC call with the refusal's code (and RetryInfo when it says when to retry).

    ``context.abort`` raises: this never returns normally."""
    code = r.grpc_code
    if r.retry_after_s is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.seconds = r.retry_after_s
        status = status_pb2.Status(code=code.value[0], message=r.message)
        status.details.add().Pack(info)
        context.set_trailing_metadata(
            (
                ("grpc-status-details-bin", status.SerializeToString()),  # how the Collector reads RetryInfo
                ("google.rpc.retryinfo-bin", info.SerializeToString()),  # how opentelemetry-python reads it
            )
        )
    context.abort(code, r.message)
