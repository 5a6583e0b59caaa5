"""prodloop run's wait for a reachable broker at start (collector.exporters.kafka.probe.wait_for_brokers)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from collector.errors import BrokerError, ConfigError
from collector.exporters.kafka.probe import wait_for_brokers
from tests.support.streaming import free_port  # a port nobody listens on


def test_a_listening_server_ends_the_wait_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        assert wait_for_brokers([f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}"], threading.Event(), 30)
        assert time.monotonic() - t0 < 2


def test_it_waits_until_a_broker_comes_up() -> None:
    port = free_port()
    ready = threading.Event()

    def listen_later() -> None:
        time.sleep(0.7)
        with socket.create_server(("127.0.0.1", port)):
            ready.set()
            time.sleep(5)

    threading.Thread(target=listen_later, daemon=True).start()
    t0 = time.monotonic()
    assert wait_for_brokers([f"127.0.0.1:{port}"], threading.Event(), 30, max_delay_s=0.2)
    assert ready.is_set() and 0.6 < time.monotonic() - t0 < 5


def test_stop_ends_the_wait_without_an_error() -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    assert wait_for_brokers([f"127.0.0.1:{free_port()}"], stop, 60) is False
    assert time.monotonic() - t0 < 3


def test_the_timeout_names_every_server_and_why() -> None:
    a, b = free_port(), free_port()
    with pytest.raises(BrokerError) as e:
        wait_for_brokers([f"127.0.0.1:{a}", f"127.0.0.1:{b}"], threading.Event(), 0.5)
    msg = str(e.value)
    assert "kafka.startup_timeout_seconds" in msg
    assert f"127.0.0.1:{a}: Connection refused" in msg and f"127.0.0.1:{b}: Connection refused" in msg


def test_a_bad_port_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers.*broker:90x2"):
        wait_for_brokers(["broker:90x2"], threading.Event(), 1)
