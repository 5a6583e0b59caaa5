"""A replayed or late older deploy status never revives a failed deploy (issue 10).

Direct mode through the real HTTP receiver on chDB: GitHub ``deployment_status`` deliveries
(signed as GitHub signs them), then spans from the real OpenTelemetry SDK, and the commits
the store tagged them with.  Also the store alone: which row of a deploy ``FINAL`` keeps,
merged or not, and on a store migrated from before the status order existed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from attribution.model import DeployEvent
from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.migrations import load_migrations
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.direct import DirectPipeline
from tests.integration import receiver_app

pytestmark = pytest.mark.integration

SECRET = "webhook-secret"
SECOND = 1_000_000_000
T0 = 1_772_323_200 * SECOND  # 2026-03-01T00:00:00Z
OLD = receiver_app.CART_COMMIT  # live before deployment 42
NEW = "9" * 40  # deployment 42's commit
DEPLOY_ID = "github:acme/app:42"


def _start(store: ClickHouseStore, tmp: Path) -> Receivers:
    modules, codeowners = receiver_app.write_config(tmp)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    cfg = {
        "grpc_enabled": False,
        "http_port": 0,
        "flush_interval_seconds": 3600,
        "github_webhook_secret": SECRET,
    }
    return start_receivers(Settings(receiver=cfg), store=store, repositories=loaded.repositories)


@pytest.fixture
def receivers(store: ClickHouseStore, tmp_path: Path) -> Iterator[list[Receivers]]:
    """Started receivers; each is stopped at the end (a test may restart them)."""
    started: list[Receivers] = []
    yield started
    for r in started:
        r.stop(5)


def _post(r: Receivers, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    assert r.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _deliver(r: Receivers, state: str, status_id: int, at_s: int, delivery: str) -> tuple[int, Any]:
    """A ``deployment_status`` delivery of deployment 42, signed with the webhook's secret."""
    when = f"2026-03-01T00:{at_s // 60:02d}:{at_s % 60:02d}Z"
    payload = {
        "action": "created",
        "deployment_status": {"id": status_id, "state": state, "created_at": when, "updated_at": when},
        "deployment": {"id": 42, "sha": NEW, "payload": {"service": "cart", "environment": "prod"}},
        "repository": {"name": "app", "full_name": "acme/app", "html_url": "https://github.com/acme/app"},
    }
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sig,
    }
    return _post(r, "/v1/webhooks/github", body, headers)


def _base_deploy(r: Receivers) -> None:
    """A plain /v1/deploys event: OLD is live from T0."""
    doc = {"deploy_id": "base", "service": "cart", "environment": "prod", "commit_sha": OLD}
    doc["deployed_at"] = "2026-03-01T00:00:00Z"
    assert _post(r, "/v1/deploys", json.dumps(doc).encode(), {"Content-Type": "application/json"}) == (
        200,
        {"accepted": 1},
    )


def _spans_at(r: Receivers, minute: int, n: int = 5) -> None:
    """``n`` spans of cart (no commit on the resource: the timeline decides) at T0 + minute."""
    provider = TracerProvider(
        resource=Resource({"service.name": "cart", "deployment.environment.name": "prod"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{r.http_url}/v1/traces")))
    tracer = provider.get_tracer("app")
    start = T0 + minute * 60 * SECOND
    for i in range(n):
        span = tracer.start_span("load_cart", attributes=receiver_app.CART_STORE.attrs, start_time=start + i)
        span.end(end_time=start + i + 2_000_000)
    provider.shutdown()


def _commits(r: Receivers, store: ClickHouseStore, minute: int) -> dict[str, int]:
    """The stored spans of the window at T0 + minute, by the commit they were tagged with."""
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    assert sink.flush(60)
    rows = sink._locked(
        lambda: store.query(
            "SELECT commit_sha, sum(spans) FROM module_aggregates WHERE window_start = toDateTime({t:Int64}, 'UTC') "
            "GROUP BY commit_sha",
            {"t": T0 // SECOND + minute * 60},
        )
    )
    return {str(c): int(n) for c, n in rows}


def _stored(r: Receivers, store: ClickHouseStore) -> DeployEvent:
    sink = r.sink
    assert isinstance(sink, DirectPipeline)
    loaded: list[DeployEvent] = sink._locked(store.load_deploys)
    (d,) = [d for d in loaded if d.deploy_id == DEPLOY_ID]
    return d


def test_a_replayed_success_does_not_revive_a_failed_deploy(
    store: ClickHouseStore, tmp_path: Path, receivers: list[Receivers]
) -> None:
    r = _start(store, tmp_path)
    receivers.append(r)
    _base_deploy(r)
    assert _deliver(r, "success", 1001, 60, "delivery-1")[0] == 200
    _spans_at(r, 10)
    assert _commits(r, store, 10) == {NEW: 5}  # the success made it live
    assert _deliver(r, "failure", 1002, 120, "delivery-2") == (
        200,
        {"accepted": 1, "deploy_id": DEPLOY_ID, "status": "failed"},
    )
    # the old success again: a replay under a new delivery id, then a redelivery of delivery-1
    assert _deliver(r, "success", 1001, 60, "delivery-3")[0] == 200
    assert _deliver(r, "success", 1001, 60, "delivery-1") == (200, {"accepted": 0, "duplicate": "delivery-1"})
    _spans_at(r, 11)
    assert _commits(r, store, 11) == {OLD: 5}  # never tagged with the failed deploy's commit
    assert _stored(r, store).status == "failed"

    # restarted: the delivery ids are forgotten, the store keeps the order of the statuses
    r.stop(5)
    r = _start(store, tmp_path)
    receivers.append(r)
    assert _stored(r, store).status == "failed"
    assert _deliver(r, "success", 1001, 60, "delivery-1")[0] == 200
    _spans_at(r, 12)
    assert _commits(r, store, 12) == {OLD: 5}
    assert _stored(r, store).status == "failed"


def test_the_same_delivery_twice_is_acknowledged_as_a_duplicate_and_changes_nothing(
    store: ClickHouseStore, tmp_path: Path, receivers: list[Receivers]
) -> None:
    r = _start(store, tmp_path)
    receivers.append(r)

    def rows() -> int:
        sink = r.sink
        assert isinstance(sink, DirectPipeline)
        return int(sink._locked(lambda: store.query("SELECT count() FROM deploys"))[0][0])

    assert _deliver(r, "success", 1001, 60, "delivery-1") == (
        200,
        {"accepted": 1, "deploy_id": DEPLOY_ID, "status": "succeeded"},
    )
    assert rows() == 1
    assert _deliver(r, "success", 1001, 60, "delivery-1") == (200, {"accepted": 0, "duplicate": "delivery-1"})
    assert rows() == 1
    # a duplicate is recognised whatever it carries: the first delivery of an id is the one applied
    assert _deliver(r, "failure", 1002, 120, "delivery-1")[1] == {"accepted": 0, "duplicate": "delivery-1"}
    assert rows() == 1
    assert _stored(r, store).status == "succeeded"
    _spans_at(r, 10)
    assert _commits(r, store, 10) == {NEW: 5}


def test_statuses_arriving_out_of_order_keep_the_newest(
    store: ClickHouseStore, tmp_path: Path, receivers: list[Receivers]
) -> None:
    r = _start(store, tmp_path)
    receivers.append(r)
    _base_deploy(r)
    # the failure (updated later) is delivered before the success it followed
    assert _deliver(r, "failure", 1002, 120, "delivery-2")[0] == 200
    assert _deliver(r, "success", 1001, 60, "delivery-1")[0] == 200
    _spans_at(r, 10)
    assert _commits(r, store, 10) == {OLD: 5}
    assert _stored(r, store).status == "failed"
    r.stop(5)
    r = _start(store, tmp_path)  # what a restart (or another replica) loads
    receivers.append(r)
    _spans_at(r, 11)
    assert _commits(r, store, 11) == {OLD: 5}


# -- the store alone -----------------------------------------------------------------------


def _gh(state: str, at_s: int, status_id: int) -> DeployEvent:
    at = T0 + at_s * SECOND
    return DeployEvent(
        DEPLOY_ID, "cart", "prod", NEW, at, status=state, status_at_unix_nano=at, status_id=status_id
    )


def test_the_store_keeps_the_newest_status_not_the_last_written(store: ClickHouseStore) -> None:
    success, failure = _gh("succeeded", 60, 1001), _gh("failed", 120, 1002)
    # arrival order: success, failure, the replayed success (each its own insert: its own part)
    for i, ev in enumerate([success, failure, success]):
        store.write_deploys([ev], received_at_unix_nano=T0 + (i + 1) * SECOND)
    store.write_deploys([success, failure, success], received_at_unix_nano=T0 + 9 * SECOND, sources=None)
    assert store.load_deploys() == [failure]
    assert [e for e, *_ in store.load_deploy_sources()] == [failure]
    store.command("OPTIMIZE TABLE deploys FINAL")  # a merge keeps the same row
    assert store.load_deploys() == [failure]
    # a later status wins; a tie on time goes to the higher status id
    later = _gh("succeeded", 120, 1003)
    store.write_deploys([later], received_at_unix_nano=T0)  # even with an earlier arrival clock
    assert store.load_deploys() == [later]
    # Kafka mode: each replica writes what it read from the deploys topic, with its provenance
    store.write_deploys([later], received_at_unix_nano=T0 + 50 * SECOND, sources=[(0, 7, 1234)])
    store.write_deploys([failure], received_at_unix_nano=T0 + 99 * SECOND, sources=[(0, 5, 1200)])
    assert store.load_deploy_sources() == [(later, 0, 7, 1234)]


def test_plain_events_keep_last_received_wins(store: ClickHouseStore) -> None:
    a = DeployEvent("d1", "cart", "prod", OLD, T0)
    b = DeployEvent("d1", "cart", "prod", NEW, T0 + SECOND)
    store.write_deploys([a], received_at_unix_nano=T0 + 1000)
    store.write_deploys([b], received_at_unix_nano=T0 + 2000)
    assert store.load_deploys() == [b]
    store.write_deploys([b, a], received_at_unix_nano=T0 + 3000)  # one insert: its order counts
    assert store.load_deploys() == [a]


def test_a_store_from_before_the_status_order_keeps_its_deploys(chdb_dir: Path) -> None:
    import uuid

    s = ClickHouseStore(f"chdb://{chdb_dir}", f"t_{uuid.uuid4().hex[:12]}")
    try:
        s.apply_migrations([m for m in load_migrations() if m.version < 7])
        s.command(
            "INSERT INTO deploys (deploy_id, service, environment, commit_sha, previous_sha, deployed_at, "
            "repository, status, url, received_at, version) VALUES "
            "('d1', 'cart', 'prod', {c:String}, '', toDateTime64({t:Int64}, 9, 'UTC'), '', 'succeeded', '', "
            "now64(3), {v:UInt64})",
            {"c": OLD, "t": T0 // SECOND, "v": T0 + 1000},
        )
        assert [m.version for m in s.apply_migrations()] == [
            m.version for m in load_migrations() if m.version >= 7
        ]
        old = DeployEvent("d1", "cart", "prod", OLD, T0)
        assert s.load_deploys() == [old]
        newer = DeployEvent("d1", "cart", "prod", NEW, T0)  # a plain correction, received later
        s.write_deploys([newer], received_at_unix_nano=T0 + 2000)
        assert s.load_deploys() == [newer]
        failed = DeployEvent(
            "d1", "cart", "prod", NEW, T0, status="failed", status_at_unix_nano=T0, status_id=1
        )
        s.write_deploys([failed], received_at_unix_nano=T0)
        s.write_deploys([newer], received_at_unix_nano=T0 + 3000)  # unordered: older than any status
        assert s.load_deploys() == [failed]
    finally:
        s.command("DROP DATABASE IF EXISTS {db:Identifier}", {"db": s.database})
        s.close()
