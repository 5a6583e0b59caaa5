"""The service's store shared by the pipeline's thread and the receivers' query threads
(collector.app.shared_store.SharedStore, StoreModulesQuery), on the real chDB engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from collector.app.shared_store import SharedStore, StoreModulesQuery
from collector.errors import UnavailableError
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.ports import ModulesQuery

pytestmark = pytest.mark.integration


@pytest.fixture
def held(store: ClickHouseStore) -> Iterator[tuple[SharedStore, threading.Event]]:
    """A SharedStore whose lock another thread holds until the event is set."""
    shared = SharedStore(store)
    taken, release = threading.Event(), threading.Event()

    def writer() -> None:
        with shared.lock:  # as the pipeline's thread does during a write
            taken.set()
            release.wait(30)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert taken.wait(10)
    try:
        yield shared, release
    finally:
        release.set()
        t.join(10)


def test_a_store_call_waits_for_the_call_in_progress(held: tuple[SharedStore, threading.Event]) -> None:
    shared, release = held
    assert shared.database == shared.store.database  # attributes pass through
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(shared.query("SELECT 1")), daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not got, "the call ran while another held the store"
    release.set()
    t.join(10)
    assert got == [[(1,)]]


def test_a_query_answers_503_when_the_store_stays_busy(held: tuple[SharedStore, threading.Event]) -> None:
    shared, release = held
    query = StoreModulesQuery(shared, retry_after_s=3, wait_s=0.2)
    with pytest.raises(UnavailableError, match="busy") as err:
        query(ModulesQuery())
    assert err.value.retry_after_s == 3
    release.set()
    time.sleep(0.1)
    assert query(ModulesQuery()) == []  # an empty store, once free
