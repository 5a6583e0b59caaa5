"""Helpers for streaming tests and benchmarks: topics, producing shop traffic, running `prodloop run`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "read_text is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    import collector.exporters.kafka.compat  # noqa: F401  (applies the kafka-python socket fix)

REPO = Path(__file__).resolve().parents[2]


def start_broker(tmp: Path, **options: Any) -> tuple[str, Any | None]:
    """For the benches: ``PRODLOOP_KAFKA_BOOTSTRAP``'s broker, or a fresh one from
    scripts/kafka_broker.py under ``tmp`` (``options`` go to its ``Broker``).  Returns the
    bootstrap address and the broker to stop (None when external)."""
    external = os.environ.get("PRODLOOP_KAFKA_BOOTSTRAP")
    if external:
        return external, None
    spec = importlib.util.spec_from_file_location("kafka_broker", REPO / "scripts" / "kafka_broker.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = mod
    spec.loader.exec_module(mod)
    broker = mod.Broker(tmp / "kafka", **options)
    broker.start()
    return broker.bootstrap, broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        while time.monotonic() < deadline:
            if all(len(c.partitions_for_topic(t) or ()) == n for t, n in topics.items()):
                return
            time.sleep(0.1)
    finally:
        c.close()
    raise RuntimeError(f"topics {topics} not ready")


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    *,
    partitions: int = 1,
    compression: str | None = None,
    keys: Sequence[bytes | None] | None = None,
    partition_of: Sequence[int] | None = None,
) -> int:
    """Send ``values`` round-robin over ``partitions``, or each to its ``partition_of``."""
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        compression_type=compression,
        max_request_size=16 * 1024 * 1024,
        batch_size=1024 * 1024,
    )
    n = 0
    try:
        for i, v in enumerate(values):
            key = keys[i] if keys is not None else None
            part = partition_of[i] if partition_of is not None else i % partitions
            p.send(topic, value=v, key=key, partition=part)
            n += 1
        p.flush(60)
    finally:
        p.close()
    return n


def produce_deploys(bootstrap: str, topic: str, deploys: Iterable[dict[str, Any]]) -> None:
    produce(bootstrap, topic, (json.dumps(d).encode() for d in deploys))


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: int(o) for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


class RunProcess:
    """`prodloop run` in a subprocess, with its metrics endpoint.

    Its receivers listen on free ports (port 0) unless ``env`` or ``args`` say otherwise, so
    replicas on one machine do not collide on 4317/4318.  Its traces complete 1 s after their
    first record (``aggregation.trace_wait_ms``, 10 s by default) unless ``env`` says otherwise:
    the commits reach the end of an idle partition that much sooner.
    """

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
        full["PRODLOOP_RECEIVER__GRPC_PORT"] = full["PRODLOOP_RECEIVER__HTTP_PORT"] = "0"
        full["PRODLOOP_AGGREGATION__TRACE_WAIT_MS"] = "1000"
        full.update(env)
        full["PRODLOOP_SERVICE__METRICS_PORT"] = str(self.port)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", *args],
            cwd=cwd,
            env=full,
            stdout=self._log,
            stderr=self._log,
        )

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"^(\S+?)(\{.*\})?\s+(\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def committed(self, metrics: dict[str, float] | None = None) -> dict[int, int]:
        """Committed offset per partition, from ``metrics`` if already scraped."""
        out = {}
        for k, v in (self.metrics() if metrics is None else metrics).items():
            m = re.match(r'prodloop_committed_offset\{partition="(\d+)"\}', k)
            if m:
                out[int(m.group(1))] = int(v)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if not self._log.closed:
                self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        """Teardown: kill if still running, close the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def committed_group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: int(o.offset) for tp, o in offs.items() if tp.topic == topic}


def wait_consumed(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    timeout: float,
    procs: Sequence[RunProcess] = (),
) -> None:
    deadline = time.monotonic() + timeout
    got: dict[int, int] = {}
    while time.monotonic() < deadline:
        try:
            got = committed_group_offsets(bootstrap, group, topic)
        except Exception:
            got = {}
        if all(got.get(p, 0) >= e for p, e in ends.items()):
            return
        for pr in procs:
            if not pr.alive():
                raise AssertionError(f"prodloop run exited with {pr.proc.returncode}:\n{pr.log_tail()}")
        time.sleep(0.3)
    tails = "\n".join(p.log_tail() for p in procs)
    raise AssertionError(f"not consumed within {timeout}s: committed {got}, ends {ends}\n{tails}")
