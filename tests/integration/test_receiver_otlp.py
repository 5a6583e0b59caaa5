"""OTLP receivers in direct mode, fed by the real OpenTelemetry exporters, against ground truth.

A real application (tests/integration/receiver_app.py) instrumented with opentelemetry-sdk
exports three times - OTLP/gRPC and OTLP/HTTP protobuf (opentelemetry-exporter-otlp), and
OTLP/HTTP JSON (opentelemetry-exporter-otlp-json-http) - to receivers running on the real
chDB store.  The per-module aggregates must equal what the application emitted, by
construction.  The demo shop's traffic (deploys, sampling, every kind of module rule) is
replayed too, with its deploys posted to /v1/deploys first.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from attribution.sketch import exact_quantile
from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, demo_dir, generate
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.direct import DirectPipeline
from collector.ports import ModulesQuery
from collector.receivers.grpc import TRACE_SERVICE
from tests.integration import receiver_app

pytestmark = pytest.mark.integration


def _settings(**receiver: Any) -> Settings:
    base: dict[str, Any] = {"grpc_port": 0, "http_port": 0, "flush_interval_seconds": 3600}
    base.update(receiver)
    return Settings(receiver=base, attribution={"sample_rate_attribute": SAMPLE_RATE_ATTRIBUTE})


def start_direct(store: ClickHouseStore, modules: Path, codeowners: Path, **receiver: Any) -> Receivers:
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    return start_receivers(_settings(**receiver), store=store, repositories=loaded.repositories)


def flush(receivers: Receivers) -> None:
    sink = receivers.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.flush(60), "the flush did not complete"


@pytest.fixture
def app_receivers(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    modules, codeowners = receiver_app.write_config(tmp_path)
    r = start_direct(store, modules, codeowners)
    try:
        yield r
    finally:
        r.stop(5)


def _grpc_exporter(r: Receivers) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=f"http://{r.grpc_endpoint}", insecure=True, compression=grpc.Compression.Gzip
    )


def _http_proto_exporter(r: Receivers) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{r.http_url}/v1/traces", compression=Compression.Gzip)


def _http_json_exporter(r: Receivers) -> SpanExporter:
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{r.http_url}/v1/traces")


EXPORTERS: dict[str, Callable[[Receivers], SpanExporter]] = {
    "grpc": _grpc_exporter,
    "http_protobuf": _http_proto_exporter,
    "http_json": _http_json_exporter,
}


def assert_rows_equal_truth(rows: list[dict[str, Any]], truth: dict[Any, Any]) -> None:
    got = {
        (r["service"], r["environment"], r["module"], tuple(r["owners"]), r["commit_sha"]): r for r in rows
    }
    assert set(got) == set(truth), (
        f"missing {sorted(set(truth) - set(got))} extra {sorted(set(got) - set(truth))}"
    )
    for key, t in truth.items():
        row = got[key]
        durations = sorted(t.durations_ns)
        assert row["spans"] == t.spans == len(durations), key
        assert row["errors"] == t.errors, key
        assert row["duration_sum_ms"] == pytest.approx(sum(durations) / 1e6, rel=1e-12), key
        assert row["duration_min_ms"] == pytest.approx(durations[0] / 1e6), key
        assert row["duration_max_ms"] == pytest.approx(durations[-1] / 1e6), key
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            exact = exact_quantile(durations, q)
            assert abs(row[col] * 1e6 - exact) <= 0.01 * exact + 1e-6, (key, col)


@pytest.mark.parametrize("protocol", list(EXPORTERS))
def test_real_exporters_aggregates_equal_ground_truth(
    app_receivers: Receivers, store: ClickHouseStore, protocol: str
) -> None:
    truth = receiver_app.run_app(lambda: EXPORTERS[protocol](app_receivers))
    flush(app_receivers)
    rows = store.query_modules()
    assert_rows_equal_truth(rows, truth)
    sink = app_receivers.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.stats.spans_rejected == 0
    assert sink.stats.spans_accepted == sum(t.spans for t in truth.values())
    # the query API answers what `prodloop query modules --format json` prints
    assert app_receivers.http_url is not None
    with urllib.request.urlopen(f"{app_receivers.http_url}/api/v1/modules") as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(resp.read()) == json.loads(json.dumps(rows))
    with urllib.request.urlopen(f"{app_receivers.http_url}/api/v1/modules?service=payments&limit=2") as resp:
        api = json.loads(resp.read())
    assert api == json.loads(json.dumps(store.query_modules(service="payments")[:2]))


def _post(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_shop_traffic_over_grpc_and_http_with_deploys_equals_ground_truth(
    store: ClickHouseStore,
) -> None:
    """Deploys over /v1/deploys, then the shop's requests: half over raw gRPC, half over HTTP
    (protobuf, gzip); the commits come from the posted deploys, the adjusted counts from sampling."""
    traffic = generate(seed=3, minutes=2)
    d = demo_dir()
    r = start_direct(store, d / "modules.yaml", d / "CODEOWNERS")
    try:
        assert r.http_url is not None
        status, body = _post(
            f"{r.http_url}/v1/deploys",
            "\n".join(json.dumps(x) for x in traffic.deploys).encode(),
            "application/json",
        )
        assert (status, json.loads(body)) == (200, {"accepted": len(traffic.deploys)})
        with grpc.insecure_channel(str(r.grpc_endpoint)) as channel:
            export = channel.unary_unary(f"/{TRACE_SERVICE}/Export")
            for i, req in enumerate(traffic.requests):
                if i % 2:
                    assert export(req, timeout=30) == b""  # an empty ExportTraceServiceResponse: all accepted
                else:
                    status, body = _post(
                        f"{r.http_url}/v1/traces",
                        gzip.compress(req),
                        "application/x-protobuf",
                        {"Content-Encoding": "gzip"},
                    )
                    assert (status, body) == (200, b"")
        flush(r)
    finally:
        r.stop(5)
    rows = store.query_modules()
    got = {
        (x["service"], x["environment"], x["module"], tuple(x["owners"]), x["commit_sha"]): x for x in rows
    }
    assert set(got) == set(traffic.truth)
    for key, t in traffic.truth.items():
        assert got[key]["spans"] == t.spans, key
        assert got[key]["errors"] == t.errors, key
        assert got[key]["spans_adjusted"] == pytest.approx(t.spans_adjusted), key
        assert got[key]["duration_sum_ms"] == pytest.approx(sum(t.durations_ns) / 1e6, rel=1e-12), key
    assert len(store.load_deploys()) == len(traffic.deploys)


def test_stop_flushes_what_was_accepted(store: ClickHouseStore, tmp_path: Path) -> None:
    """A clean stop aggregates the queue and writes it, with no explicit flush."""
    modules, codeowners = receiver_app.write_config(tmp_path)
    r = start_direct(store, modules, codeowners)
    truth = receiver_app.run_app(lambda: _http_proto_exporter(r), requests=30)
    r.stop(10)
    assert_rows_equal_truth(store.query_modules(), truth)


def test_periodic_flush_without_being_asked(store: ClickHouseStore, tmp_path: Path) -> None:
    modules, codeowners = receiver_app.write_config(tmp_path)
    r = start_direct(store, modules, codeowners, flush_interval_seconds=0.2)
    try:
        truth = receiver_app.run_app(lambda: _grpc_exporter(r), requests=30)
        total = sum(t.spans for t in truth.values())
        sink = r.sink
        assert isinstance(sink, DirectPipeline)
        deadline = time.monotonic() + 20
        while (
            sum(x["spans"] for x in sink.query_modules(ModulesQuery())) < total
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert sink.stats.flushes >= 1
        assert_rows_equal_truth(sink.query_modules(ModulesQuery()), truth)
    finally:
        r.stop(5)
