"""Files last seen (dead-code candidates) on the real engine: file ingest writes the code files
its spans came from into ``file_last_seen``, a replay changes nothing, a later batch moves
each file's time up (never down), and the reads group by file with max."""

from __future__ import annotations

import json
import time
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from attribution.attribute import FileSeen
from attribution.modules import ModuleConfig
from attribution.repository import Repository
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.pipelines.files import FileIngestor, ingest
from collector.processing.batch import ProcessorConfig
from collector.processing.tokens import FileContent, dedup_token

pytestmark = pytest.mark.integration

SECOND = 1_000_000_000
NOW = int(time.time()) * SECOND
T0 = NOW - 3 * 3600 * SECOND
URL = "https://github.com/acme/shop"
REPO = Repository(
    name="shop",
    url=URL,
    modules=ModuleConfig.from_mapping(
        {"source_roots": ["/srv/shop"], "modules": [{"name": "checkout/api", "routes": ["/api/cart/*"]}]}
    ),
)
CART = "/srv/shop/services/checkout/cart.py"
RETRY = "/srv/shop/services/payments/retry.py"
EXTERNAL = "/usr/lib/python3.12/json/decoder.py"
_ids = count(1)


def _request(service: str, specs: list[tuple[int, dict[str, str]]]) -> str:
    """One OTLP/JSON request of ``service``: spans of 1 ms at ``T0 + s`` seconds."""
    spans: list[dict[str, Any]] = []
    for s, attrs in specs:
        n = next(_ids)
        start = T0 + s * SECOND
        spans.append(
            {
                "traceId": f"{n:032x}",
                "spanId": f"{n:016x}",
                "name": "op",
                "kind": 2,
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + 1_000_000),
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
            }
        )
    resource = [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "deployment.environment.name", "value": {"stringValue": "prod"}},
    ]
    return json.dumps(
        {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}]}
    )


def _file(path: Path, *requests: str) -> Path:
    path.write_text("\n".join(requests) + "\n")
    return path


def _f(p: str) -> dict[str, str]:
    return {"code.file.path": p}


def _ingest(store: ClickHouseStore, path: Path) -> None:
    s = ingest(store, [REPO], [path], [], now_unix_nano=NOW)
    assert s.rows_written > 0 and not s.rejected


def test_file_ingest_writes_files_last_seen_and_replays_are_harmless(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    first = _file(
        tmp_path / "first.jsonl",
        _request("checkout", [(5, _f(CART)), (9, _f(CART)), (3, _f(RETRY)), (4, _f(EXTERNAL))]),
        _request("payments", [(2, _f(RETRY))]),
        _request("search", [(6, {"http.route": "/api/cart/add"})]),  # attributed, without a file
    )
    _ingest(store, first)
    # a file's time is the latest span start of the batch it had spans in (one file: 9 s)
    expected = [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 9 * SECOND),
        FileSeen("checkout", "prod", URL, "services/payments/retry.py", T0 + 9 * SECOND),
        FileSeen("payments", "prod", URL, "services/payments/retry.py", T0 + 9 * SECOND),
    ]
    assert store.load_files_seen() == expected

    # the same file again: the same token, nothing changes
    _ingest(store, first)
    assert store.load_files_seen() == expected
    # the batch's token drops a replay even when its rows differ (here: later times)
    digest = FileIngestor([REPO], [], ProcessorConfig()).add_file(first)
    token = dedup_token(FileContent(digest, ProcessorConfig().window_ns))
    later = [r._replace(last_seen_unix_nano=r.last_seen_unix_nano + 1000 * SECOND) for r in expected]
    store.write_files_seen(later, dedup_token=f"{token}.files")
    assert store.load_files_seen() == expected

    # a later batch (latest span: 100 s) moves its files up
    second = _file(
        tmp_path / "second.jsonl",
        _request("checkout", [(100, _f(CART)), (1, _f(RETRY))]),
    )
    _ingest(store, second)
    # an out-of-date batch under a token of its own: max keeps the later times
    store.write_files_seen([r._replace(last_seen_unix_nano=T0) for r in expected], dedup_token="old-batch")
    assert store.load_files_seen() == [
        FileSeen("checkout", "prod", URL, "services/checkout/cart.py", T0 + 100 * SECOND),
        FileSeen("checkout", "prod", URL, "services/payments/retry.py", T0 + 100 * SECOND),
        FileSeen("payments", "prod", URL, "services/payments/retry.py", T0 + 9 * SECOND),
    ]
    store.command("OPTIMIZE TABLE file_last_seen FINAL")  # merged rows read the same
    assert store.load_files_seen()[0].last_seen_unix_nano == T0 + 100 * SECOND
    assert len(store.load_files_seen(URL)) == 3 and store.load_files_seen("elsewhere") == []

    # services that never send file paths (search: routes only) count against the share;
    # attributed spans: checkout 3 + 2, payments 1, search 1 (the external span is unattributed)
    assert store.file_path_share() == {URL: pytest.approx(6 / 7)}
