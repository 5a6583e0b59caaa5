"""Insert-deduplication tokens: one function from a batch's identity to its ClickHouse token.

A replay of a batch must produce the same token as the original write, also across an upgrade,
so these strings are frozen: each identity's token is byte-identical to what it always was
(pinned in tests/unit/test_tokens.py).  The three identities:

* :class:`StreamBatch`: a stream batch is an offset range of one partition (the write-ahead
  intent records it, so a replay rebuilds the same range);
* :class:`DirectFlush`: a direct-mode flush is a process run and a flush sequence number (a
  failed flush is retried with the same rows and token);
* :class:`FileContent`: an ingested file is its content digest and the window length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Records ``[start, end)`` of one partition of ``topic``, consumed by ``group_id``."""

    group_id: str
    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class DirectFlush:
    """Flush number ``seq`` of the direct pipeline started as run ``run_id``."""

    run_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class FileContent:
    """A trace file, by the digest of its records (``FileIngestor.add_file``), at ``window_ns``."""

    content_digest: str
    window_ns: int


BatchIdentity: TypeAlias = StreamBatch | DirectFlush | FileContent


def dedup_token(batch: BatchIdentity) -> str:
    """The insert-deduplication token of ``batch`` (the same for every replay of it)."""
    if isinstance(batch, StreamBatch):
        key = f"{batch.group_id}\0{batch.topic}\0{batch.partition}\0{batch.start}\0{batch.end}"
        return f"prodloop-stream-{hashlib.sha256(key.encode()).hexdigest()[:40]}"
    if isinstance(batch, DirectFlush):
        return f"prodloop-direct-{batch.run_id}-{batch.seq}"
    h = hashlib.sha256()
    for part in ("file", batch.content_digest, str(batch.window_ns)):
        h.update(part.encode())
        h.update(b"\0")
    return f"prodloop-file-{h.hexdigest()[:40]}"
