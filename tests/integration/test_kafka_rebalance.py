"""The traces consumer's group membership on the real broker: a rebalance it starts always ends
with partitions, however short its polls; a fresh member joins once, not twice; a partition
assigned again starts unpaused.

kafka-python 3.0.12 abandoned a rebalance started for a metadata change when the JoinGroup and
SyncGroup outlasted the poll that sent them: the member then stayed without partitions until the
broker expired it, and said nothing (collector/exporters/kafka/consumer.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kafka.admin import NewPartitions

from collector.exporters.kafka.consumer import TraceConsumer
from collector.exporters.kafka.options import KafkaOptions
from tests.integration.conftest import KafkaBroker, kafka_admin
from tests.support.streaming import produce

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


class _Events:
    def __init__(self) -> None:
        self.assigned: list[list[int]] = []
        self.revoked: list[list[int]] = []

    def consumer(self, bootstrap: str, topic: str) -> TraceConsumer:
        return TraceConsumer(
            KafkaOptions((bootstrap,)),
            topic,
            f"g-{uuid.uuid4().hex[:8]}",
            on_assigned=self.assigned.append,
            on_revoked=self.revoked.append,
        )


def _add_partition(c: TraceConsumer, bootstrap: str, topic: str, total: int) -> None:
    with kafka_admin(bootstrap) as admin:
        admin.create_partitions({topic: NewPartitions(total_count=total)})
    # the leader notices new partitions on its next metadata refresh (metadata_max_age_ms, 30 s)
    c._c._client.cluster.request_update()


def _poll_until(c: TraceConsumer, poll_ms: int, want: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while c.assignment() != want:
        assert time.monotonic() < deadline, f"assignment {c.assignment()}, not {want}, after {timeout_s}s"
        c.poll(poll_ms)


def test_a_rebalance_for_added_partitions_finishes_though_each_poll_is_shorter_than_it(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str]
) -> None:
    """Polls of 1 ms, far shorter than a JoinGroup and SyncGroup: a busy loop (poll(0)), or a
    broker slowed by load.  Without the fix the member hangs with no partitions after the
    partitions are added (5 runs out of 5 against the test broker)."""
    topic = new_topic(2)
    events = _Events()
    c = events.consumer(kafka_broker.bootstrap, topic)
    try:
        _poll_until(c, 1, [0, 1], 30)
        _add_partition(c, kafka_broker.bootstrap, topic, 3)
        _poll_until(c, 1, [0, 1, 2], 30)
        # the eager protocol revokes everything, then assigns
        assert events.revoked[-1] == [0, 1] and events.assigned[-1] == [0, 1, 2]
    finally:
        c.close()


def test_a_new_member_joins_once(kafka_broker: KafkaBroker, new_topic: Callable[..., str]) -> None:
    """The leader's first assignment is made from current metadata, so the refresh that follows
    it starts no second rebalance (which revoked what the member had just begun to read)."""
    topic = new_topic(2)
    events = _Events()
    c = events.consumer(kafka_broker.bootstrap, topic)
    try:
        _poll_until(c, 100, [0, 1], 30)
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            c.poll(100)
        assert c.assignment() == [0, 1]
        assert events.assigned == [[0, 1]] and [r for r in events.revoked if r] == []
    finally:
        c.close()


def test_a_partition_assigned_again_starts_unpaused(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str]
) -> None:
    """kafka-python keeps the paused flag of a partition that one rebalance revokes and assigns
    again.  The pipeline starts such a partition afresh, unpaused (it paused it during a store
    retry that ended in between): it must be fetched again, not stay silent for good."""
    topic = new_topic(2)
    produce(kafka_broker.bootstrap, topic, [b"opaque"] * 4, partitions=2)
    events = _Events()
    c = events.consumer(kafka_broker.bootstrap, topic)
    try:
        _poll_until(c, 100, [0, 1], 30)
        c.pause([0, 1])
        _add_partition(c, kafka_broker.bootstrap, topic, 3)
        _poll_until(c, 100, [0, 1, 2], 30)
        for p in (0, 1):
            c.seek(p, 0)  # as the pipeline does on an assignment
        fetched: set[int] = set()
        deadline = time.monotonic() + 10
        while fetched != {0, 1} and time.monotonic() < deadline:
            fetched |= {r.partition for r in c.poll(100)}
        assert fetched == {0, 1}, f"fetched from {sorted(fetched)} only, after {events.assigned}"
    finally:
        c.close()
