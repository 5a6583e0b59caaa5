"""The write-ahead log: records across segments and restarts, torn tails, group commit, the
size bound, commits and truncation, and its readers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from collector.errors import BusyError
from collector.exporters.wal.gateway import WalGateway
from collector.exporters.wal.log import WalError, WalFullError, WriteAheadLog
from collector.exporters.wal.source import WalEvents, WalSource
from tests.support.sdk_requests import Requests


def _payloads(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 251]) * (size + i % 7) for i in range(n)]


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def test_records_read_back_across_segments_and_a_restart(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=1000)
    sent = _payloads(40)
    for i in range(0, 40, 4):
        wal.sync(wal.append(sent[i : i + 4], timestamp_ms=1_000 + i))
    assert len(_segments(tmp_path)) > 3  # rolled
    got = wal.read(0, 100)
    assert [p for _, _, p in got] == sent
    assert [o for o, _, _ in got] == list(range(40))
    assert got[5][1] == 1_004
    wal.close()
    again = WriteAheadLog(tmp_path, segment_bytes=1000)
    assert again.recovered.records == 40 and again.recovered.torn_tails == 0
    assert [p for _, _, p in again.read(17, 5)] == sent[17:22]
    assert again.append([b"next"], 5) == 41
    again.close()


def test_only_durable_records_are_read(tmp_path: Path) -> None:
    synced: list[int] = []
    wal = WriteAheadLog(tmp_path, fsync=lambda fd: synced.append(fd))
    end = wal.append([b"a", b"b"], 1)
    assert wal.read(0, 10) == []  # written, not yet covered by an fsync
    wal.sync(end)
    assert [p for _, _, p in wal.read(0, 10)] == [b"a", b"b"]
    wal.close()


@pytest.mark.parametrize("cut", [1, 7, 15, 40])
def test_a_torn_tail_is_cut_at_the_last_good_record_and_counted(tmp_path: Path, cut: int) -> None:
    wal = WriteAheadLog(tmp_path)
    sent = _payloads(5, size=30)
    wal.sync(wal.append(sent, 1))
    wal.close()
    seg = _segments(tmp_path)[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - cut)  # the last record loses its end (a torn write)
    again = WriteAheadLog(tmp_path)
    assert again.recovered.torn_tails == 1
    assert again.recovered.records == 4
    assert [p for _, _, p in again.read(0, 10)] == sent[:4]
    assert again.append([b"after"], 2) == 5  # the cut record's offset is written again
    again.sync(5)
    assert again.read(4, 1)[0][2] == b"after"
    again.close()


def test_a_corrupt_record_ends_the_log_and_later_segments_are_dropped(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=300)
    sent = _payloads(12, size=50)
    for p in sent:
        wal.sync(wal.append([p], 1))
    wal.close()
    segs = _segments(tmp_path)
    assert len(segs) >= 3
    with segs[1].open("r+b") as f:  # flip a payload byte of the second segment's first record
        f.seek(20)
        b = f.read(1)
        f.seek(20)
        f.write(bytes([b[0] ^ 0xFF]))
    again = WriteAheadLog(tmp_path, segment_bytes=300)
    first_of_second = int(segs[1].name[:-4])
    assert again.recovered.torn_tails == 1
    assert again.recovered.segments_dropped == len(segs) - 2
    assert [p for _, _, p in again.read(0, 100)] == sent[:first_of_second]
    again.close()


def test_a_full_log_refuses_until_a_commit_frees_segments(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, max_bytes=2000, segment_bytes=500)
    n = 0
    with pytest.raises(WalFullError, match="full"):
        while True:
            wal.sync(wal.append([b"x" * 100], 1))
            n += 1
    assert n >= 10
    wal.commit(n, "meta")
    assert len(_segments(tmp_path)) == 1  # the active segment stays
    wal.sync(wal.append([b"y" * 100], 2))
    wal.close()


def test_commits_keep_a_margin_and_offsets_go_on_after_truncation(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=250)
    for p in _payloads(20, size=40):
        wal.sync(wal.append([p], 1))
    wal.commit(15, '{"end":15}', keep_from=10)
    assert wal.committed() == (15, '{"end":15}')
    assert wal.first_offset <= 10  # the margin (a dedup horizon) is kept
    assert wal.first_offset > 0
    wal.commit(20)
    wal.close()
    again = WriteAheadLog(tmp_path, segment_bytes=250)
    assert again.committed() == (20, "")
    assert again.append([b"z"], 1) == 21  # never reuses an offset
    again.close()


def test_group_commit_never_acknowledges_before_its_fsync(tmp_path: Path) -> None:
    """An injected fsync blocks until released: no sync() returns while the fsync that covers
    its records has not returned, and concurrent appends share fsyncs."""
    gate = threading.Event()
    in_fsync = threading.Event()

    def fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("writer"):
            in_fsync.set()
            gate.wait(10)
        os.fsync(fd)

    wal = WriteAheadLog(tmp_path, fsync=fsync)
    acked: list[tuple[int, float]] = []

    def writer(i: int) -> None:
        end = wal.append([f"r{i}".encode()], 1)
        wal.sync(end)
        acked.append((end, time.monotonic()))

    threads = [threading.Thread(target=writer, args=(i,), name=f"writer-{i}") for i in range(8)]
    for t in threads:
        t.start()
    assert in_fsync.wait(5)
    time.sleep(0.2)
    assert acked == []  # everyone waits for the blocked fsync
    released_at = time.monotonic()
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(e for e, _ in acked) == list(range(1, 9))
    assert all(at >= released_at for _, at in acked)
    assert wal.fsyncs < 8  # the appends made while the first fsync ran shared the next one
    wal.close()


def test_one_process_holds_a_log(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    with pytest.raises(WalError, match="held by another"):
        WriteAheadLog(tmp_path)
    wal.close()


def test_the_source_assigns_reads_pauses_and_commits(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    assigned: list[list[int]] = []
    src = WalSource(wal, "wal-x", assigned.append, retain_records=2)
    assert src.poll(0) == [] and assigned == [[0]]
    assert src.committed_with_metadata(0) is None and src.beginning(0) == 0
    wal.sync(wal.append([b"a", b"b", b"c"], 7))
    recs = src.poll(100)
    assert [(r.offset, r.value, r.timestamp_ms) for r in recs] == [(0, b"a", 7), (1, b"b", 7), (2, b"c", 7)]
    assert src.ends() == {0: 3}
    src.pause([0])
    wal.sync(wal.append([b"d"], 8))
    assert src.poll(0) == []
    src.resume([0])
    assert [r.value for r in src.poll(0)] == [b"d"]
    src.commit({0: 3}, {0: "m"})
    assert src.committed_with_metadata(0) == (3, "m")
    src.seek(0, 1)
    assert [r.offset for r in src.poll(0)] == [1, 2, 3]
    events = WalEvents(wal, "wal-x-deploys")
    assert [r.offset for r in events.poll()] == [0, 1, 2, 3] and events.at_end()
    wal.close()


def test_the_gateway_acknowledges_durable_requests_and_refuses_when_full(tmp_path: Path) -> None:
    logs = [WriteAheadLog(tmp_path / n, max_bytes=4000) for n in ("traces", "logs", "deploys", "incidents")]
    gw = WalGateway(*logs, retry_after_s=3)
    req = Requests()
    body = req.proto([(1_700_000_000_000_000_000 + i, 1_700_000_000_000_100_000 + i) for i in range(5)])
    assert gw.export_traces(body, "otlp_proto").spans == 5
    assert logs[0].read(0, 10)[0][2] == body
    with pytest.raises(BusyError) as exc:
        for _ in range(100):
            gw.export_traces(body, "otlp_proto")
    assert exc.value.retry_after_s == 3
    assert gw.requests_refused_busy == 1
    for wal in logs:
        wal.close()


def test_the_gateway_answers_only_after_the_fsync(tmp_path: Path) -> None:
    gate = threading.Event()
    blocked = threading.Event()

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "request":
            blocked.set()
            gate.wait(10)
        os.fsync(fd)

    logs = [WriteAheadLog(tmp_path / n, fsync=fsync) for n in ("traces", "logs", "deploys", "incidents")]
    gw = WalGateway(*logs)
    body = Requests().proto([(1_700_000_000_000_000_000, 1_700_000_000_000_100_000)])
    answers: list[int] = []
    t = threading.Thread(
        target=lambda: answers.append(gw.export_traces(body, "otlp_proto").spans), name="request"
    )
    t.start()
    assert blocked.wait(5)
    time.sleep(0.1)
    assert answers == []  # written to the file, not yet answered: its fsync has not returned
    gate.set()
    t.join(5)
    assert answers == [1]
    for wal in logs:
        wal.close()
