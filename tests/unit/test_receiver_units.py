"""Receiver helpers that need no server: the OTLP/JSON -> protobuf transcoding of gateway mode
(checked against the SDK's two encoders on the same spans), the split by trace, the GitHub
deployment_status mapping and signatures, the OTLP response bodies, the bounded decompression
of request bodies, and the OpenAPI document."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import tracemalloc
import zlib
from collections.abc import Callable, Sequence

import pytest
import zstandard
from google.rpc import status_pb2
from jsonschema import Draft202012Validator
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_proto
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from collector.codec.transcode import otlp_json_to_proto, split_by_trace
from collector.errors import DecodeError, EventError, RequestError
from collector.ports import Accepted
from collector.receivers.bodies import content_encoding, decompress
from collector.receivers.github import deploy_from_github, github_signature, verify_github_signature
from collector.receivers.openapi import openapi_document
from collector.receivers.status import export_response, status_body


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _sdk_spans() -> list[ReadableSpan]:
    keep = _Keep()
    spans: list[ReadableSpan] = []
    for service in ("cart", "payments"):
        provider = TracerProvider(
            resource=Resource({"service.name": service, "n": 3}), shutdown_on_exit=False
        )
        provider.add_span_processor(SimpleSpanProcessor(keep))
        tracer = provider.get_tracer("scope-a", "1.2")
        for t in range(3):
            root = tracer.start_span(
                "root", kind=SpanKind.SERVER, start_time=1_000 + t, attributes={"a": 1.5, "b": True}
            )
            ctx = set_span_in_context(root)
            child = tracer.start_span(
                "child", context=ctx, start_time=2_000, attributes={"bytes": b"\x00\xff", "list": [1, 2]}
            )
            child.add_event("ev", {"k": "v"}, timestamp=2_500)
            child.set_status(Status(StatusCode.ERROR, "bad"))
            child.end(end_time=3_000)
            linked = provider.get_tracer("scope-b").start_span(
                "linked",
                links=[Link(child.get_span_context(), {"l": 1})],
                start_time=5,
                attributes={"x": "y"},
            )
            linked.end(end_time=6)
            root.end(end_time=9_000)
        provider.shutdown()
    spans.extend(keep.spans)
    return spans


def test_json_transcodes_to_exactly_what_the_protobuf_encoder_makes() -> None:
    spans = _sdk_spans()
    from_json = otlp_json_to_proto(encode_json(spans).to_json().encode())
    assert from_json == encode_proto(spans)
    assert sum(len(ss.spans) for rs in from_json.resource_spans for ss in rs.scope_spans) == len(spans)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be an object"),
        (b'{"resourceSpans": {}}', "must be a list"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            r"spans\[0\]\.traceId is not hex",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "ExportTraceService",
        ),
    ],
)
def test_bad_json_is_a_decode_error_naming_where(body: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        otlp_json_to_proto(body)


def test_split_by_trace_keeps_resource_scope_and_order() -> None:
    spans = _sdk_spans()
    req = encode_proto(spans)
    traces, rejected, message = split_by_trace(req)
    assert rejected == 0 and message == ""
    assert len(traces) == len({s.context.trace_id for s in spans})
    seen = 0
    for tid, r in traces.items():
        for rs in r.resource_spans:
            assert rs.resource.attributes  # the resource travels with its spans
            for ss in rs.scope_spans:
                assert ss.scope.name in ("scope-a", "scope-b")
                for sp in ss.spans:
                    assert sp.trace_id == tid
                    seen += 1
    assert seen == len(spans)
    # an invalid trace id is rejected and named
    bad = trace_service_pb2.ExportTraceServiceRequest()
    bad.CopyFrom(req)
    bad.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    traces2, rejected2, message2 = split_by_trace(bad)
    assert rejected2 == 1 and "all zeroes" in message2
    assert (
        sum(len(ss.spans) for r in traces2.values() for rs in r.resource_spans for ss in rs.scope_spans)
        == seen - 1
    )


def _payload(state: str = "success", **dep: object) -> dict[str, object]:
    return {
        "deployment_status": {
            "state": state,
            "environment": "production",
            "updated_at": "2026-03-01T10:00:05Z",
        },
        "deployment": {"id": 7, "sha": "abcdef1234567", "environment": "production", **dep},
        "repository": {"name": "shop", "full_name": "acme/shop", "html_url": "https://github.com/acme/shop"},
    }


def test_github_deployment_status_mapping() -> None:
    ev = deploy_from_github(_payload())
    assert ev is not None
    assert (ev.deploy_id, ev.service, ev.environment, ev.commit_sha, ev.status) == (
        "github:acme/shop:7",
        "shop",
        "production",
        "abcdef1234567",
        "succeeded",
    )
    assert ev.repository == "https://github.com/acme/shop"
    ev = deploy_from_github(_payload(payload=json.dumps({"service": "checkout", "environment": "prod"})))
    assert ev is not None and (ev.service, ev.environment) == ("checkout", "prod")
    ev = deploy_from_github(_payload("error"))
    assert ev is not None and ev.status == "failed" and not ev.live
    assert deploy_from_github(_payload("queued")) is None
    with pytest.raises(EventError, match="commit_sha"):
        deploy_from_github(_payload(sha="main"))
    with pytest.raises(EventError, match="deployment"):
        deploy_from_github({"deployment_status": {"state": "success"}})


def test_github_signature_is_the_documented_hmac() -> None:
    body = b'{"zen": "Design for failure."}'
    expected = "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert github_signature(b"key", body) == expected
    assert verify_github_signature(b"key", body, expected)
    assert not verify_github_signature(b"key", body + b" ", expected)
    assert not verify_github_signature(b"key", body, None)
    assert not verify_github_signature(b"key", body, "sha1=" + expected[7:])


def test_response_bodies() -> None:
    assert export_response(Accepted(3), "application/x-protobuf") == b""
    assert export_response(Accepted(3), "application/json") == b"{}"
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(
        export_response(Accepted(3, 2, "why"), "application/x-protobuf")
    )
    assert (resp.partial_success.rejected_spans, resp.partial_success.error_message) == (2, "why")
    assert json.loads(export_response(Accepted(3, 2, "why"), "application/json")) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}
    }
    st = status_pb2.Status.FromString(status_body(400, "bad", "application/x-protobuf"))
    assert (st.code, st.message) == (3, "bad")
    assert json.loads(status_body(503, "later", "application/json")) == {"code": 14, "message": "later"}


def _zstd_stream(data: bytes) -> bytes:
    c = zstandard.ZstdCompressor().compressobj()  # a frame that does not declare its size
    return c.compress(data) + c.flush()


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "zstd-stream": _zstd_stream,
}


@pytest.mark.parametrize("name", sorted(_COMPRESSORS))
def test_a_zip_bomb_is_refused_without_inflating_it(name: str) -> None:
    limit = 64 * 1024
    compress = _COMPRESSORS[name]
    encoding = name.split("-")[0]
    assert decompress(encoding, compress(b"span" * 1000), limit) == b"span" * 1000
    bomb = compress(b"\0" * (16 << 20))
    assert len(bomb) < limit
    tracemalloc.start()
    try:
        with pytest.raises(RequestError) as err:
            decompress(encoding, bomb, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.status == 413 and "decompressed" in err.value.message
    assert peak < 3 * limit  # not the 16 MiB it would inflate to


def test_unsupported_content_encodings_are_415() -> None:
    assert [content_encoding(v) for v in (None, "GZIP ", "deflate", "zstd", "identity")] == [
        "identity",
        "gzip",
        "deflate",
        "zstd",
        "identity",
    ]
    for bad in ("br", "snappy", "gzip, zstd"):
        with pytest.raises(RequestError) as err:
            content_encoding(bad)
        assert err.value.status == 415 and "gzip, deflate, zstd" in err.value.message


def test_the_openapi_document_is_valid_and_its_schemas_check() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])
    deploy = Draft202012Validator(doc["components"]["schemas"]["DeployEvent"])
    good = {
        "deploy_id": "d-1",
        "service": "cart",
        "environment": "prod",
        "commit_sha": "abcdef1",
        "deployed_at": "2026-03-01T00:00:00Z",
    }
    assert deploy.is_valid(good) and not deploy.is_valid({**good, "commit_sha": "main"})
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for status, answer in op["responses"].items():
                if status in ("429", "503"):
                    assert "Retry-After" in answer["headers"], (path, status)
