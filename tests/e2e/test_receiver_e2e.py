"""End to end: the receivers as `prodloop run` starts them without Kafka (direct mode on the
embedded chDB store, in their own process), the real OTLP exporter, and `prodloop query`
reaching the running service because the store is locked - then the same answer from the
store itself once the service stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_prodloop
from tests.integration import receiver_app
from tests.integration.test_receiver_otlp import assert_rows_equal_truth

pytestmark = pytest.mark.e2e

SERVICE = """\
import logging, signal, sys, threading
from collector.app.receivers import run_receivers_forever
from collector.app.settings import load_settings
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
run_receivers_forever(load_settings(), stop)
"""


class Service:
    def __init__(self, tmp: Path) -> None:
        modules, codeowners = receiver_app.write_config(tmp)
        self.store = f"chdb://{tmp / 'store'}"
        self.info_file = tmp / "store.prodloop-service.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
        env.update(
            {
                "PRODLOOP_STORE__DSN": self.store,
                "PRODLOOP_ATTRIBUTION__MODULES": str(modules),
                "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(codeowners),
                "PRODLOOP_RECEIVER__GRPC_PORT": "0",
                "PRODLOOP_RECEIVER__HTTP_PORT": "0",
                "PRODLOOP_RECEIVER__FLUSH_INTERVAL_SECONDS": "0.5",
            }
        )
        self.log = tmp / "service.log"
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVICE], cwd=REPO, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not self.info_file.exists():
            assert self.proc.poll() is None, f"the service exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"the service did not start: {self.log.read_text()}"
            time.sleep(0.1)
        self.info: dict[str, Any] = json.loads(self.info_file.read_text())

    def query(self, *extra: str) -> list[dict[str, Any]]:
        res = run_prodloop("query", "modules", "--store", self.store, "--format", "json", *extra)
        assert res.returncode == 0, res.stderr
        rows: list[dict[str, Any]] = json.loads(res.stdout)
        return rows

    def close(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        self._log_fh.close()
        return rc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    try:
        yield s
    finally:
        s.close(signal.SIGKILL)


def _wait_for(service: Service, total: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        rows = service.query()
        if sum(r["spans"] for r in rows) >= total or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_run_without_kafka_receives_and_query_goes_through_the_service(service: Service) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    truth = receiver_app.run_app(
        lambda: OTLPSpanExporter(endpoint=f"http://{service.info['grpc']}", insecure=True), requests=120
    )
    total = sum(t.spans for t in truth.values())
    rows = _wait_for(service, total)  # the store is locked: `prodloop query` asks the service
    assert_rows_equal_truth(rows, truth)
    res = run_prodloop("query", "modules", "--store", service.store, "--format", "json")
    assert "asking it at http://127.0.0.1:" in res.stderr
    assert service.query("--url", service.info["url"], "--service", "payments") == [
        r for r in rows if r["service"] == "payments"
    ]
    assert service.close() == 0
    assert not service.info_file.exists(), "the service file is removed on a clean stop"
    # the store itself, now that it is free; the clean stop completed the traces still buffered,
    # so only self time moved on (and with it the order, by self time): every span has it now
    final = service.query()
    assert sorted(map(_but_self_time, final), key=_key) == sorted(map(_but_self_time, rows), key=_key)
    assert all(r["self_spans"] == r["spans"] for r in final), final


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["service"], row["environment"], row["module"])


def _but_self_time(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in row.items()
        if not k.startswith("self_") and k not in ("own_errors", "own_error_rate")
    }


def test_locked_store_without_a_service_says_what_to_do(service: Service) -> None:
    service.info_file.unlink()  # as if the service had not advertised itself
    res = run_prodloop("query", "modules", "--store", service.store, "--format", "json")
    assert res.returncode == 3
    assert "--url" in res.stderr and "prodloop run" in res.stderr


def test_a_crash_keeps_what_was_flushed(service: Service) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    truth = receiver_app.run_app(
        lambda: OTLPSpanExporter(endpoint=f"{service.info['url']}/v1/traces"), requests=60
    )
    rows = _wait_for(service, sum(t.spans for t in truth.values()))
    assert service.close(signal.SIGKILL) == -signal.SIGKILL
    assert service.query() == rows  # flushed before the crash: all there


def test_prodloop_run_without_kafka_exports_the_receiver_counters(tmp_path: Path) -> None:
    """`prodloop run` with nothing configured but its receiver flags: /metrics shows what the
    receivers took in."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from tests.support.streaming import RunProcess

    modules, codeowners = receiver_app.write_config(tmp_path)
    run = RunProcess(
        {
            "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
            "PRODLOOP_ATTRIBUTION__MODULES": str(modules),
            "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(codeowners),
            "PRODLOOP_RECEIVER__FLUSH_INTERVAL_SECONDS": "0.5",
            "PRODLOOP_RECEIVER__DURABILITY": "memory",  # the in-memory path's counters
        },
        REPO,
        tmp_path / "run.log",
        args=["--receiver-mode", "direct", "--grpc-port", "0", "--http-port", "0", "--listen", "127.0.0.1"],
    )
    try:
        info_file = tmp_path / "store.prodloop-service.json"
        deadline = time.monotonic() + 60
        while not info_file.exists():
            assert run.alive(), run.log_tail()
            assert time.monotonic() < deadline, run.log_tail()
            time.sleep(0.1)
        info = json.loads(info_file.read_text())
        grpc_addr = info["grpc"]
        host, port = grpc_addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) not in (0, 4317)  # --listen, --grpc-port 0
        truth = receiver_app.run_app(
            lambda: OTLPSpanExporter(endpoint=f"http://{grpc_addr}", insecure=True), requests=60
        )
        total = sum(t.spans for t in truth.values())
        deadline = time.monotonic() + 60
        m = run.metrics()
        while m.get("prodloop_direct_rows_written_total", 0) == 0 or (
            m.get("prodloop_direct_spans_aggregated_total", 0) < total
        ):
            assert time.monotonic() < deadline, run.log_tail()
            time.sleep(0.2)
            m = run.metrics()
        assert m["prodloop_receiver_spans_accepted_total"] == total
        assert m["prodloop_direct_spans_aggregated_total"] == total
        assert m["prodloop_receiver_requests_total"] > 0
        assert m["prodloop_receiver_spans_rejected_total"] == 0
        assert m["prodloop_receiver_requests_refused_total"] == 0
        assert m["prodloop_direct_flushes_total"] >= 1
        assert abs(m["prodloop_direct_last_flush_timestamp_seconds"] - time.time()) < 60
        attributed = m["prodloop_direct_spans_attributed_total"]
        unattributed = sum(
            v for k, v in m.items() if k.startswith("prodloop_direct_spans_unattributed_total{")
        )
        assert attributed + unattributed == total
        assert (
            unattributed
            == sum(t.spans for key, t in truth.items() if key[2] == receiver_app.UNATTRIBUTED)
            > 0
        )
        assert attributed == sum(t.spans for key, t in truth.items() if key[2] != receiver_app.UNATTRIBUTED)
        assert run.terminate() == 0
    finally:
        if run.alive():
            run.proc.kill()
