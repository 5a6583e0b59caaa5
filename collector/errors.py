"""prodloop's error tree.  Adapters wrap third-party errors once, here-shaped.

::

    ProdloopError                 everything prodloop raises on purpose
    ├── ConfigError               a bad setting or config file; names the file/key/line
    ├── PayloadError              one bad input record (never fatal to a stream)
    │   ├── DecodeError           undecodable OTLP (protobuf or JSON); names source + offset/line
    │   └── EventError            an invalid deploy/incident event; names the field
    ├── StoreError                ClickHouse (chDB or server) failed
    │   ├── StoreLockedError      the embedded store is held by another process
    │   ├── SinkError             a write was not acknowledged (retryable)
    │   └── StoreRejectedError    the store refused the rows themselves (permanent: never retried)
    ├── BrokerError               Kafka failed
    ├── RetryLaterError           cannot take a request now; ``retry_after_s`` says when to retry
    │   ├── BusyError             overloaded (HTTP 429, gRPC RESOURCE_EXHAUSTED + RetryInfo)
    │   └── UnavailableError      shutting down, store or broker failing (HTTP 503, gRPC UNAVAILABLE)
    ├── RequestError              a receiver refuses one request as a whole; ``status`` is its HTTP
    │                             status (collector.receivers.status maps it to gRPC)
    ├── ServiceQueryError         `prodloop query` could not get an answer from the running service
    ├── TicketError               a ticket sink failed
    ├── GitError                  reading a git repository failed; names the repository and command
    └── WorkerError               a stream worker process died or failed
        └── WorkerDied            a worker process exited or broke its pipe (the replica stops;
                                  intents make the restart exact)

Bad input is a value in the hot path (rejections are counted and dead-lettered); these
exceptions cross module boundaries only where one record, file or command as a whole fails.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProdloopError(Exception):
    """Base of every error prodloop raises on purpose."""


class ConfigError(ProdloopError):
    """A bad setting or config file.  The message names the file, key or line."""


class PayloadError(ProdloopError):
    """One bad input record.  ``reason`` is a short stable label used for metrics."""

    reason: str = "invalid"

    def __init__(self, message: str, *, reason: str | None = None, where: str = "") -> None:
        self.where = where
        if reason is not None:
            self.reason = reason
        super().__init__(f"{where}: {message}" if where else message)


class DecodeError(PayloadError):
    """Undecodable OTLP: truncated protobuf, bad JSON, wrong shape."""

    reason = "decode_error"


class EventError(PayloadError):
    """An invalid deploy or incident event.  The message names the field."""

    reason = "invalid_event"


class StoreError(ProdloopError):
    """ClickHouse failed."""


class StoreLockedError(StoreError):
    """The embedded chDB store is held by another process (probably `prodloop run`)."""


class SinkError(StoreError):
    """A write was not acknowledged.  Retrying the same batch is safe (deduplicated)."""


class StoreRejectedError(StoreError):
    """The store refused the data itself (a value out of a column's range, a type mismatch).

    Retrying the same rows fails the same way, so this is never retried: the writer isolates
    the refused rows (:meth:`collector.exporters.clickhouse.store.ClickHouseStore.write_aggregates`) and
    dead-letters or reports them.
    """


class BrokerError(ProdloopError):
    """Kafka failed."""


class RetryLaterError(ProdloopError):
    """A request cannot be taken now; the client retries after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class BusyError(RetryLaterError):
    """Overloaded: HTTP 429, gRPC RESOURCE_EXHAUSTED with RetryInfo."""


class UnavailableError(RetryLaterError):
    """Not available now (shutting down, the store or the broker failing): HTTP 503, gRPC UNAVAILABLE."""


class RequestError(ProdloopError):
    """A receiver refuses one request as a whole (bad framing, auth, media type, size).

    ``status`` is the HTTP status; :mod:`collector.receivers.status` maps it to the gRPC code.
    ``headers`` go out with the answer; ``close`` asks to close the connection after it.
    """

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.close = close
        super().__init__(message)


class ServiceQueryError(ProdloopError):
    """The running service could not answer `prodloop query` (unreachable, refused, not JSON)."""


class TicketError(ProdloopError):
    """A ticket sink failed."""


class GitError(ProdloopError):
    """Reading a git repository failed (not a repository, unknown ref, git missing, clone or
    fetch refused).  The message names the repository and the git command, never a token."""


class WorkerError(ProdloopError):
    """A worker process of the stream pipeline died or failed."""


class WorkerDied(WorkerError):
    """A worker process died or failed: the replica stops (prodloop run exits 1)."""


def exit_code(exc: ProdloopError) -> int:
    """The exit code of a command that ``exc`` ended: 3 when another process holds the embedded
    store, 2 for configuration, 1 otherwise."""
    if isinstance(exc, StoreLockedError):
        return 3
    if isinstance(exc, ConfigError):
        return 2
    return 1
