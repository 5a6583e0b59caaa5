"""Fixtures for integration tests against real engines.

Kafka: ``kafka_broker`` (session) is a real single-node Kafka 4 broker started by ``scripts/kafka_broker.py``,
or the external broker named by ``PRODLOOP_KAFKA_BOOTSTRAP``. ``new_topic`` (per test) creates fresh,
uniquely named topics and deletes them afterwards, so no test sees another's records.

Any test that uses ``kafka_broker`` (directly or through ``new_topic``) is marked ``kafka``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# kafka-python 3.0.12 loads its protocol schemas with importlib.resources.read_text, deprecated since
# Python 3.11 (read_text warns, then warns again from inside for open_text); under filterwarnings=error
# that breaks `import kafka`. Only those two warnings, from those two places, are ignored.
# (They belong in pyproject's filterwarnings once collector/ imports kafka in unit tests too.)
KAFKA_PYTHON_WARNINGS = (
    ("read_text is deprecated", r"kafka\.protocol\.schemas\.load_json"),
    ("open_text is deprecated", r"importlib\.resources\._legacy"),
)

with warnings.catch_warnings():
    for _message, _module in KAFKA_PYTHON_WARNINGS:
        warnings.filterwarnings("ignore", _message, DeprecationWarning, _module)
    from kafka import KafkaAdminClient


# importing collector.exporters.kafka.compat applies its fix of kafka-python's socket leak on refused connections
import collector.exporters.kafka.compat  # noqa: E402, F401

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_BOOTSTRAP_ENV = "PRODLOOP_KAFKA_BOOTSTRAP"


def load_kafka_harness() -> ModuleType:
    """Import scripts/kafka_broker.py by path (scripts/ is not a package)."""
    name = "prodloop_scripts_kafka"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "kafka_broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kafka_harness = load_kafka_harness()


class KafkaBroker:
    """What tests get: ``bootstrap`` ("127.0.0.1:PORT") and, for the harness's own broker, restarts.

    ``restart()`` keeps the port and the data, so clients configured with ``bootstrap`` reconnect.
    ``stop()``/``start()`` leave the broker down in between, for outage tests.
    """

    def __init__(self, bootstrap: str, broker: Any | None) -> None:
        self.bootstrap = bootstrap
        self._broker = broker

    @property
    def can_restart(self) -> bool:
        """False for an external broker (PRODLOOP_KAFKA_BOOTSTRAP): the harness does not own it."""
        return self._broker is not None

    @property
    def data_dir(self) -> Path | None:
        return None if self._broker is None else Path(self._broker.data_dir)

    def _own(self) -> Any:
        if self._broker is None:
            raise RuntimeError(
                f"the broker at {self.bootstrap} is external ({EXTERNAL_BOOTSTRAP_ENV}); it cannot be restarted"
            )
        return self._broker

    def restart(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL if ``kill``) and start again on the same port with the same data."""
        self._own().restart(kill=kill)

    def stop(self, *, kill: bool = False) -> None:
        self._own().stop(kill=kill)

    def start(self) -> None:
        self._own().start()

    def log_tail(self, lines: int = 40) -> str:
        return "(external broker)" if self._broker is None else str(self._broker.log_tail(lines))

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap!r}, external={self._broker is None})"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV)
    if external:
        try:
            kafka_harness.probe(external, timeout=5.0)
        except OSError as exc:
            raise RuntimeError(
                f"{EXTERNAL_BOOTSTRAP_ENV}={external} does not answer a Kafka Metadata request: {exc}"
            ) from exc
        yield KafkaBroker(external, None)
        return
    # Errors here (no mvn, no network, broker crash) fail every Kafka test with the reason: never a skip.
    broker = kafka_harness.Broker(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    broker.start()
    try:
        yield KafkaBroker(broker.bootstrap, broker)
    finally:
        broker.stop()


def _topic_prefix(node_name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", node_name).strip("-")[:120]


@contextlib.contextmanager
def kafka_admin(bootstrap: str) -> Iterator[KafkaAdminClient]:
    """A fresh admin client: one made before a broker restart does not retry the dropped connection."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="prodloop-tests-admin")
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def new_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=1, config=None) -> name``: a fresh topic with leaders elected, deleted after the test."""
    created: list[str] = []
    prefix = _topic_prefix(request.node.name)

    def create(partitions: int = 1, *, config: Mapping[str, str] | None = None) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:10]}"
        with kafka_admin(kafka_broker.bootstrap) as admin:
            admin.create_topics(
                {
                    name: {
                        "num_partitions": partitions,
                        "replication_factor": 1,
                        "configs": dict(config or {}),
                    }
                },
                wait_for_metadata=True,
            )
        created.append(name)
        return name

    yield create
    if created:
        with kafka_admin(kafka_broker.bootstrap) as admin:
            admin.delete_topics(created)


def pytest_configure(config: pytest.Config) -> None:
    for message, module in KAFKA_PYTHON_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning:{module}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
