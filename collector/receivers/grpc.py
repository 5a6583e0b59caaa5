"""OTLP/gRPC: ``TraceService/Export`` and ``LogsService/Export`` over raw request bytes, and
their server.

The methods are registered with no request deserializer: the bytes go to the sink untouched,
to be decoded once, by the one decoder.  Failures are answered through
:func:`collector.receivers.status.refusal`, the same map as the HTTP receiver's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from collector.errors import ConfigError, RequestError
from collector.ports import Accepted, LogSink, TraceSink
from collector.receivers.auth import bearer_matches
from collector.receivers.bodies import PROTOBUF
from collector.receivers.status import abort_grpc, export_logs_response, export_response, refusal

log = logging.getLogger("prodloop.receiver")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class _BearerService:
    def __init__(self, bearer_token: str) -> None:
        self._token = bearer_token.encode()

    def _check_bearer(self, context: grpc.ServicerContext) -> None:
        if not self._token:
            return
        got = b""
        for k, v in context.invocation_metadata():
            if k == "authorization":
                got = v.encode() if isinstance(v, str) else bytes(v)
        if not bearer_matches(got, self._token):
            why = "no authorization metadata" if not got.strip() else "wrong bearer token"
            log.warning("refused gRPC Export from %s: %s", context.peer(), why)
            raise RequestError(401, f"unauthorized ({why}): send 'authorization: Bearer <token>'")

    def _call(self, context: grpc.ServicerContext, accept: Callable[[], Accepted]) -> Accepted:
        acc: Accepted | None = None
        try:
            self._check_bearer(context)
            acc = accept()
        except Exception as exc:
            r = refusal(exc)
            if r.internal:
                log.exception("gRPC Export failed")
            abort_grpc(context, r)
        assert acc is not None  # abort_grpc raised otherwise
        return acc


class GrpcTraceService(_BearerService):
    """``TraceService/Export`` over raw request bytes."""

    def __init__(self, sink: TraceSink, bearer_token: str = "") -> None:
        super().__init__(bearer_token)
        self.sink = sink

    def export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        acc = self._call(context, lambda: self.sink.export_traces(request, "otlp_proto"))
        return export_response(acc, PROTOBUF)

    def handler(self) -> grpc.GenericRpcHandler:
        # no request_deserializer: the raw bytes go to the one decoder, once
        method = grpc.unary_unary_rpc_method_handler(self.export)
        return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": method})


class GrpcLogsService(_BearerService):
    """``LogsService/Export`` over raw request bytes."""

    def __init__(self, sink: LogSink, bearer_token: str = "") -> None:
        super().__init__(bearer_token)
        self.sink = sink

    def export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        received = time.time_ns()
        acc = self._call(
            context, lambda: self.sink.accept_logs(request, "otlp_proto", received_unix_nano=received)
        )
        return export_logs_response(acc, PROTOBUF)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(self.export)
        return grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": method})


def start_grpc_server(
    sink: TraceSink,
    *,
    host: str,
    port: int,
    workers: int,
    max_request_bytes: int,
    bearer_token: str = "",
    tls: tuple[bytes, bytes] | None = None,
    logs: LogSink | None = None,
) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server; returns it and the port it listens on.

    ``tls``: the PEM certificate chain and private key (then TLS only).  ``logs``: serve
    ``LogsService`` too (without it, a logs export is answered UNIMPLEMENTED)."""
    handlers = [GrpcTraceService(sink, bearer_token).handler()]
    if logs is not None:
        handlers.append(GrpcLogsService(logs, bearer_token).handler())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prodloop-grpc"),
        handlers=handlers,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    address = f"{bracketed}:{port}"
    try:
        if tls is not None:
            cert, key = tls
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        server.stop(0)
        raise ConfigError(
            f"cannot listen for OTLP/gRPC on {address}: {exc} "
            "(receiver.grpc_port, PRODLOOP_RECEIVER__GRPC_PORT; receiver.grpc_enabled false turns it off)"
        ) from None
    server.start()
    return server, bound
