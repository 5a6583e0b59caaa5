"""The stream pipeline's store and broker retries, bounded by a stop's grace period.

While the store (or the broker) fails, fetching is paused, the call is retried with capped
exponential backoff (:class:`collector.processing.backoff.Backoff`), and the consumer keeps
polling so the group keeps this replica.  A stop ends a retry after the grace period:
nothing unwritten is committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from collector.errors import BrokerError, StoreError, StoreRejectedError
from collector.pipelines.stream_state import PartitionState
from collector.ports import TraceSource
from collector.processing.backoff import Backoff
from collector.processing.metrics import Metrics

log = logging.getLogger("prodloop.pipeline")

T = TypeVar("T")


class Aborted:
    """What a retry returns when it gave up: its partition is no longer ours, or a stop's
    grace period is over.  Nothing of the call's batch is committed."""


ABORTED = Aborted()


class StopDeadline:
    """A stop request (``stop``) and the end of its grace period.

    The first time a stop is seen (by a retry, or by ``flush_all``) starts the grace period.
    """

    def __init__(self, stop: threading.Event | None, grace_s: float) -> None:
        self._stop = stop
        self._grace_s = grace_s
        self.stopping = False
        self.deadline = float("inf")

    def due(self, within_s: float = 0.0) -> bool:
        """Has a stop been asked for whose grace period ends within ``within_s``?"""
        if not self.stopping and self._stop is not None and self._stop.is_set():
            self.begin(self._grace_s)
        return self.stopping and time.monotonic() + within_s > self.deadline

    def begin(self, grace_s: float) -> None:
        if not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + grace_s


class RetryHost(Protocol):
    """What a retry needs of the pipeline: its consumer, its partitions, and a way to keep
    polling (paused) while it waits."""

    consumer: TraceSource
    partitions: dict[int, PartitionState]

    def poll_paused(self, timeout_ms: int) -> set[int]:
        """Poll once, handle rebalances, take what was fetched; the partitions (re)initialised."""
        ...

    def maybe_update_lag(self) -> None: ...


class StoreRetry:
    """Retries of the stream pipeline's store and broker calls (see the module docstring)."""

    def __init__(
        self,
        host: RetryHost,
        metrics: Metrics,
        stop: StopDeadline,
        *,
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self._host = host
        self._metrics = metrics
        self._stop = stop
        self._initial_s = backoff_initial_s
        self._max_s = backoff_max_s
        self.store_healthy = True  # False from a failed store call until one succeeds (readiness)

    def run(self, fn: Callable[[], T], what: str, partition: int | None = None) -> T | Aborted:
        """Run ``fn`` until it succeeds, backing off; keep polling (paused) so the group keeps us.

        Returns :data:`ABORTED` if ``partition`` was revoked (or revoked and assigned again)
        meanwhile, or once a stop's grace period is over.  :class:`StoreRejectedError` is
        permanent: it is raised at once, never retried.
        """
        host = self._host
        backoff = Backoff(self._initial_s, self._max_s)
        paused_here: list[int] = []
        # a rebalance during the retry may revoke the partition, or revoke and assign it
        # again (a fresh state that reads the intents anew): either way this batch is not ours
        owner = host.partitions.get(partition) if partition is not None else None
        try:
            while True:
                if self._stop.due():
                    log.warning(
                        "stopping: gave up %s after the grace period (nothing of it is committed)", what
                    )
                    return ABORTED
                try:
                    result = fn()
                    if partition is not None and host.partitions.get(partition) is not owner:
                        return ABORTED
                    if not self.store_healthy and what != "dead-letter":
                        self.store_healthy = True
                    return result
                except StoreRejectedError:
                    raise
                except (StoreError, BrokerError) as exc:
                    if isinstance(exc, StoreError):
                        self.store_healthy = False
                    self._metrics.store_errors.labels(operation=what).inc()
                    delay = backoff.next()
                    log.warning("%s failed (%s); retrying in %.1fs", what, str(exc)[:300], delay)
                if not paused_here:
                    paused_here = list(host.consumer.assignment())
                    if paused_here:
                        host.consumer.pause(paused_here)
                        self._metrics.paused.set(1)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stop.due():
                    fresh = host.poll_paused(min(200, max(1, int((deadline - time.monotonic()) * 1000))))
                    if fresh:
                        host.consumer.pause(list(fresh))
                        paused_here.extend(fresh)
                host.maybe_update_lag()
                if partition is not None and host.partitions.get(partition) is not owner:
                    return ABORTED
        finally:
            if paused_here:
                parts = host.partitions
                still = [p for p in paused_here if p in parts and not parts[p].paused]
                if still:
                    host.consumer.resume(still)
                self._metrics.paused.set(0)

    def read(self, fn: Callable[[], T], what: str, stopped: str) -> T:
        """Run ``fn`` (a read that must not be skipped) until it succeeds, sleeping between tries.

        Raises :class:`BrokerError` with ``stopping`` + ``stopped`` once a stop's grace period
        would end before the next try.
        """
        backoff = Backoff(self._initial_s, self._max_s)
        while True:
            try:
                result = fn()
                self.store_healthy = True
                return result
            except StoreError as exc:
                self.store_healthy = False
                self._metrics.store_errors.labels(operation=what).inc()
                delay = backoff.next()
                log.warning("%s failed (%s); retrying in %.1fs", what, str(exc)[:300], delay)
            if self._stop.due(delay):
                raise BrokerError(f"stopping {stopped}")
            time.sleep(delay)
