"""`prodloop run` with Kafka: the gateway receivers beside the stream pipeline, in one process.

Real SDK exporters (OTLP/gRPC and OTLP/HTTP) -> the process's receivers -> the traces topic
-> the same process's pipeline -> the store.  Deploys posted to ``/v1/deploys`` and a signed
GitHub ``deployment_status`` webhook go to the deploys topic and tag the spans that start
after them.  The ground truth is the generator's: which module each span belongs to, whether
it failed, and which deploy was live when it started.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from tests.conftest import REPO, run_prodloop
from tests.integration import receiver_app
from tests.integration.receiver_app import Loc, Truth, TruthKey
from tests.integration.test_receiver_otlp import assert_rows_equal_truth
from tests.support.streaming import RunProcess, end_offsets, free_port, wait_consumed

if TYPE_CHECKING:
    from .conftest import KafkaBroker

pytestmark = pytest.mark.integration  # `kafka` is added to the tests that use the broker

S = 1_000_000_000
START = receiver_app.START_UNIX_NANO  # 2026-03-01T00:00:00Z
DEPLOYED_AT = START + 60 * S  # both deploys
DEPLOYED_AT_ISO = datetime.fromtimestamp(DEPLOYED_AT // S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
AFTER = START + 120 * S  # the second phase's spans start here
CART_SHA = "0123456789abcdef0123456789abcdef01234567"
PAYMENTS_SHA = "fedcba9876543210fedcba9876543210fedcba98"
SECRET = "webhook-secret-for-tests"
PARTITIONS = 3

# no commit in the resources (service.version is not a SHA): the deploy timeline decides
RESOURCES = {
    "cart": {"service.name": "cart", "service.version": "2.4.0", "deployment.environment.name": "prod"},
    "payments": {"service.name": "payments", "deployment.environment.name": "prod"},
}


@dataclass
class Phase:
    """Spans of both services, each through its own exporter; truth keyed with ``commits``."""

    commits: dict[str, str]
    start: int
    requests: int = 120
    seed: int = 11
    truth: dict[TruthKey, Truth] = field(default_factory=dict)

    def run(self, exporters: dict[str, SpanExporter]) -> dict[TruthKey, Truth]:
        rng = random.Random(self.seed)
        providers = {}
        for service, exporter in exporters.items():
            p = TracerProvider(resource=Resource(RESOURCES[service]), shutdown_on_exit=False)
            p.add_span_processor(
                BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=50)
            )
            providers[service] = p
        tracers = {s: p.get_tracer("app", "1.0") for s, p in providers.items()}

        def span(service: str, name: str, loc: Loc, start: int, parent: Context | None) -> Context:
            duration = int(rng.lognormvariate(15.0, 0.8))
            error = rng.random() < 0.1
            sp = tracers[service].start_span(
                name,
                context=parent or Context(),
                kind=SpanKind.INTERNAL,
                attributes=loc.attrs,
                start_time=start,
            )
            if error:
                sp.set_status(Status(StatusCode.ERROR, "boom"))
            sp.end(end_time=start + duration)
            key = (service, "prod", loc.module, loc.owners, self.commits[service])
            self.truth.setdefault(key, Truth()).add(duration, error)
            return set_span_in_context(sp, Context())

        try:
            for i in range(self.requests):
                t = self.start + i * 37_000_000
                if i % 3:
                    ctx = span("cart", "GET /api/cart/{id}", receiver_app.CART_API, t, None)
                    span("cart", "load_cart", receiver_app.CART_STORE, t + 1000, ctx)
                    span("cart", "retry", receiver_app.UTIL, t + 2000, ctx)
                    if i % 5 == 0:
                        span("cart", "GET", receiver_app.EXTERNAL, t + 3000, ctx)
                else:
                    ctx = span("payments", "Authorize", receiver_app.NOWHERE, t, None)
                    span("payments", "charge", receiver_app.GATEWAY, t + 1000, ctx)
                    span("payments", "post", receiver_app.LEDGER, t + 2000, ctx)
        finally:
            for p in providers.values():
                p.shutdown()  # flushes: every export was answered, so the broker acked it
        return self.truth


def _grpc(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)


def _http(url: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{url}/v1/traces")


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


@dataclass
class Service:
    proc: RunProcess
    info_file: Path
    store: str
    bootstrap: str
    group: str
    traces: str
    info: dict[str, Any] = field(default_factory=dict)

    def wait_started(self) -> None:
        deadline = time.monotonic() + 90
        while not self.info_file.exists():
            assert self.proc.alive(), f"prodloop run exited:\n{self.proc.log_tail()}"
            assert time.monotonic() < deadline, f"no receivers advertised:\n{self.proc.log_tail()}"
            time.sleep(0.1)
        self.info = json.loads(self.info_file.read_text())

    def wait_consumed(self) -> None:
        ends = end_offsets(self.bootstrap, self.traces, PARTITIONS)
        wait_consumed(self.bootstrap, self.group, self.traces, ends, 120, [self.proc])


@pytest.fixture
def service(kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Service]:
    modules, codeowners = receiver_app.write_config(tmp_path)
    traces = new_topic(PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    store = f"chdb://{tmp_path / 'store'}"
    env = {
        "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "PRODLOOP_KAFKA__TRACES_TOPIC": traces,
        "PRODLOOP_KAFKA__DEPLOYS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__INCIDENTS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__GROUP_ID": group,
        "PRODLOOP_STORE__DSN": store,
        "PRODLOOP_ATTRIBUTION__MODULES": str(modules),
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(codeowners),
        "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "200",
        "PRODLOOP_STREAM__LINGER_MS": "100",
        "PRODLOOP_STREAM__WORKERS": "0",
        "PRODLOOP_SERVICE__GRACE_SECONDS": "20",
        "PRODLOOP_RECEIVER__GITHUB_WEBHOOK_SECRET": SECRET,
        "PRODLOOP_RECEIVER__GATEWAY_ACK_TIMEOUT_SECONDS": "15",
    }
    proc = RunProcess(
        env,
        REPO,
        tmp_path / "run.log",
        args=["--receiver-mode", "gateway", "--grpc-port", "0", "--http-port", "0"],
    )
    s = Service(proc, tmp_path / "store.prodloop-service.json", store, kafka_broker.bootstrap, group, traces)
    try:
        yield s
    finally:
        proc.close()


def _github_delivery(url: str, payload: dict[str, Any], secret: str) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _post(
        f"{url}/v1/webhooks/github",
        body,
        {
            "X-GitHub-Event": "deployment_status",
            "X-GitHub-Delivery": uuid.uuid4().hex,
            "X-Hub-Signature-256": sig,
        },
    )


def test_run_with_kafka_receives_through_the_gateway_and_deploys_tag_later_spans(service: Service) -> None:
    service.wait_started()
    grpc_endpoint, http_url = service.info["grpc"], service.info["url"]

    # before any deploy: no commit is known for either service
    first = Phase({"cart": "", "payments": ""}, START)
    assert first.start + first.requests * 37_000_000 < DEPLOYED_AT < AFTER
    before = first.run({"cart": _grpc(grpc_endpoint), "payments": _http(http_url)})
    service.wait_consumed()

    status, body = _post(
        f"{http_url}/v1/deploys",
        json.dumps(
            {
                "deploy_id": "cart-42",
                "service": "cart",
                "environment": "prod",
                "commit_sha": CART_SHA,
                "deployed_at": DEPLOYED_AT_ISO,
            }
        ).encode(),
        {},
    )
    assert (status, body) == (200, {"accepted": 1})
    github = {
        "action": "created",
        "deployment_status": {
            "state": "success",
            "updated_at": DEPLOYED_AT_ISO,
            "environment": "prod",
        },
        "deployment": {
            "id": 77,
            "sha": PAYMENTS_SHA,
            "environment": "prod",
            "payload": {"service": "payments"},
        },
        "repository": {"full_name": "acme/app", "name": "app", "html_url": receiver_app.REPOSITORY},
    }
    assert _github_delivery(http_url, github, "not-the-secret")[0] == 401
    status, body = _github_delivery(http_url, github, SECRET)
    assert (status, body) == (200, {"accepted": 1, "deploy_id": "github:acme/app:77", "status": "succeeded"})

    # after both deploys: their commits, the protocols swapped
    after = Phase({"cart": CART_SHA, "payments": PAYMENTS_SHA}, AFTER, seed=12).run(
        {"cart": _http(http_url), "payments": _grpc(grpc_endpoint)}
    )
    service.wait_consumed()

    truth = {**before, **after}
    assert len(truth) == len(before) + len(after), "the phases' keys differ by commit"
    rows = _get_json(f"{http_url}/api/v1/modules?by=commit,owners")  # this process answers from its own store
    assert_rows_equal_truth(rows, truth)
    assert {r["commit_sha"] for r in rows} == {"", CART_SHA, PAYMENTS_SHA}
    only = _get_json(f"{http_url}/api/v1/modules?service=payments&by=commit,owners")
    assert sorted(json.dumps(r, sort_keys=True) for r in only) == sorted(
        json.dumps(r, sort_keys=True) for r in rows if r["service"] == "payments"
    )

    m = service.proc.metrics()
    total = sum(t.spans for t in truth.values())
    assert m["prodloop_spans_in_total"] == total
    assert m["prodloop_deploys_in_total"] == 2
    assert m["prodloop_gateway_records_produced_total"] >= 2 + 2  # traces and the two deploys

    # the embedded store is held: `prodloop query` finds this process and asks it
    res = run_prodloop(
        "query", "modules", "--store", service.store, "--format", "json", "--by", "commit,owners"
    )
    assert res.returncode == 0, res.stderr
    assert "asking it at " + http_url in res.stderr
    assert json.loads(res.stdout) == rows

    assert service.proc.terminate() == 0, service.proc.log_tail()
    log_text = service.proc.log_path.read_text()
    assert log_text.index("stopping: the receivers") < log_text.index("stopping: flushing")
    assert not service.info_file.exists(), "the service file is removed on a clean stop"
    res = run_prodloop(
        "query", "modules", "--store", service.store, "--format", "json", "--by", "commit,owners"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == rows


def test_run_with_kafka_refuses_direct_receivers(tmp_path: Path) -> None:
    res = run_prodloop(
        "run",
        "--receiver-mode",
        "direct",
        env={
            "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
            "PRODLOOP_SERVICE__METRICS_PORT": "0",
        },
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert "receiver.mode is direct" in res.stderr and "kafka.bootstrap_servers" in res.stderr


def test_run_with_kafka_names_the_receiver_port_it_cannot_listen_on(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = RunProcess(
            {
                "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
                "PRODLOOP_KAFKA__TRACES_TOPIC": new_topic(1),
                "PRODLOOP_KAFKA__DEPLOYS_TOPIC": new_topic(1),
                "PRODLOOP_KAFKA__INCIDENTS_TOPIC": new_topic(1),
                "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": new_topic(1),
                "PRODLOOP_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
                "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
                "PRODLOOP_STREAM__WORKERS": "0",
            },
            REPO,
            tmp_path / "run.log",
            args=["--grpc-port", str(port)],
        )
        try:
            assert proc.wait(timeout=60) == 2
        finally:
            proc.close()
    log_text = proc.log_path.read_text()
    assert f"cannot listen for OTLP/gRPC on 127.0.0.1:{port}" in log_text
    assert "receiver.grpc_enabled" in log_text
