"""A write-ahead log on local disk: segments of CRC-checked records, group commit, bounded size.

**Records.**  Each record is ``length u32 | crc32c u32 | timestamp_ms i64 | payload``, little
endian; the CRC covers the length, the timestamp and the payload.  Offsets are record numbers,
contiguous and never reused: they go on after a truncation and a restart.  A segment is named by
its first offset (``00000000000000000042.wal``) and is rolled at ``segment_bytes``.

**Durability.**  :meth:`WriteAheadLog.append` writes to the file (the page cache);
:meth:`WriteAheadLog.sync` returns once an ``fsync`` covering the records has returned.  Appends
that arrive while an fsync runs wait for the next one, which covers them all (group commit).
Readers see only records an fsync covered (:attr:`WriteAheadLog.durable_end`), so nothing
derived from a record can exist before the record itself is durable.

**Recovery.**  Opening scans every segment.  A record that is incomplete or fails its CRC (a
torn write) ends the log: the segment is cut there and later segments are removed.  This is
counted (:attr:`WriteAheadLog.recovered`), never fatal.

**Commit and truncation.**  :meth:`WriteAheadLog.commit` stores the reader's committed offset
with its metadata (write, fsync, rename, fsync the directory) and then removes the segments
whose records are all below it (or below a margin the reader keeps).  The active segment is
never removed.

**Size.**  At most ``max_bytes`` of segments: an append past it raises :class:`WalFullError`.

One process holds a log directory (an ``flock`` on ``LOCK``).  ``fsync`` is a parameter, the
seam a test uses to prove that no acknowledgement leaves before its fsync.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import struct
import threading
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from collector.errors import ProdloopError

_HEADER = struct.Struct("<IIq")
_SUFFIX = ".wal"
_COMMITTED = "committed.json"
MAX_RECORD_BYTES = 256 * 1024 * 1024


class WalError(ProdloopError):
    """The write-ahead log failed: its directory, a disk write or an fsync."""


class WalFullError(WalError):
    """The log holds ``max_bytes`` already: the reader must commit before more is taken."""


@dataclass
class Recovered:
    """What opening found: torn or corrupt tails cut, and the bytes and segments dropped."""

    records: int = 0  # records readable after recovery
    torn_tails: int = 0  # tails cut (an incomplete or CRC-failing record ended a segment)
    bytes_cut: int = 0
    segments_dropped: int = 0  # segments after a cut, removed whole


@dataclass
class _Segment:
    first: int
    path: Path
    fd: int
    size: int = 0
    positions: array[int] = field(default_factory=lambda: array("Q"))

    @property
    def end(self) -> int:
        return self.first + len(self.positions)


def _frame(payload: bytes, timestamp_ms: int) -> bytes:
    head = _HEADER.pack(len(payload), 0, timestamp_ms)
    crc = crc32c.crc32c(payload, crc32c.crc32c(head[8:], crc32c.crc32c(head[:4])))
    return _HEADER.pack(len(payload), crc, timestamp_ms) + payload


def _fsync_dir(path: Path, fsync: Callable[[int], None]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """One append-only log in ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self._fsync = fsync
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WalError(f"cannot open the write-ahead log {directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise WalError(f"the write-ahead log {directory} is held by another process") from exc
        self._lock = threading.Lock()  # appends, segments, commit
        self._cv = threading.Condition(threading.Lock())  # fsync progress and new durable records
        self._syncing = False
        self._closed = False
        self.fsyncs = 0
        self.identity = self._identity()
        self._committed: tuple[int, str] | None = self._read_committed()
        self._segments: list[_Segment] = []
        self.recovered = self._recover()
        if not self._segments:
            self._next = self._start()
            self._roll()
        self._bytes = sum(s.size for s in self._segments)
        self._durable = self._next = self._segments[-1].end

    # -- opening -------------------------------------------------------------------------

    def _identity(self) -> str:
        """This log's id, made once: dedup tokens and intents are keyed by it, so two logs
        (two replicas writing one store) never share a token."""
        path = self.directory / "ID"
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text().strip()
            if text:
                return text
        ident = uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(ident)
            f.flush()
            self._fsync(f.fileno())
        tmp.replace(path)
        _fsync_dir(self.directory, self._fsync)
        return ident

    def _read_committed(self) -> tuple[int, str] | None:
        path = self.directory / _COMMITTED
        try:
            doc = json.loads(path.read_text())
            return int(doc["offset"]), str(doc.get("metadata", ""))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise WalError(
                f"{path}: unreadable committed offset ({exc}); remove the file to replay the log"
            ) from exc

    def _start(self) -> int:
        """The first offset of an empty log: past everything committed (offsets are never reused)."""
        return self._committed[0] if self._committed else 0

    def _recover(self) -> Recovered:
        rec = Recovered()
        paths = sorted(self.directory.glob(f"*{_SUFFIX}"))
        cut = False
        for path in paths:
            if cut:
                path.unlink()
                rec.segments_dropped += 1
                continue
            try:
                first = int(path.name[: -len(_SUFFIX)])
            except ValueError:
                continue  # not ours
            if self._segments and first != self._segments[-1].end:
                # a gap (a lost file): what follows cannot be trusted to be contiguous
                path.unlink()
                rec.segments_dropped += 1
                cut = True
                continue
            seg = self._open_segment(path, first)
            good, torn = self._scan(seg)
            if torn:
                rec.torn_tails += 1
                rec.bytes_cut += seg.size - good
                os.ftruncate(seg.fd, good)
                self._fsync(seg.fd)
                seg.size = good
                cut = True
            self._segments.append(seg)
            rec.records += len(seg.positions)
        if rec.torn_tails or rec.segments_dropped:
            _fsync_dir(self.directory, self._fsync)
        return rec

    def _open_segment(self, path: Path, first: int) -> _Segment:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise WalError(f"cannot open the WAL segment {path}: {exc}") from exc
        return _Segment(first, path, fd, os.fstat(fd).st_size)

    @staticmethod
    def _scan(seg: _Segment) -> tuple[int, bool]:
        """Index ``seg``'s records; returns the end of the last good one and whether a bad one followed."""
        pos = 0
        size = seg.size
        while pos < size:
            head = os.pread(seg.fd, _HEADER.size, pos)
            if len(head) < _HEADER.size:
                return pos, True
            length, crc, _ = _HEADER.unpack(head)
            if length > MAX_RECORD_BYTES or pos + _HEADER.size + length > size:
                return pos, True
            payload = os.pread(seg.fd, length, pos + _HEADER.size)
            if crc32c.crc32c(payload, crc32c.crc32c(head[8:], crc32c.crc32c(head[:4]))) != crc:
                return pos, True
            seg.positions.append(pos)
            pos += _HEADER.size + length
        return pos, False

    # -- writing -------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes], timestamp_ms: int) -> int:
        """Write ``payloads`` as records; returns the offset after the last (pass it to :meth:`sync`).
        Raises :class:`WalFullError` when they do not fit, :class:`WalError` on a disk failure."""
        frames = [_frame(p, timestamp_ms) for p in payloads]
        size = sum(len(f) for f in frames)
        with self._lock:
            if self._closed:
                raise WalError(f"the write-ahead log {self.directory} is closed")
            if self._bytes + size > self.max_bytes:
                raise WalFullError(
                    f"the write-ahead log {self.directory} is full: {self._bytes} of {self.max_bytes} "
                    "bytes (wal_max_bytes) wait to be committed to the store"
                )
            seg = self._segments[-1]
            if seg.size and seg.size + size > self.segment_bytes:
                seg = self._roll()
            data = b"".join(frames)
            try:
                written = os.write(seg.fd, data)
                while written < len(data):
                    written += os.write(seg.fd, data[written:])
            except OSError as exc:
                raise WalError(f"writing {seg.path} failed: {exc}") from exc
            for f in frames:
                seg.positions.append(seg.size)
                seg.size += len(f)
            self._bytes += size
            self._next = seg.end
            return self._next

    def _roll(self) -> _Segment:
        """Start a segment at the next offset; the previous one is made durable first, so that
        an fsync of the active segment covers every record before it."""
        if self._segments:
            self._fsync(self._segments[-1].fd)
        seg = self._open_segment(self.directory / f"{self._next:020d}{_SUFFIX}", self._next)
        _fsync_dir(self.directory, self._fsync)
        self._segments.append(seg)
        return seg

    def sync(self, upto: int) -> None:
        """Return once the records before ``upto`` are durable: join the fsync under way, or lead
        the next one for every record written meanwhile."""
        with self._cv:
            while self._durable < upto:
                if self._syncing:
                    self._cv.wait()
                    continue
                self._syncing = True
                with self._lock:
                    target, fd = self._next, self._segments[-1].fd
                self._cv.release()
                try:
                    self._fsync(fd)
                except OSError as exc:
                    raise WalError(f"fsync of the write-ahead log {self.directory} failed: {exc}") from exc
                finally:
                    self._cv.acquire()
                    self._syncing = False
                    self._cv.notify_all()
                self.fsyncs += 1
                self._durable = max(self._durable, target)

    # -- reading -------------------------------------------------------------------------

    @property
    def durable_end(self) -> int:
        """The offset after the last durable record."""
        return self._durable

    @property
    def first_offset(self) -> int:
        with self._lock:
            return self._segments[0].first if self._segments else self._next  # closed: empty

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def wait_durable(self, after: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a durable record at or after ``after``."""
        with self._cv:
            return self._cv.wait_for(lambda: self._durable > after or self._closed, timeout_s)

    def read(self, start: int, max_records: int) -> list[tuple[int, int, bytes]]:
        """Durable records from ``start``: (offset, timestamp_ms, payload), at most ``max_records``."""
        out: list[tuple[int, int, bytes]] = []
        end = min(self._durable, start + max_records)
        with self._lock:
            if self._closed or start >= end:
                return out
            firsts = [s.first for s in self._segments]
            i = bisect.bisect_right(firsts, start) - 1
            if i < 0:
                raise WalError(f"offset {start} of {self.directory} was truncated (first is {firsts[0]})")
            segs = self._segments[i:]
        off = start
        for seg in segs:
            while off < end and off < seg.end:
                pos = seg.positions[off - seg.first]
                nxt = seg.positions[off - seg.first + 1] if off + 1 < seg.end else seg.size
                blob = os.pread(seg.fd, nxt - pos, pos)
                length, _, ts = _HEADER.unpack_from(blob)
                out.append((off, ts, blob[_HEADER.size : _HEADER.size + length]))
                off += 1
            if off >= end:
                break
        return out

    # -- commit ----------------------------------------------------------------------------

    def committed(self) -> tuple[int, str] | None:
        return self._committed

    def commit(self, offset: int, metadata: str = "", *, keep_from: int | None = None) -> None:
        """Store the reader's committed ``offset`` (durably), then remove the segments wholly
        below ``keep_from`` (default: the offset)."""
        keep = offset if keep_from is None else min(offset, keep_from)
        path = self.directory / _COMMITTED
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("w") as f:
                json.dump({"offset": offset, "metadata": metadata}, f)
                f.flush()
                self._fsync(f.fileno())
            tmp.replace(path)
            _fsync_dir(self.directory, self._fsync)
        except OSError as exc:
            raise WalError(f"cannot store the committed offset in {path}: {exc}") from exc
        self._committed = (offset, metadata)
        with self._lock:
            while len(self._segments) > 1 and self._segments[1].first <= keep:
                seg = self._segments.pop(0)
                os.close(seg.fd)
                seg.path.unlink(missing_ok=True)
                self._bytes -= seg.size

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for seg in self._segments:
                os.close(seg.fd)
            self._segments.clear()
            os.close(self._lock_fd)
        with self._cv:
            self._cv.notify_all()
