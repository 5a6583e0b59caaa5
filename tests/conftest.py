"""Shared fixtures.

chDB (the real ClickHouse engine, in process) allows one store directory per process, so
the whole pytest process shares one directory and every test gets a fresh *database* in
it (``store``).  Tests that need a store of their own run ``prodloop`` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.exporters.clickhouse.store import ClickHouseStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-store")


@pytest.fixture
def store(chdb_dir: Path) -> Iterator[ClickHouseStore]:
    """A migrated store in a fresh database of the session's chDB engine."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    s = ClickHouseStore(f"chdb://{chdb_dir}", database)
    s.apply_migrations()
    try:
        yield s
    finally:
        s.command("DROP DATABASE IF EXISTS {db:Identifier}", {"db": database})
        s.close()


def run_prodloop(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process (its own chDB engine)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRODLOOP_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
