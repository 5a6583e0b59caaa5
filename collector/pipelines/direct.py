"""Direct mode: received spans go through decode -> attribute -> aggregate in this process,
and the aggregates are written to the store every ``flush_interval`` seconds.

The processing is the one files and Kafka use (:class:`collector.processing.batch.BatchProcessor`:
its decoders in the receiver threads, its open batch in the worker thread)::

    receiver thread:  bytes --decode--> spans --(bounded queue)--> 200 / partial success
    worker thread:    queue --> attribute + aggregate --every flush_interval--> store

**Acknowledgement and durability.**  A request is acknowledged once its spans are decoded
and accepted into the queue, before they are aggregated or written.  A crash (SIGKILL,
OOM, power) therefore loses what was accepted since the last successful flush: at most
``flush_interval`` seconds of spans, plus what was still queued.  A clean stop
(:meth:`DirectPipeline.close`) aggregates the queue and flushes.  Direct mode is for trying
prodloop and for small setups; gateway mode (Kafka) is the durable path.

**Bad times** (outside the store's range, or the plausibility window around the
request's arrival) are rejected at decode: a partial success naming the span.  Rows the
store refuses anyway are logged and dropped, the rest is written.  ``last_flush_unix_nano``
is when the flushed queue was cut: spans accepted during a write are not in it.

**Flushes are idempotent.**  Each flush drains the aggregator into one deterministic batch
of rows and writes it with the insert-deduplication token ``prodloop-direct-RUN-SEQ``
(``RUN`` is random per process start, ``SEQ`` counts flushes).  A write that failed is
retried with the same rows and the same token, so a write that had in fact landed is not
counted twice.  While the store fails, the worker keeps retrying (with backoff) and stops
taking from the queue; the queue fills and the receivers answer 503 with ``Retry-After``.

**Overload.**  The queue is bounded in spans (``queue_max_spans``).  A request that does
not fit gets :class:`collector.errors.BusyError` (HTTP 429 / gRPC RESOURCE_EXHAUSTED
with RetryInfo); OTLP clients retry it after the advised delay.  A request larger than
the whole queue is still accepted when the queue is empty, so no request is refused for ever.

**Deploys** are written to the store first, then handed to the worker through the same
queue, so spans received after a deploy was acknowledged see it in the deploy timeline.

The store is used from several threads (flushes, deploy writes, ``GET /api/v1/modules``);
one lock serialises every store call.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from attribution.aggregate import AggregateRow, BatchStats, NameRow
from attribution.attribute import FileSeen
from attribution.model import DeployEvent, IncidentEvent
from attribution.repository import Repository
from collector.codec.otlp import OtlpDecoder
from collector.codec.otlp_logs import decode_logs
from collector.codec.results import rejection_message
from collector.errors import BusyError, EventError, StoreError, StoreRejectedError, UnavailableError
from collector.ports import Accepted, DirectStore, ModulesQuery
from collector.processing.backoff import Backoff
from collector.processing.batch import BatchProcessor, ProcessorConfig
from collector.processing.tokens import DirectFlush, dedup_token

log = logging.getLogger("prodloop.direct")

_SPANS = 0
_DEPLOYS = 1
_LOGS = 2
_DEFAULT_PROCESSING = ProcessorConfig()
_BACKOFF_INITIAL_S = 0.2
_BACKOFF_MAX_S = 10.0


@dataclass
class DirectStats:
    """Counters since start (read without a lock: approximate while running)."""

    requests: int = 0
    log_requests: int = 0
    log_exceptions_accepted: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    spans_aggregated: int = 0
    spans_attributed: int = 0
    overflow_spans: int = 0
    unattributed_by_reason: Counter[str] = field(default_factory=Counter)
    requests_refused_busy: int = 0
    flushes: int = 0
    rows_written: int = 0
    write_seconds: float = 0.0  # of the successful flushes' store writes
    flush_failures: int = 0
    rows_refused: int = 0
    spans_refused: int = 0
    spans_lost_at_stop: int = 0
    last_flush_unix_nano: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unattributed_by_reason"] = dict(sorted(self.unattributed_by_reason.items()))
        return out


class DirectPipeline:
    """The in-process ingest behind the receivers in direct mode (see the module docstring)."""

    def __init__(
        self,
        store: DirectStore,
        repositories: Sequence[Repository],
        *,
        processing: ProcessorConfig = _DEFAULT_PROCESSING,  # its time bounds are around each request's arrival
        flush_interval_s: float = 5.0,
        queue_max_spans: int = 200_000,
        retry_after_s: int = 2,
        clock: Callable[[], int] = time.time_ns,
        load_deploys: bool = True,
    ) -> None:
        self.store = store
        self.window_ns = processing.window_ns
        self.flush_interval_s = flush_interval_s
        self.queue_max_spans = queue_max_spans
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._store_lock = threading.Lock()
        self.processor = BatchProcessor(
            processing,
            repositories,
            self._locked(store.load_deploys) if load_deploys else (),
        )
        self._local = threading.local()
        self.stats = DirectStats()
        self._run_id = uuid.uuid4().hex[:16]
        self._seq = 0
        # the queue: (kind, payload, spans) items; guarded by _cond
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, Any, int]] = deque()
        self._queued_spans = 0
        self._flush_requested: list[threading.Event] = []
        self._closing = False
        self._store_failing = False
        self._worker = threading.Thread(target=self._run, name="prodloop-direct", daemon=True)
        self._worker.start()

    # -- receivers' side ---------------------------------------------------------------

    def _decoder(self) -> OtlpDecoder:
        d: OtlpDecoder | None = getattr(self._local, "decoder", None)
        if d is None:  # one per receiver thread: the decoder's caches are not shared
            d = self._local.decoder = self.processor.new_decoder()
        return d

    @property
    def store_healthy(self) -> bool:
        """False while flushes fail (readiness)."""
        return not self._store_failing

    @property
    def queued_spans(self) -> int:
        """Spans accepted and not aggregated yet (read without the lock: approximate)."""
        return self._queued_spans

    def export_traces(self, payload: bytes, encoding: str) -> Accepted:
        """Decode and enqueue.  Raises DecodeError (bad request), BusyError, UnavailableError."""
        if self._closing:
            raise UnavailableError("prodloop is shutting down", self.retry_after_s)
        if self._queued_spans >= self.queue_max_spans:  # full: refuse before spending a decode on it
            self._refuse()
        arrived = self._clock()
        decoded = self._decoder().decode(payload, encoding, f"<{encoding} request>", arrived)
        spans = decoded.spans
        n = len(spans)
        with self._cond:
            self.stats.requests += 1
            if self._closing:
                raise UnavailableError("prodloop is shutting down", self.retry_after_s)
            if n and self._queued_spans and self._queued_spans + n > self.queue_max_spans:
                self._refuse()
            if n:
                self._queue.append((_SPANS, (spans, arrived // 1_000_000), n))
                self._queued_spans += n
                self._cond.notify()
            self.stats.spans_accepted += n
            self.stats.spans_rejected += len(decoded.rejected)
        return Accepted(n, len(decoded.rejected), rejection_message(decoded.rejected))

    def accept_logs(self, body: bytes, encoding: str, *, received_unix_nano: int) -> Accepted:
        """OTLP log records carrying exceptions: decode and enqueue (see :meth:`export_traces`)."""
        if self._closing:
            raise UnavailableError("prodloop is shutting down", self.retry_after_s)
        if self._queued_spans >= self.queue_max_spans:
            self._refuse()
        items = decode_logs(body, encoding, f"<{encoding} logs request>")
        with self._cond:
            self.stats.log_requests += 1
            if items:
                self._queue.append((_LOGS, items, 0))
                self._cond.notify()
            self.stats.log_exceptions_accepted += len(items)
        return Accepted(len(items), 0, "")

    def _refuse(self) -> None:
        self.stats.requests_refused_busy += 1
        if self._store_failing:
            raise UnavailableError(
                f"the store is failing ({self.stats.last_error[:200]}); spans are held until it recovers",
                self.retry_after_s,
            )
        raise BusyError(
            f"prodloop is overloaded: {self._queued_spans} spans are waiting to be aggregated "
            f"(queue_max_spans={self.queue_max_spans})",
            self.retry_after_s,
        )

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[dict[str, Any]]) -> int:
        if self._closing:
            raise UnavailableError("prodloop is shutting down", self.retry_after_s)
        if not events:
            return 0
        self._store_call(lambda: self.store.write_deploys(list(events), self._clock()))
        with self._cond:
            self._queue.append((_DEPLOYS, list(events), 0))
            self._cond.notify()
        return len(events)

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[dict[str, Any]]) -> int:
        if not events:
            return 0
        self._store_call(lambda: self.store.write_incidents(list(events), self._clock()))
        return len(events)

    def query_modules(self, q: ModulesQuery) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._store_call(
            lambda: self.store.query_modules(
                from_unix_nano=q.from_unix_nano,
                to_unix_nano=q.to_unix_nano,
                service=q.service,
                environment=q.environment,
                attributed_only=q.attributed_only,
                by=q.by,
                min_spans=q.min_spans,
            )
        )
        return rows

    def _locked(self, fn: Callable[[], Any]) -> Any:
        with self._store_lock:
            return fn()

    def _store_call(self, fn: Callable[[], Any]) -> Any:
        try:
            return self._locked(fn)
        except StoreRejectedError as exc:  # the data itself: retrying cannot help (400)
            raise EventError(f"the store refused it: {exc}") from exc
        except StoreError as exc:
            raise UnavailableError(f"the store failed: {exc}", self.retry_after_s) from exc

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Aggregate everything queued so far and write it; True once written."""
        done = threading.Event()
        with self._cond:
            self._flush_requested.append(done)
            self._cond.notify()
        return done.wait(timeout_s)

    def close(self, grace_s: float = 10.0) -> None:
        """Stop accepting, aggregate the queue, flush (retrying the store until ``grace_s``)."""
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._closing = True
            self._close_deadline = deadline
            self._cond.notify()
        self._worker.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._worker.is_alive():
            log.error("direct mode: the final flush did not finish within %.1fs", grace_s)

    # -- worker ------------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._flush_requested:
                    remaining = next_flush - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                items = list(self._queue)
                self._queue.clear()
                cut_at = self._clock()  # everything accepted before this is in the next flush
                closing = self._closing
                waiters = self._flush_requested
                self._flush_requested = []
            taken = 0
            for kind, payload, n in items:
                if kind == _SPANS:
                    spans, arrived_ms = payload
                    self.processor.add(spans, arrived_ms)
                    taken += n
                elif kind == _LOGS:
                    self.processor.add_log_exceptions(payload)
                else:
                    self.processor.add_deploys(payload)
            if taken:
                with self._cond:
                    self._queued_spans -= taken
            if closing or waiters or time.monotonic() >= next_flush:
                if closing:
                    self.processor.complete_traces()
                else:  # traces complete by arrival time: trace_wait after their first request
                    self.processor.advance(cut_at // 1_000_000)
                rows, st = self.processor.drain()
                self._account(st)
                ok = self._flush(
                    rows,
                    self.processor.drain_names(),
                    self.processor.drain_files_seen(),
                    final=closing,
                    cut_at=cut_at,
                )
                next_flush = time.monotonic() + self.flush_interval_s
                if ok:
                    for w in waiters:
                        w.set()
                else:
                    with self._cond:  # keep them waiting for the next successful flush
                        self._flush_requested.extend(waiters)
                if closing:
                    with self._cond:
                        if not self._queue:
                            return

    def _account(self, st: BatchStats) -> None:
        s = self.stats
        s.spans_aggregated += st.spans
        s.spans_attributed += st.attributed
        s.overflow_spans += st.overflow
        s.unattributed_by_reason.update(st.unattributed_by_reason)

    def _flush(
        self,
        rows: list[AggregateRow],
        names: list[NameRow],
        files_seen: list[FileSeen],
        *,
        final: bool,
        cut_at: int,
    ) -> bool:
        """Write the drained batch (everything accepted up to ``cut_at``), its unattributed
        span names and the code files its spans came from, retrying; False if a stop's grace
        period ran out first."""
        if not rows:
            self.stats.last_flush_unix_nano = cut_at
            return True
        self._seq += 1
        token = dedup_token(DirectFlush(self._run_id, self._seq))
        backoff = Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S)
        refused: list[tuple[AggregateRow, str]] = []
        while True:
            refused.clear()
            t0 = time.monotonic()
            try:
                with self._store_lock:
                    written = self.store.write_aggregates(
                        rows,
                        self.window_ns,
                        dedup_token=token,
                        on_refused=lambda row, message: refused.append((row, message)),
                    )
                    if names:
                        self.store.write_names(names, self.window_ns, dedup_token=f"{token}.names")
                    if files_seen:
                        self.store.write_files_seen(files_seen, dedup_token=f"{token}.files")
            except StoreError as exc:
                self.stats.flush_failures += 1
                self.stats.last_error = str(exc)
                self._store_failing = True
                deadline = getattr(self, "_close_deadline", None) if (final or self._closing) else None
                delay = backoff.next()
                if deadline is not None and time.monotonic() + delay > deadline:
                    lost = sum(r.spans for r in rows)
                    self.stats.spans_lost_at_stop += lost
                    log.error(
                        "direct mode: giving up the final flush after the grace period: %d spans in %d rows "
                        "were not written: %s",
                        lost,
                        len(rows),
                        exc,
                    )
                    return False
                log.warning("direct mode: flush %s failed, retrying in %.1fs: %s", token, delay, exc)
                with self._cond:
                    if deadline is None:  # close() wakes this up, to retry within its grace period
                        self._cond.wait_for(lambda: self._closing, timeout=delay)
                    else:
                        self._cond.wait(timeout=delay)
                continue
            for row, message in refused:
                self.stats.rows_refused += 1
                self.stats.spans_refused += row.spans
                log.error(
                    "direct mode: the store refused an aggregate row of %d span(s) (%s/%s/%s); it is dropped: %s",
                    row.spans,
                    row.service,
                    row.environment,
                    row.module,
                    message,
                )
            self._store_failing = False
            self.stats.flushes += 1
            self.stats.write_seconds += time.monotonic() - t0
            self.stats.rows_written += written
            self.stats.last_flush_unix_nano = cut_at
            return True
