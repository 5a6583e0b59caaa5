"""Configured repositories (history.repositories): a clone URL is cloned bare, fetched and
re-scanned incrementally; a token reaches git as an HTTP header, never a command line, and
never shows in an error.  The remote is a real repository (file://) and, for the token, a
real HTTP server that records what git sent."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from attribution.attribute import Attributor
from attribution.repository import Repository
from collector.app.history import configured_repository, scan_configured
from collector.app.history_settings import HistoryRepository, HistorySettings
from collector.errors import GitError
from collector.exporters.clickhouse.store import ClickHouseStore
from tests.support.gitrepo import T0, Shop, lines

pytestmark = pytest.mark.integration

TOKEN = "ghp_not-a-real-token-0123456789"


def test_a_clone_url_is_cloned_fetched_and_rescanned(store: ClickHouseStore, tmp_path: Path) -> None:
    origin = Shop(tmp_path / "origin")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = HistorySettings(
        repositories=[
            HistoryRepository(name="shop", url=f"file://{origin.repo.path}", token_file=token_file)
        ],
        clone_dir=tmp_path / "clones",
    )
    attributor = Attributor([Repository(name="shop")])
    (first,) = scan_configured(store, attributor, settings)
    assert (first.new_commits, first.head, first.incremental) == (7, origin.c5, False)
    assert (tmp_path / "clones" / "shop" / "HEAD").exists()  # a bare clone
    c6 = origin.repo.commit("c6", {"search/q.py": lines(8)}, at=T0 + 700)
    (again,) = scan_configured(store, attributor, settings)
    assert (again.new_commits, again.head, again.incremental) == (1, c6, True)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/acme/shop.git"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_token_goes_as_a_header_and_never_into_a_message(server: str, tmp_path: Path) -> None:
    _Recorder.seen.clear()
    entry = HistoryRepository.model_validate({"name": "shop", "url": server, "token": TOKEN})
    with pytest.raises(GitError) as caught:
        configured_repository(entry, tmp_path / "clones")
    message = str(caught.value)
    assert "shop" in message and "git clone" in message and "127.0.0.1" in message
    assert TOKEN not in message and base64.b64encode(TOKEN.encode()).decode() not in message
    assert TOKEN not in repr(entry) and TOKEN not in entry.model_dump_json()
    (header, *_) = [h for h in _Recorder.seen if h]
    scheme, _, blob = header.partition(" ")
    assert scheme == "Basic" and base64.b64decode(blob).decode() == f"x-access-token:{TOKEN}"
