"""Deeply nested OTLP values get a 400 naming the limit, never a 500 (issue 10, item 5).

The requests start from the real SDK's encoding; a hostile client then nests an
``AnyValue`` (an attribute of the span, of the resource) thousands of levels deep.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.codec.results import MAX_NESTING_DEPTH
from collector.codec.transcode import otlp_json_to_proto
from collector.errors import DecodeError
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.kafka.gateway import AckFuture, KafkaGateway
from collector.pipelines.direct import DirectPipeline
from collector.ports import ModulesQuery
from tests.support.sdk_requests import Requests
from tests.support.twin import TwinDecoder

pytestmark = pytest.mark.integration

DEPTHS = [3_000, 100_000]


class _NoProducer:
    """The gateway refuses these requests before producing anything."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> AckFuture:
        raise AssertionError("nothing may be produced")

    def close(self, timeout_s: float) -> None:
        return None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _deep_any_value(depth: int) -> bytes:
    """``AnyValue{array_value: ArrayValue{values: [AnyValue{...}]}}`` nested ``depth`` deep,
    built inside out (O(depth): only the length prefixes are written per level)."""
    inner = b"\x0a\x01x"  # AnyValue{string_value: "x"}
    heads: list[bytes] = []
    size = len(inner)
    for _ in range(depth):
        array = b"\x0a" + _varint(size)  # ArrayValue.values (1)
        size += len(array)
        value = b"\x2a" + _varint(size)  # AnyValue.array_value (5)
        size += len(value)
        heads.append(value + array)
    return b"".join(reversed(heads)) + inner


def _proto_with_deep_attribute(depth: int, key: str) -> bytes:
    """The SDK's request with a span attribute ``key`` whose value nests ``depth`` deep."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    now = time.time_ns()
    spans = Requests().spans([(now, now + 1000)])
    head = bytes(encode_spans(spans).SerializeToString())
    # append one more KeyValue to the span's attributes (field 9): protobuf merges repeated fields,
    # so splicing it into the span message is what a client sending it would have produced
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(head)
    span_bytes = req.resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    key_value = b"\x0a" + _varint(len(key)) + key.encode()
    value = _deep_any_value(depth)
    key_value += b"\x12" + _varint(len(value)) + value
    span_bytes += b"\x4a" + _varint(len(key_value)) + key_value
    scope = b"\x12" + _varint(len(span_bytes)) + span_bytes  # ScopeSpans.spans (2)
    resource = req.resource_spans[0].resource.SerializeToString()
    rs = b"\x0a" + _varint(len(resource)) + resource + b"\x12" + _varint(len(scope)) + scope
    return b"\x0a" + _varint(len(rs)) + rs


def _json_with_deep_attribute(depth: int, key: str) -> bytes:
    now = time.time_ns()
    doc = Requests().json_doc([(now, now + 1000)])
    text = json.dumps(doc)
    deep = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
    marker = '"attributes": ['
    i = text.index(marker, text.index('"spans"')) + len(marker)
    return (text[:i] + '{"key": "' + key + '", "value": ' + deep + "}, " + text[i:]).encode()


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("key", ["code.file.path", "some.other.attribute"])
def test_the_decoders_refuse_deep_nesting_with_the_limit(depth: int, key: str) -> None:
    dec = TwinDecoder()
    with pytest.raises(DecodeError, match=f"{MAX_NESTING_DEPTH} levels") as exc_info:
        dec.decode_json(_json_with_deep_attribute(depth, key), "<request>")
    assert exc_info.value.reason == "too_deep"
    with pytest.raises(DecodeError, match=f"{MAX_NESTING_DEPTH} levels"):
        otlp_json_to_proto(_json_with_deep_attribute(depth, key))
    proto = _proto_with_deep_attribute(depth, key)
    gateway = KafkaGateway(
        _NoProducer(), traces_topic="t", logs_topic="l", deploys_topic="d", incidents_topic="i"
    )
    for payload, encoding in ((proto, "otlp_proto"), (_json_with_deep_attribute(depth, key), "otlp_json")):
        with pytest.raises(DecodeError, match=f"{MAX_NESTING_DEPTH} levels"):
            gateway.export_traces(payload, encoding)  # the gateway parses the whole request
    if key == "code.file.path":  # a value the decoder reads: refused, naming the limit
        with pytest.raises(DecodeError, match=f"nested deeper than {MAX_NESTING_DEPTH} levels"):
            dec.decode_proto(proto, "<request>")
    else:  # a value it never reads is skipped unparsed: the span is fine
        assert len(dec.decode_proto(proto, "<request>").spans) == 1


@pytest.fixture
def receivers(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    (tmp_path / "modules.yaml").write_text(
        'modules:\n  - name: cart/store\n    paths: ["services/cart/**"]\n'
    )
    (tmp_path / "CODEOWNERS").write_text("* @acme/cart\n")
    loaded = load_attribution(codeowners=tmp_path / "CODEOWNERS", modules=tmp_path / "modules.yaml")
    settings = Settings(
        receiver={
            "grpc_enabled": False,
            "http_port": 0,
            "flush_interval_seconds": 3600,
            "max_request_bytes": 8 << 20,
        }
    )
    r = start_receivers(settings, store=store, repositories=loaded.repositories)
    try:
        yield r
    finally:
        r.stop(5)


@pytest.mark.parametrize("depth", DEPTHS)
def test_the_receiver_answers_400_naming_the_limit(receivers: Receivers, depth: int) -> None:
    assert receivers.http_port is not None
    bodies = [
        ("application/json", _json_with_deep_attribute(depth, "code.file.path")),
        ("application/x-protobuf", _proto_with_deep_attribute(depth, "code.file.path")),
        ("application/json", b'{"deploy_id": ' + b"[" * depth + b"]" * depth + b"}"),
    ]
    for i, (ctype, body) in enumerate(bodies):
        path = "/v1/deploys" if i == 2 else "/v1/traces"
        conn = http.client.HTTPConnection("127.0.0.1", receivers.http_port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        assert resp.status == 400, (path, ctype, resp.status, data[:300])
        assert str(MAX_NESTING_DEPTH).encode() in data, data[:300]
    # and the server goes on: a good request is taken
    now = time.time_ns()
    conn = http.client.HTTPConnection("127.0.0.1", receivers.http_port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=Requests().proto([(now, now + 1000)]),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    sink = receivers.sink
    assert isinstance(sink, DirectPipeline) and sink.flush(30)
    assert sum(int(r["spans"]) for r in sink.query_modules(ModulesQuery())) == 1
