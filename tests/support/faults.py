"""Fault injection for tests.

:class:`FaultyStore` wraps a real :class:`collector.exporters.clickhouse.store.ClickHouseStore`
and injects failures into writes: plain errors, timeouts, and a timeout *after* the server has
in fact committed (the write landed, the client was told it failed).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from collector.errors import SinkError


class FaultyStore:
    """Delegates to a real store; ``fail_next(n, mode)`` makes the next ``n`` writes fail.

    Modes: ``"error"`` (raise at once), ``"timeout"`` (sleep, then raise), ``"after_commit"``
    (do the write, then raise as if the acknowledgement was lost).  ``down()``/``up()``
    make every write fail until restored, like an outage.
    """

    WRITES = ("write_aggregates", "write_intent", "write_deploys", "write_incidents")

    def __init__(self, store: Any, timeout_s: float = 0.05) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._down = False
        self.timeout_s = timeout_s
        self.failures = 0
        self.writes = 0

    def fail_next(self, n: int, mode: str = "error") -> None:
        with self._lock:
            self._pending.extend([mode] * n)

    def down(self) -> None:
        self._down = True

    def up(self) -> None:
        self._down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self.WRITES:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                mode = "error" if self._down else (self._pending.pop(0) if self._pending else "")
            if mode == "error":
                self.failures += 1
                raise SinkError(f"injected failure of {name}")
            if mode == "timeout":
                self.failures += 1
                time.sleep(self.timeout_s)
                raise SinkError(f"injected timeout of {name}")
            result = attr(*args, **kwargs)
            self.writes += 1
            if mode == "after_commit":
                self.failures += 1
                raise SinkError(f"injected timeout after {name} committed")
            return result

        return wrapped
