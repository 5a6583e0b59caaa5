"""One store client shared by the service's threads: :class:`SharedStore` and the query API over it."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from collector.errors import StoreError, UnavailableError
from collector.ports import ModulesQuery

if TYPE_CHECKING:
    from collector.exporters.clickhouse.store import ClickHouseStore


class SharedStore:
    """A store used from several threads: each method call holds ``lock``.

    The pipeline and the alert loop write from the service's thread while the HTTP receiver's
    threads answer ``GET /api/v1/modules``.  One process opens an embedded (chDB) store once,
    so they share its client, one call at a time.
    """

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        lock = self.lock

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return locked


class StoreModulesQuery:
    """``GET /api/v1/modules`` from the service's :class:`SharedStore`.

    Waits at most ``wait_s`` for the store (a write in progress), then answers 503.
    """

    def __init__(self, shared: SharedStore, retry_after_s: int, wait_s: float = 10.0) -> None:
        self.shared = shared
        self.retry_after_s = retry_after_s
        self.wait_s = wait_s

    def __call__(self, q: ModulesQuery) -> list[dict[str, Any]]:
        if not self.shared.lock.acquire(timeout=self.wait_s):
            raise UnavailableError(
                f"the store stayed busy with writes for {self.wait_s:g}s", self.retry_after_s
            )
        try:
            rows: list[dict[str, Any]] = self.shared.store.query_modules(
                from_unix_nano=q.from_unix_nano,
                to_unix_nano=q.to_unix_nano,
                service=q.service,
                environment=q.environment,
                attributed_only=q.attributed_only,
                by=q.by,
                min_spans=q.min_spans,
            )
        except StoreError as exc:
            raise UnavailableError(f"the store failed: {exc}", self.retry_after_s) from exc
        finally:
            self.shared.lock.release()
        return rows
