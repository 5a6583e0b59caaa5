"""Exceptions recorded as OTLP log records, through the logs topic of `prodloop run` (Kafka mode).

The application (:mod:`tests.support.log_app`) is real Python files under a source root that
raise, and the real SDK records the exceptions with their stack traces.  The ground truth is
the generator's: which file raised how many times, of which type.  Records reach the logs topic produced directly (as the
Collector's kafka exporter writes ``otlp_logs``) or through the gateway's ``/v1/logs``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from tests.conftest import REPO
from tests.support.log_app import Generator, Truth, requests_of, stored_exceptions, write_app
from tests.support.streaming import RunProcess, end_offsets, produce, wait_consumed

if TYPE_CHECKING:
    from .conftest import KafkaBroker

pytestmark = pytest.mark.integration

PARTITIONS = 2


@dataclass
class Setup:
    bootstrap: str
    logs: str
    dlq: str
    group: str
    tmp: Path
    env: dict[str, str]
    mods: dict[str, ModuleType]
    procs: list[RunProcess] = field(default_factory=list)

    def start(self, name: str, **extra: str) -> RunProcess:
        proc = RunProcess({**self.env, **extra}, REPO, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def wait(self, proc: RunProcess) -> None:
        ends = end_offsets(self.bootstrap, self.logs, PARTITIONS)
        wait_consumed(self.bootstrap, f"{self.group}-logs", self.logs, ends, 60, [proc])

    def exceptions(self) -> Truth:
        return stored_exceptions(self.env["PRODLOOP_STORE__DSN"])


@pytest.fixture
def setup(kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Setup]:
    root = tmp_path / "app"
    root.mkdir()
    mods = write_app(root)
    logs, dlq, group = new_topic(PARTITIONS), new_topic(1), f"g-{uuid.uuid4().hex[:8]}"
    env = {
        "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "PRODLOOP_KAFKA__TRACES_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__LOGS_TOPIC": logs,
        "PRODLOOP_KAFKA__DEPLOYS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__INCIDENTS_TOPIC": new_topic(1),
        "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": dlq,
        "PRODLOOP_KAFKA__GROUP_ID": group,
        "PRODLOOP_STORE__DSN": f"chdb://{tmp_path / 'store'}",
        "PRODLOOP_ATTRIBUTION__MODULES": str(root / "modules.yaml"),
        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(root / "CODEOWNERS"),
        "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "200",
        "PRODLOOP_STREAM__LINGER_MS": "100",
        "PRODLOOP_STREAM__WORKERS": "0",
        "PRODLOOP_SERVICE__GRACE_SECONDS": "20",
        "PRODLOOP_KAFKA__SESSION_TIMEOUT_MS": "3000",  # the crashed member leaves the group sooner
    }
    s = Setup(kafka_broker.bootstrap, logs, dlq, group, tmp_path, env, mods)
    yield s
    for proc in s.procs:
        proc.close()


def test_exceptions_on_the_logs_topic_count_once_on_the_throwing_module_across_a_crash(setup: Setup) -> None:
    gen = Generator(setup.mods, seed=3)
    cart, payments = InMemoryLogRecordExporter(), InMemoryLogRecordExporter()
    gen.emit(120, {"cart": cart, "payments": payments})
    values = requests_of(cart, 4) + requests_of(payments, 4)
    values.insert(5, b"\x0a\xff\xff not protobuf")  # a bad record: dead-lettered, the rest counted
    produce(setup.bootstrap, setup.logs, values, partitions=PARTITIONS)

    # killed after writing its second batch, before committing it: the restart replays that batch
    crashed = setup.start(
        "crash",
        PRODLOOP_TESTING_HOOKS=json.dumps({"crash_at": "after_write:2"}),
        PRODLOOP_STREAM__BATCH_RECORDS="3",
    )
    assert crashed.wait(timeout=60) == 137, crashed.log_tail()
    again = setup.start("again", PRODLOOP_STREAM__BATCH_RECORDS="5")
    setup.wait(again)
    assert again.terminate() == 0, again.log_tail()

    assert setup.exceptions() == gen.truth
    assert end_offsets(setup.bootstrap, setup.dlq, 1) == {0: 1}


def test_the_gateway_takes_v1_logs_to_the_logs_topic(setup: Setup) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    run = setup.start("gateway", PRODLOOP_RECEIVER__MODE="gateway")
    info_file = setup.tmp / "store.prodloop-service.json"
    deadline = time.monotonic() + 60
    while not info_file.exists():
        assert run.alive() and time.monotonic() < deadline, run.log_tail()
        time.sleep(0.1)
    url: str = json.loads(info_file.read_text())["url"]
    gen = Generator(setup.mods, seed=8)
    gen.emit(40, {s: OTLPLogExporter(endpoint=f"{url}/v1/logs") for s in ("cart", "payments")})
    # every export was answered after the broker's ack: the records are on the topic
    ends = end_offsets(setup.bootstrap, setup.logs, PARTITIONS)
    assert sum(ends.values()) > 0
    setup.wait(run)
    assert run.terminate() == 0, run.log_tail()
    assert setup.exceptions() == gen.truth
