"""The insert-deduplication tokens (collector/processing/tokens.py) are frozen: a replay after an
upgrade must produce the tokens the original write used, byte for byte.  The expected strings
were computed by the token code of each path before the three paths shared one function."""

from __future__ import annotations

import hashlib

from collector.processing.backoff import Backoff
from collector.processing.tokens import DirectFlush, FileContent, StreamBatch, dedup_token


def test_stream_tokens_are_those_of_the_offset_range() -> None:
    assert (
        dedup_token(StreamBatch("prodloop", "traces", 3, 1200, 1400))
        == "prodloop-stream-80a0ef287aa589e2ac8a888ffe3fb583f5ae9e0d"
    )


def test_direct_tokens_are_the_run_and_the_flush_number() -> None:
    assert dedup_token(DirectFlush("0123456789abcdef", 7)) == "prodloop-direct-0123456789abcdef-7"


def test_file_tokens_are_those_of_the_content_and_the_window() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert (
        dedup_token(FileContent(digest, 60_000_000_000))
        == "prodloop-file-67a1c112e2d083d43421b1f6b42d7c1a82889f8e"
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(0.2, 1.0)
    assert [b.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
