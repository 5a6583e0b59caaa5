"""The ops endpoints of `prodloop run`: /readyz follows the broker and the store, /healthz does not;
/metrics behind a bearer token and TLS (service.metrics_bearer_token, metrics_tls_*_file).

The broker is the real Kafka broker of tests/integration/conftest.py (stopped and started for the
outage); the services are real `prodloop run` subprocesses on the embedded store.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.app.ops import OpsServer, Readiness
from collector.app.settings import load_settings
from collector.errors import ConfigError
from collector.processing.metrics import Metrics
from collector.receivers.auth import bearer_matches
from tests.integration.test_self_metrics import assert_stream_metrics
from tests.support.certs import self_signed
from tests.support.streaming import RunProcess, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-metrics-token-ab12"


def _get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(check: Callable[[], bool], timeout: float, what: str, tail: Callable[[], str] = str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s\n{tail()}")
        time.sleep(0.1)
    return time.monotonic() - t0


# -- OpsServer in process -----------------------------------------------------------------------


class _Broker:
    """A stand-in for collector.exporters.kafka.probe.BrokerProbe: the answer is set by the test."""

    def __init__(self) -> None:
        self.answer: str | None = None
        self.stopped = False

    def problem(self) -> str | None:
        return self.answer

    def stop(self) -> None:
        self.stopped = True


class _Pipeline:
    store_healthy = True


@pytest.fixture
def ops() -> Iterator[Callable[..., tuple[OpsServer, Readiness]]]:
    servers: list[OpsServer] = []

    def start(**kwargs: Any) -> tuple[OpsServer, Readiness]:
        ready = Readiness(ttl_s=kwargs.pop("ttl_s", 0.0))
        server = OpsServer("127.0.0.1", 0, Metrics().registry, ready, **kwargs)
        servers.append(server)
        return server, ready

    yield start
    for s in servers:
        s.stop()


def test_readyz_says_why_and_healthz_stays_up(ops: Callable[..., tuple[OpsServer, Readiness]]) -> None:
    server, ready = ops()
    base = f"http://127.0.0.1:{server.port}"
    assert _get(f"{base}/readyz") == (503, "not ready: starting\n")
    broker, pipeline = _Broker(), _Pipeline()
    ready.watch(pipeline=pipeline, broker=broker)
    ready.set()
    assert _get(f"{base}/readyz") == (200, "ready\n")
    broker.answer = "127.0.0.1:9092: Connection refused"
    assert _get(f"{base}/readyz") == (
        503,
        "not ready: broker unreachable (127.0.0.1:9092: Connection refused)\n",
    )
    assert _get(f"{base}/healthz") == (200, "ok\n")
    broker.answer = None
    pipeline.store_healthy = False
    code, body = _get(f"{base}/readyz")
    assert code == 503 and body.startswith("not ready: store unhealthy"), body
    assert _get(f"{base}/healthz") == (200, "ok\n")
    pipeline.store_healthy = True
    assert _get(f"{base}/readyz") == (200, "ready\n")
    ready.clear()
    assert _get(f"{base}/readyz") == (503, "not ready: stopping\n")
    ready.close()
    assert broker.stopped


def test_readiness_is_cached_for_its_ttl() -> None:
    now = [0.0]
    ready = Readiness(ttl_s=1.5, clock=lambda: now[0])
    broker = _Broker()
    ready.watch(broker=broker)
    ready.set()
    assert ready.problem() is None
    broker.answer = "down"
    now[0] = 1.4
    assert ready.problem() is None  # cached
    now[0] = 1.5
    assert ready.problem() == "broker unreachable (down)"


def test_metrics_needs_the_bearer_token_when_one_is_set(
    ops: Callable[..., tuple[OpsServer, Readiness]],
) -> None:
    open_server, _ = ops()
    assert _get(f"http://127.0.0.1:{open_server.port}/metrics")[0] == 200
    server, ready = ops(bearer_token=TOKEN)
    base = f"http://127.0.0.1:{server.port}"
    code, body = _get(f"{base}/metrics")
    assert code == 401 and "no Authorization header" in body and TOKEN not in body
    assert _get(f"{base}/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert _get(f"{base}/metrics", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert _get(f"{base}/metrics", {"Authorization": TOKEN})[0] == 401
    code, body = _get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and "prodloop_records_in_total" in body
    assert _get(f"{base}/metrics", {"Authorization": f"bEaReR {TOKEN}"})[0] == 200  # scheme in any case
    # the probes stay open: the kubelet sends no token
    assert _get(f"{base}/healthz") == (200, "ok\n")
    ready.set()
    assert _get(f"{base}/readyz") == (200, "ready\n")


def test_bearer_matches() -> None:
    token = b"abc"
    assert bearer_matches("Bearer abc", token) and bearer_matches("  bearer   abc ", token)
    assert not bearer_matches(None, token) and not bearer_matches("", token)
    assert not bearer_matches("Bearer", token) and not bearer_matches("Bearer abcd", token)
    assert not bearer_matches("Token abc", token)


def test_metrics_over_tls(ops: Callable[..., tuple[OpsServer, Readiness]], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = load_settings(
        overrides={
            "service": {
                "metrics_port": 0,
                "metrics_bearer_token": TOKEN,
                "metrics_tls_cert_file": str(cert),
                "metrics_tls_key_file": str(key),
            }
        }
    )
    ready = Readiness()
    server = OpsServer.from_settings(settings.service, Metrics().registry, ready)
    try:
        assert server.tls
        ctx = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{server.port}"
        assert _get(f"{base}/metrics", context=ctx)[0] == 401
        code, body = _get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"}, ctx)
        assert code == 200 and "prodloop_records_in_total" in body
        assert _get(f"{base}/healthz", context=ctx) == (200, "ok\n")
        # plain HTTP to the TLS port gets no answer, and does not take the server down
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            _get(f"http://127.0.0.1:{server.port}/healthz")
        # a client that connects and never handshakes does not block the others
        with socket.create_connection(("127.0.0.1", server.port)):
            assert _get(f"{base}/healthz", context=ctx) == (200, "ok\n")
    finally:
        server.stop()


def test_metrics_tls_needs_both_files_and_readable_ones(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    for only in ({"metrics_tls_cert_file": str(cert)}, {"metrics_tls_key_file": str(key)}):
        settings = load_settings(overrides={"service": {"metrics_port": 0, **only}})
        with pytest.raises(ConfigError, match="must be set together") as err:
            OpsServer.from_settings(settings.service, Metrics().registry, Readiness())
        missing = "metrics_tls_key_file" if "metrics_tls_cert_file" in only else "metrics_tls_cert_file"
        assert f"service.{missing} is missing" in str(err.value)
    settings = load_settings(
        overrides={
            "service": {
                "metrics_port": 0,
                "metrics_tls_cert_file": str(tmp_path / "nope.pem"),
                "metrics_tls_key_file": str(key),
            }
        }
    )
    with pytest.raises(ConfigError, match=r"metrics_tls_cert_file .*nope\.pem.*No such file"):
        OpsServer.from_settings(settings.service, Metrics().registry, Readiness())
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    settings = load_settings(
        overrides={
            "service": {
                "metrics_port": 0,
                "metrics_tls_cert_file": str(tmp_path / "garbage.pem"),
                "metrics_tls_key_file": str(key),
            }
        }
    )
    with pytest.raises(ConfigError, match=r"metrics_tls_cert_file .*garbage\.pem"):
        OpsServer.from_settings(settings.service, Metrics().registry, Readiness())


# -- prodloop run -------------------------------------------------------------------------------


def test_run_serves_metrics_with_token_and_tls_and_never_prints_the_token(tmp_path: Path) -> None:
    """Direct mode (no Kafka): HTTPS /metrics with the token; the token is in no log and no config dump."""
    cert, key = self_signed(tmp_path)
    env = {
        "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
        "PRODLOOP_SERVICE__METRICS_BEARER_TOKEN": TOKEN,
        "PRODLOOP_SERVICE__METRICS_TLS_CERT_FILE": str(cert),
        "PRODLOOP_SERVICE__METRICS_TLS_KEY_FILE": str(key),
        "PRODLOOP_SERVICE__LOG_LEVEL": "DEBUG",
    }
    run = RunProcess(env, REPO, tmp_path / "run.log")
    ctx = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{run.port}"
    try:

        def ready() -> bool:
            assert run.alive(), run.log_tail()
            try:
                return _get(f"{base}/readyz", context=ctx)[0] == 200
            except OSError:
                return False

        _wait_for(ready, 60, "ready", run.log_tail)
        assert _get(f"{base}/metrics", context=ctx)[0] == 401
        assert _get(f"{base}/metrics", {"Authorization": "Bearer nope"}, ctx)[0] == 401
        code, body = _get(f"{base}/metrics", {"Authorization": f"Bearer {TOKEN}"}, ctx)
        assert code == 200 and "prodloop_receiver_requests_total" in body
        assert _get(f"{base}/healthz", context=ctx) == (200, "ok\n")
        assert run.terminate() == 0, run.log_tail()
    finally:
        run.close()
    log = run.log_path.read_text()
    assert "metrics and health on https://127.0.0.1" in log and "refused GET /metrics" in log, log[-3000:]
    assert TOKEN not in log
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
    dump = subprocess.run(
        [sys.executable, "-m", "collector.cli", "config"],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dump.returncode == 0, dump.stderr
    assert TOKEN not in dump.stdout + dump.stderr
    assert '"metrics_bearer_token": "**********"' in dump.stdout or "metrics_bearer_token: '**********'" in (
        dump.stdout
    ), dump.stdout


@pytest.fixture
def stream_env(kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path) -> dict[str, str]:
    from collector.demo.shop import demo_dir

    d = demo_dir()
    return {
        "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "PRODLOOP_KAFKA__TRACES_TOPIC": new_topic(2),
        "PRODLOOP_KAFKA__DEPLOYS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__INCIDENTS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(d / "CODEOWNERS"),
        "PRODLOOP_ATTRIBUTION__MODULES": str(d / "modules.yaml"),
    }


@pytest.mark.kafka
def test_readyz_follows_the_broker_and_healthz_does_not(
    kafka_broker: Any, stream_env: dict[str, str], tmp_path: Path
) -> None:
    if not kafka_broker.can_restart:
        pytest.skip("external broker: cannot stop it")  # only with PRODLOOP_KAFKA_BOOTSTRAP set
    run = RunProcess(stream_env, REPO, tmp_path / "run.log")
    base = f"http://127.0.0.1:{run.port}"
    bootstrap = kafka_broker.bootstrap

    def readyz() -> tuple[int, str]:
        assert run.alive(), run.log_tail()
        try:
            return _get(f"{base}/readyz")
        except OSError as exc:
            return 0, str(exc)

    healthz_codes: list[int] = []
    watching = threading.Event()

    def watch_healthz() -> None:  # liveness is sampled all along the outage
        while not watching.is_set():
            try:
                healthz_codes.append(_get(f"{base}/healthz")[0])
            except OSError:
                healthz_codes.append(0)
            time.sleep(0.2)

    try:
        _wait_for(lambda: readyz()[0] == 200, 60, "ready at start", run.log_tail)
        assert_stream_metrics(_get(f"{base}/metrics")[1])
        watcher = threading.Thread(target=watch_healthz, daemon=True)
        watcher.start()
        try:
            kafka_broker.stop()
            took = _wait_for(lambda: readyz()[0] == 503, 10, "503 after the broker stopped", run.log_tail)
            code, body = readyz()
            assert code == 503 and body.startswith(f"not ready: broker unreachable ({bootstrap}: "), body
            assert "Connection refused" in body, body
            time.sleep(3)  # it stays unready while the broker is down
            assert readyz()[0] == 503
        finally:
            kafka_broker.start()
        back = _wait_for(lambda: readyz()[0] == 200, 60, "ready after the broker came back", run.log_tail)
        watching.set()
        watcher.join(5)
        assert healthz_codes and set(healthz_codes) == {200}, healthz_codes
        print(f"/readyz 503 {took:.1f}s after the broker stopped, 200 again {back:.1f}s after it started")
        assert run.terminate() == 0, run.log_tail()
    finally:
        watching.set()
        run.close()
    log = run.log_path.read_text()
    assert "Kafka broker unreachable" in log and "Kafka broker answering again" in log, log[-3000:]
    json.loads(log.splitlines()[0])  # JSON logs


def test_an_unused_port_is_not_ready_in_a_probe() -> None:
    """The broker probe against a port nobody listens on names the server and the reason."""
    from collector.exporters.kafka.options import KafkaOptions
    from collector.exporters.kafka.probe import BrokerProbe

    nobody = f"127.0.0.1:{free_port()}"
    problem = BrokerProbe(KafkaOptions((nobody,))).probe()
    assert problem == f"{nobody}: Connection refused", problem
    # a listener that never answers: the probe gives up after its timeout
    with socket.create_server(("127.0.0.1", 0)) as silent:
        where = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        problem = BrokerProbe(KafkaOptions((where,)), timeout_s=0.5).probe()
        assert problem == f"{where}: timed out" and time.monotonic() - t0 < 2, problem
    # one that answers something else is no Kafka broker either
    with socket.create_server(("127.0.0.1", 0)) as other:
        where = f"127.0.0.1:{other.getsockname()[1]}"

        def answer() -> None:
            conn, _ = other.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        problem = BrokerProbe(KafkaOptions((nobody, where))).probe()
        t.join(5)
    assert problem == (
        f"{nobody}: Connection refused; {where}: answered something that is not a Kafka ApiVersions response"
    ), problem


@pytest.mark.kafka
def test_the_broker_probe_gets_a_kafka_answer(kafka_broker: Any) -> None:
    from collector.exporters.kafka.options import KafkaOptions
    from collector.exporters.kafka.probe import BrokerProbe

    probe = BrokerProbe(KafkaOptions((kafka_broker.bootstrap,)))
    assert probe.probe() is None
    probe.start()
    try:
        _wait_for(lambda: probe.problem() is None, 5, "first probe")
    finally:
        probe.stop()


@pytest.mark.kafka
def test_readyz_follows_the_store(kafka_broker: Any, new_topic: Callable[..., str], store: Any) -> None:
    """The real StreamPipeline on a store whose writes fail for a while (an outage): /readyz says
    the store is unhealthy until a write succeeds again; /healthz stays 200; nothing is lost."""
    from collector.app.attribution_files import load_attribution
    from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, demo_dir, generate
    from collector.exporters.kafka.consumer import EventReader, TraceConsumer
    from collector.exporters.kafka.options import KafkaOptions
    from collector.exporters.kafka.probe import BrokerProbe
    from collector.pipelines.stream import StreamConfig, StreamPipeline
    from collector.processing.batch import ProcessorConfig
    from tests.support.faults import FaultyStore
    from tests.support.streaming import produce, produce_deploys
    from tests.support.truth import assert_matches_truth

    traffic = generate(seed=5, minutes=3)
    traces, deploys, group = new_topic(2), new_topic(1), f"g-{uuid.uuid4().hex[:8]}"
    produce_deploys(kafka_broker.bootstrap, deploys, traffic.deploys)
    produce(kafka_broker.bootstrap, traces, traffic.requests, partitions=2)
    d = demo_dir()
    loaded = load_attribution(codeowners=d / "CODEOWNERS", modules=d / "modules.yaml")
    opts = KafkaOptions((kafka_broker.bootstrap,))
    faulty = FaultyStore(store)
    faulty.down()  # down from the first write
    pipeline = StreamPipeline(
        StreamConfig(
            group_id=group,
            batch_records=5,
            linger_ms=100,
            deploy_skew_ms=200,
            processing=ProcessorConfig(sample_rate_attribute=SAMPLE_RATE_ATTRIBUTE, trace_wait_ms=500),
            backoff_initial_s=0.05,
            backoff_max_s=0.5,
        ),
        lambda on_a, on_r: TraceConsumer(opts, traces, group, on_assigned=on_a, on_revoked=on_r),
        faulty,
        loaded.repositories,
        deploys=EventReader(opts, deploys),
    )
    ready = Readiness(ttl_s=0.0)
    ready.watch(pipeline=pipeline, broker=BrokerProbe(opts).start())
    ready.set()
    server = OpsServer("127.0.0.1", 0, pipeline.metrics.registry, ready)
    base = f"http://127.0.0.1:{server.port}"
    total = sum(1 for _ in traffic.requests)

    def committed() -> int:
        return sum(
            int(pipeline.metrics.value("prodloop_committed_offset", partition=str(i))) for i in range(2)
        )

    done = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not done.is_set() and committed() < total:
                pipeline.step(100)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        _wait_for(
            lambda: _get(f"{base}/readyz")[0] == 503 and faulty.failures > 0, 60, "unready in the outage"
        )
        _, body = _get(f"{base}/readyz")
        assert body == "not ready: store unhealthy (a write is failing and being retried)\n", body
        assert _get(f"{base}/healthz") == (200, "ok\n")
        faulty.up()
        _wait_for(lambda: _get(f"{base}/readyz") == (200, "ready\n"), 30, "ready after the outage")
        _wait_for(lambda: committed() >= total or not worker.is_alive(), 120, "consumed")
    finally:
        done.set()
        worker.join(timeout=60)
        server.stop()
        ready.close()
        pipeline.close()
        if pipeline.deploys is not None:
            pipeline.deploys.close()  # type: ignore[attr-defined]
    assert not errors, errors
    assert_matches_truth(store.query_modules(), traffic)
