"""Kafka mode: a replayed older GitHub status does not revive a failed deploy (issue 10).

The webhook goes to receivers in gateway mode, which produce the deploy events to the real
broker's deploys topic; `prodloop run`'s streaming pipeline (in process: one chDB engine)
reads that topic, as every replica does, and tags the spans the gateway produced to the
traces topic.  A second pipeline, started on the same store, is a restart or another replica.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.integration import receiver_app

if TYPE_CHECKING:
    from .conftest import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

SECRET = "webhook-secret"
SECOND = 1_000_000_000
T0 = 1_772_323_200 * SECOND  # 2026-03-01T00:00:00Z
OLD = receiver_app.CART_COMMIT
NEW = "9" * 40
DEPLOY_ID = "github:acme/app:42"


def _post(r: Receivers, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    assert r.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _deliver(r: Receivers, state: str, status_id: int, at_s: int, delivery: str) -> int:
    when = f"2026-03-01T00:{at_s // 60:02d}:{at_s % 60:02d}Z"
    payload = {
        "deployment_status": {"id": status_id, "state": state, "created_at": when, "updated_at": when},
        "deployment": {"id": 42, "sha": NEW, "payload": {"service": "cart", "environment": "prod"}},
        "repository": {"name": "app", "full_name": "acme/app"},
    }
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    return _post(r, "/v1/webhooks/github", body, headers)[0]


def _spans_at(r: Receivers, minute: int, n: int) -> None:
    provider = TracerProvider(
        resource=Resource({"service.name": "cart", "deployment.environment.name": "prod"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{r.http_url}/v1/traces")))
    tracer = provider.get_tracer("app")
    start = T0 + minute * 60 * SECOND
    for i in range(n):  # root spans: one trace, so one record, each
        span = tracer.start_span("load_cart", attributes=receiver_app.CART_STORE.attrs, start_time=start + i)
        span.end(end_time=start + i + 2_000_000)
    provider.shutdown()


def _pipeline(
    kafka_broker: KafkaBroker, topics: dict[str, str], store: ClickHouseStore, tmp: Path, group: str
) -> Any:
    from collector.exporters.kafka.consumer import EventReader, TraceConsumer
    from collector.exporters.kafka.options import KafkaOptions
    from collector.pipelines.stream import StreamConfig, StreamPipeline
    from collector.processing.batch import ProcessorConfig

    modules, codeowners = receiver_app.write_config(tmp)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    opts = KafkaOptions((kafka_broker.bootstrap,))
    return StreamPipeline(
        StreamConfig(
            group_id=group, linger_ms=100, deploy_skew_ms=200, processing=ProcessorConfig(trace_wait_ms=1000)
        ),
        lambda on_a, on_r: TraceConsumer(
            opts, topics["traces_topic"], group, on_assigned=on_a, on_revoked=on_r
        ),
        store,
        loaded.repositories,
        deploys=EventReader(opts, topics["deploys_topic"]),
    )


def _run(pipeline: Any, records: int) -> None:
    deadline = time.monotonic() + 120
    while (
        sum(
            pipeline.metrics.value("prodloop_committed_offset", partition=str(p)) for p in pipeline.partitions
        )
        < records
    ):
        assert time.monotonic() < deadline, "the pipeline did not consume the traces in time"
        pipeline.step(100)


def _commits(store: ClickHouseStore, minute: int) -> dict[str, int]:
    rows = store.query(
        "SELECT commit_sha, sum(spans) FROM module_aggregates WHERE window_start = toDateTime({t:Int64}, 'UTC') "
        "GROUP BY commit_sha",
        {"t": T0 // SECOND + minute * 60},
    )
    return {str(c): int(n) for c, n in rows}


def test_a_replayed_success_does_not_revive_a_failed_deploy_in_kafka_mode(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], store: ClickHouseStore, tmp_path: Path
) -> None:
    topics = {"traces_topic": new_topic(1), "deploys_topic": new_topic(1), "incidents_topic": new_topic(1)}
    settings = Settings(
        receiver={
            "mode": "gateway",
            "grpc_enabled": False,
            "http_port": 0,
            "gateway_ack_timeout_seconds": 15,
            "github_webhook_secret": SECRET,
        },
        kafka={"bootstrap_servers": [kafka_broker.bootstrap], **topics},
    )
    gateway = start_receivers(settings)
    try:
        base = {"deploy_id": "base", "service": "cart", "environment": "prod", "commit_sha": OLD}
        base["deployed_at"] = "2026-03-01T00:00:00Z"
        assert (
            _post(gateway, "/v1/deploys", json.dumps(base).encode(), {"Content-Type": "application/json"})[0]
            == 200
        )
        assert _deliver(gateway, "success", 1001, 60, "delivery-1") == 200
        assert _deliver(gateway, "failure", 1002, 120, "delivery-2") == 200
        assert _deliver(gateway, "success", 1001, 60, "delivery-3") == 200  # the replay, last on the topic
        _spans_at(gateway, 10, 4)
    finally:
        gateway.stop(5)

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _pipeline(kafka_broker, topics, store, tmp_path, group)
    try:
        _run(first, 4)
    finally:
        first.close()
        first.deploys.close()
    assert _commits(store, 10) == {OLD: 4}
    (stored,) = [e for e, *_ in store.load_deploy_sources() if e.deploy_id == DEPLOY_ID]
    assert stored.status == "failed"

    # a restart, or another replica: the timeline rebuilt from the store, then the topic
    gateway = start_receivers(settings)
    try:
        _spans_at(gateway, 11, 3)
    finally:
        gateway.stop(5)
    second = _pipeline(kafka_broker, topics, store, tmp_path, group)  # restarted: same group
    try:
        _run(second, 4 + 3)
    finally:
        second.close()
        second.deploys.close()
    assert _commits(store, 11) == {OLD: 3}
    assert _commits(store, 10) == {OLD: 4}  # nothing consumed twice
