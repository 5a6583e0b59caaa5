"""Direct mode with the write-ahead log: an acknowledged span survives ``kill -9``, and a
client's retry of a request whose answer was lost is not counted twice.

The real application (receiver_app) exports through the real OTLP/HTTP exporter, retrying
each batch until it is acknowledged, while `prodloop run` is killed with SIGKILL at random
points and restarted on the same log and store.  At the end the aggregates must equal the
application's ground truth exactly: sent = acknowledged = counted.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from collector.app.receivers import start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.exporters.wal.gateway import WalGateway
from collector.exporters.wal.log import WriteAheadLog
from tests.integration import receiver_app
from tests.integration.test_receiver_otlp import assert_rows_equal_truth
from tests.support.log_app import Generator, stored_exceptions, write_app
from tests.support.sdk_requests import Requests
from tests.support.streaming import RunProcess, free_port

pytestmark = pytest.mark.integration


class Collect(SpanExporter):
    """Takes the application's finished spans (the batches go out later, through the real exporter)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def send_until_acknowledged(spans: list[ReadableSpan], endpoint: str, *, batch: int, pause_s: float) -> int:
    """Export ``spans`` in batches through the real OTLP/HTTP exporter (which retries on its
    own), each again until the receiver acknowledges it (a client that loses nothing); returns
    the spans acknowledged."""
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5)
    acked = 0
    try:
        for i in range(0, len(spans), batch):
            chunk = spans[i : i + batch]
            deadline = time.monotonic() + 120
            while True:
                if exporter.export(chunk) is SpanExportResult.SUCCESS:
                    acked += len(chunk)
                    break
                assert time.monotonic() < deadline, "never acknowledged"
                time.sleep(0.1)
            time.sleep(pause_s)
    finally:
        exporter.shutdown()
    return acked


def _wait_listening(run: RunProcess, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.alive(), run.log_tail()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the receiver did not start: {run.log_tail()}")


def test_acknowledged_spans_survive_kill_9_and_retries_are_not_counted_twice(tmp_path: Path) -> None:
    modules, codeowners = receiver_app.write_config(tmp_path)
    http_port = free_port()
    dsn = f"chdb://{tmp_path / 'store'}"
    env = {
        "PRODLOOP_STORE__DSN": dsn,
        "PRODLOOP_ATTRIBUTION__MODULES": str(modules),
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(codeowners),
        "PRODLOOP_RECEIVER__HTTP_PORT": str(http_port),
        "PRODLOOP_RECEIVER__GRPC_ENABLED": "false",
        "PRODLOOP_RECEIVER__DURABILITY": "wal",
        "PRODLOOP_RECEIVER__WAL_DIR": str(tmp_path / "wal"),
        "PRODLOOP_AGGREGATION__TRACE_WAIT_MS": "300",
        "PRODLOOP_STREAM__WORKERS": "0",
    }
    runs: list[RunProcess] = []

    def start() -> RunProcess:
        run = RunProcess(env, tmp_path, tmp_path / f"run{len(runs)}.log")
        runs.append(run)
        _wait_listening(run, http_port)
        return run

    collect = Collect()
    truth = receiver_app.run_app(lambda: collect, requests=1200, seed=3)
    sent = sum(t.spans for t in truth.values())
    assert len(collect.spans) == sent
    rng = random.Random(11)
    result: list[int] = []
    try:
        run = start()
        client = threading.Thread(
            target=lambda: result.append(
                send_until_acknowledged(
                    collect.spans, f"http://127.0.0.1:{http_port}/v1/traces", batch=40, pause_s=0.05
                )
            )
        )
        client.start()
        kills = 0
        while client.is_alive() and kills < 8:
            time.sleep(rng.uniform(0.2, 1.0))
            run.kill()  # SIGKILL: no flush, no commit, answers in flight are lost
            kills += 1
            run = start()
        client.join(180)
        assert result, "the client did not finish"
        assert kills >= 5, f"the client finished after {kills} kills: make it slower"
        assert result[0] == sent
        deadline = time.monotonic() + 60
        while run.metrics().get('prodloop_consumer_lag{partition="0"}', 1) > 0 or not run.committed():
            assert time.monotonic() < deadline, run.log_tail()
            time.sleep(0.2)
        m = run.metrics()
        assert m["prodloop_wal_fsyncs_total"] > 0 and m["prodloop_wal_torn_tails_total"] >= 0
        assert run.terminate() == 0, run.log_tail()
    finally:
        for r in runs:
            r.close()
    store = ClickHouseStore(dsn, "prodloop")
    try:
        rows = store.query_modules()
    finally:
        store.close()
    assert sum(r["spans"] for r in rows) == sent
    assert_rows_equal_truth(rows, truth)


def test_a_full_log_answers_429_with_a_retry_delay(tmp_path: Path) -> None:
    logs = [
        WriteAheadLog(tmp_path / n, max_bytes=1 << 20) for n in ("traces", "logs", "deploys", "incidents")
    ]
    settings = Settings(receiver={"grpc_enabled": False, "http_port": 0, "retry_after_seconds": 4})
    receivers = start_receivers(settings, sink=WalGateway(*logs, retry_after_s=4))
    body = Requests().proto(
        [(1_700_000_000_000_000_000 + i, 1_700_000_000_000_100_000 + i) for i in range(2000)]
    )
    statuses: list[int] = []
    retry_after = ""
    try:
        for _ in range(40):
            req = urllib.request.Request(
                f"{receivers.http_url}/v1/traces", body, {"Content-Type": "application/x-protobuf"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    statuses.append(resp.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
                retry_after = exc.headers.get("Retry-After", "")
                break
    finally:
        receivers.stop(5)
        for wal in logs:
            wal.close()
    assert statuses[:-1] == [200] * (len(statuses) - 1) and len(statuses) > 1
    assert statuses[-1] == 429 and retry_after == "4"


def test_direct_mode_takes_v1_logs_through_the_log_and_counts_each_exception_once(tmp_path: Path) -> None:
    """Exceptions recorded as OTLP log records (the real SDK's OTLPLogExporter) are answered
    after the log records' fsync and counted on the module that threw them."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    root = tmp_path / "app"
    root.mkdir()
    mods = write_app(root)
    http_port = free_port()
    dsn = f"chdb://{tmp_path / 'store'}"
    run = RunProcess(
        {
            "PRODLOOP_STORE__DSN": dsn,
            "PRODLOOP_ATTRIBUTION__MODULES": str(root / "modules.yaml"),
            "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(root / "CODEOWNERS"),
            "PRODLOOP_RECEIVER__HTTP_PORT": str(http_port),
            "PRODLOOP_RECEIVER__GRPC_ENABLED": "false",
            "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "200",
            "PRODLOOP_STREAM__LINGER_MS": "100",
        },
        tmp_path,
        tmp_path / "run.log",
    )
    try:
        _wait_listening(run, http_port)
        acked: list[int] = []

        class Counting(OTLPLogExporter):
            def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
                result: LogRecordExportResult = super().export(batch)
                if result is LogRecordExportResult.SUCCESS:
                    acked.append(1)  # one request, one record of the log
                return result

        gen = Generator(mods, seed=8)
        endpoint = f"http://127.0.0.1:{http_port}/v1/logs"
        gen.emit(40, {s: Counting(endpoint=endpoint) for s in ("cart", "payments")})
        committed = tmp_path / "store.wal" / "logs" / "committed.json"
        deadline = time.monotonic() + 30
        while not committed.exists() or json.loads(committed.read_text())["offset"] < len(acked):
            assert time.monotonic() < deadline, run.log_tail()
            time.sleep(0.1)
        assert run.terminate() == 0, run.log_tail()
    finally:
        run.close()
    assert sum(gen.truth.values()) > 0
    assert stored_exceptions(dsn) == gen.truth
