"""Service discovery: the file a running service writes next to its embedded store.

A chDB store can be opened by one process only; while `prodloop run` holds it, it writes its
receivers' addresses to ``<store dir>.prodloop-service.json`` so that `prodloop query`
(:mod:`collector.app.query_client`) can ask the service instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

SERVICE_FILE_SUFFIX = ".prodloop-service.json"


class Advertised(Protocol):
    """What is advertised: running receivers' client addresses (None: that receiver is off)."""

    @property
    def http_url(self) -> str | None: ...

    @property
    def grpc_endpoint(self) -> str | None: ...


def service_file_for(store_dsn: str) -> Path | None:
    """Where a service holding the embedded store at ``store_dsn`` writes its address."""
    parts = urlsplit(store_dsn)
    if parts.scheme != "chdb" or not parts.path:
        return None
    d = Path(parts.path)
    return d.parent / f"{d.name}{SERVICE_FILE_SUFFIX}"


@contextlib.contextmanager
def advertise(store_dsn: str, database: str, receivers: Advertised) -> Iterator[Path | None]:
    """Write the service file next to the store while the receivers run; remove it after."""
    path = service_file_for(store_dsn)
    if path is None or receivers.http_url is None:
        yield None
        return
    doc = {
        "url": receivers.http_url,
        "grpc": receivers.grpc_endpoint,
        "pid": os.getpid(),
        "store": store_dsn,
        "database": database,
        "started_at_unix_nano": time.time_ns(),
    }
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
