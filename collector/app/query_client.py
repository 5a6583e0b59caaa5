"""`prodloop query` through a running service: ``GET /api/v1/modules``.

A chDB store can be opened by one process only.  While `prodloop run` holds it, the CLI
asks the service instead: with ``--url``, or by reading the address the service wrote next
to the store (``<store dir>.prodloop-service.json``, see
:func:`collector.app.discovery.service_file_for`) when opening the store says it is locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from collector.app.discovery import service_file_for
from collector.errors import ServiceQueryError

__all__ = ["discover_service", "fetch_modules"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discover_service(store_dsn: str) -> str | None:
    """The HTTP URL of the live service that holds ``store_dsn``, if it advertised one."""
    path = service_file_for(store_dsn)
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        return None
    pid = doc.get("pid")
    if isinstance(pid, int) and not _pid_alive(pid):
        return None
    url: str = doc["url"]
    return url


def fetch_modules(
    url: str,
    *,
    from_: str | None = None,
    to: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    attributed_only: bool = False,
    by: tuple[str, ...] = (),
    min_spans: int = 0,
    limit: int = 0,
    token: str = "",
    cafile: Path | None = None,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """``GET {url}/api/v1/modules`` with the filters of `prodloop query modules`."""
    params: dict[str, str] = {}
    if from_:
        params["from"] = from_
    if to:
        params["to"] = to
    if service:
        params["service"] = service
    if environment is not None:
        params["environment"] = environment
    if attributed_only:
        params["attributed_only"] = "true"
    if by:
        params["by"] = ",".join(by)
    if min_spans:
        params["min_spans"] = str(min_spans)
    if limit:
        params["limit"] = str(limit)
    base = url.rstrip("/")
    if not urlsplit(base).scheme:
        base = "http://" + base
    full = f"{base}/api/v1/modules" + (f"?{urlencode(params)}" if params else "")
    req = urllib.request.Request(full, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile and full.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:2000].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error", detail)
        hint = " (set PRODLOOP_RECEIVER__BEARER_TOKEN to the service's token)" if exc.code == 401 else ""
        raise ServiceQueryError(f"{full}: HTTP {exc.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceQueryError(f"cannot reach the prodloop service at {base}: {reason}") from None
    try:
        rows = json.loads(body)
    except ValueError as exc:
        raise ServiceQueryError(f"{full}: the answer is not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise ServiceQueryError(f"{full}: expected a JSON list of modules")
    return rows
