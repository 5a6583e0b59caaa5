"""Static group membership (kafka.group_instance_id, KIP-345) with `prodloop run`, a real Kafka broker
and the embedded store.

A replica killed with SIGKILL and restarted under the same instance id gets its partitions back
at once instead of waiting for the broker to drop its dead predecessor (kafka.session_timeout_ms);
the result stays exact.  A replica that stops cleanly leaves the group (kafka.leave_group_on_stop),
so the others take its partitions at once, as with dynamic members.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, Traffic, demo_dir, generate
from tests.support.resume import kill_and_restart
from tests.support.streaming import RunProcess, end_offsets, produce, produce_deploys, wait_consumed
from tests.support.truth import assert_matches_truth

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@dataclass
class Group:
    bootstrap: str
    topics: dict[str, str]
    group: str
    tmp: Path
    procs: list[RunProcess] = field(default_factory=list)

    def start(self, name: str, store: str = "store", **extra: str) -> RunProcess:
        d = demo_dir()
        env = {
            "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "PRODLOOP_KAFKA__TRACES_TOPIC": self.topics["traces"],
            "PRODLOOP_KAFKA__DEPLOYS_TOPIC": self.topics["deploys"],
            "PRODLOOP_KAFKA__INCIDENTS_TOPIC": self.topics["incidents"],
            "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": self.topics["dlq"],
            "PRODLOOP_KAFKA__GROUP_ID": self.group,
            "PRODLOOP_STORE__DSN": f"chdb://{self.tmp / store}",
            "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(d / "CODEOWNERS"),
            "PRODLOOP_ATTRIBUTION__MODULES": str(d / "modules.yaml"),
            "PRODLOOP_ATTRIBUTION__SAMPLE_RATE_ATTRIBUTE": SAMPLE_RATE_ATTRIBUTE,
            "PRODLOOP_STREAM__DEPLOY_SKEW_MS": "200",
            "PRODLOOP_STREAM__LINGER_MS": "100",
            "PRODLOOP_STREAM__BATCH_RECORDS": "3",  # slow: still consuming when killed
            **extra,
        }
        proc = RunProcess(env, REPO, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def feed(self, traffic: Traffic) -> None:
        produce_deploys(self.bootstrap, self.topics["deploys"], traffic.deploys)
        produce(
            self.bootstrap, self.topics["traces"], traffic.requests, partitions=PARTITIONS, compression="lz4"
        )

    def wait_consumed(self, procs: list[RunProcess], timeout: float = 300) -> None:
        ends = end_offsets(self.bootstrap, self.topics["traces"], PARTITIONS)
        wait_consumed(self.bootstrap, self.group, self.topics["traces"], ends, timeout, procs)


@pytest.fixture
def group(kafka_broker: Any, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Group]:
    g = Group(
        bootstrap=kafka_broker.bootstrap,
        topics={
            "traces": new_topic(PARTITIONS),
            "deploys": new_topic(1),
            "incidents": new_topic(1),
            "dlq": new_topic(1),
        },
        group=f"g-{uuid.uuid4().hex[:8]}",
        tmp=tmp_path,
    )
    yield g
    for p in g.procs:
        p.close()


def test_a_killed_static_member_resumes_at_once_and_stays_exact(group: Group) -> None:
    big = generate(seed=21, minutes=12)
    group.feed(big)
    static = {"PRODLOOP_KAFKA__GROUP_INSTANCE_ID": "prodloop-0"}
    r = kill_and_restart(lambda name: group.start(name, **static), "static")
    print(
        f"restart -> joined {r.subscribed_s:.2f}s, assigned {r.assigned_s:.2f}s, first commit "
        f"{r.committed_s:.2f}s; waited in the group {r.assignment_wait_s:.2f}s"
    )
    # without static membership the wait is the dead member's session: ~9 s of the 10 s timeout
    assert r.assignment_wait_s < 3.0, r
    assert r.committed_s < 8.0, r
    restarted = group.procs[-1]
    group.wait_consumed([restarted])
    assert restarted.terminate() == 0, restarted.log_tail()
    assert_matches_truth(_query(group.tmp / "store"), big, quantiles=False)


def test_a_static_member_that_stops_cleanly_leaves_the_group_at_once(group: Group) -> None:
    group.feed(generate(seed=22, minutes=6))
    # a long session: had b not left, a would get b's partitions only after it (30 s)
    common = {"PRODLOOP_KAFKA__SESSION_TIMEOUT_MS": "30000"}
    a = group.start("a", PRODLOOP_KAFKA__GROUP_INSTANCE_ID="prodloop-a", **common)
    b = group.start("b", store="store-b", PRODLOOP_KAFKA__GROUP_INSTANCE_ID="prodloop-b", **common)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ma, mb = a.metrics(), b.metrics()
        if ma.get("prodloop_partitions_assigned", 0) >= 1 and mb.get("prodloop_partitions_assigned", 0) >= 1:
            break
        assert a.alive() and b.alive(), (a.log_tail(), b.log_tail())
        time.sleep(0.2)
    else:
        raise AssertionError(f"both never consumed:\n{a.log_tail()}\n{b.log_tail()}")
    assert b.terminate() == 0, b.log_tail()
    stopped = time.monotonic()
    assert "left group" in b.log_path.read_text(), b.log_tail()
    while a.metrics().get("prodloop_partitions_assigned", 0) < PARTITIONS:
        assert time.monotonic() - stopped < 10, a.log_tail()
        time.sleep(0.1)
    print(f"a had all {PARTITIONS} partitions {time.monotonic() - stopped:.2f}s after b stopped")
    assert a.terminate() == 0, a.log_tail()


def test_two_replicas_with_one_instance_id_fail_naming_it(group: Group) -> None:
    group.feed(generate(seed=23, minutes=2))
    same = {"PRODLOOP_KAFKA__GROUP_INSTANCE_ID": "prodloop-dup", "PRODLOOP_STREAM__BATCH_RECORDS": "200"}
    first = group.start("first", **same)
    group.wait_consumed([first], timeout=120)
    second = group.start("second", store="store-2", **same)
    deadline = time.monotonic() + 60
    while second.metrics().get("prodloop_partitions_assigned", 0) < 1:  # it takes the id over
        assert time.monotonic() < deadline and second.alive(), second.log_tail()
        time.sleep(0.2)
    # the broker fenced the older member: it stops with the configuration error at its next commit
    group.feed(generate(seed=24, minutes=2))
    assert first.wait(60) == 2, first.log_tail()
    log = first.log_path.read_text()
    assert (
        "kafka.group_instance_id 'prodloop-dup' (PRODLOOP_KAFKA__GROUP_INSTANCE_ID) is used by another" in log
    ), log[-3000:]
    assert "left group" not in log  # it did not remove the member that took its id over
    group.wait_consumed([second], timeout=120)
    assert second.terminate() == 0, second.log_tail()


def _query(store: Path) -> list[dict[str, Any]]:
    import json
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "query",
            "modules",
            "--store",
            f"chdb://{store}",
            "--by",
            "commit,owners",  # the ground truth is per owners and commit
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows
