"""Git history scans: a repository read by :mod:`collector.receivers.git`, its files mapped to
modules with the attribution rules, the result stored through the :class:`HistoryStore` port.

``prodloop history scan`` scans one repository; ``prodloop run`` re-scans the configured ones
(``history.repositories``) every ``history.scan_interval_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.attribute import Attributor
from collector.app.history_settings import HistoryRepository, HistorySettings
from collector.errors import ConfigError, GitError, StoreError
from collector.ports import HistoryStore, ScanState
from collector.receivers.git import GitRepository, sync_clone

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScanSummary:
    repository: str
    head: str
    incremental: bool
    new_commits: int
    head_files: int
    state: ScanState
    seconds: float


def scan_repository(
    store: HistoryStore,
    attributor: Attributor,
    repo: GitRepository,
    *,
    ref: str = "HEAD",
    full: bool = False,
    now: Callable[[], int] = time.time_ns,
) -> ScanSummary:
    """Scan ``repo`` up to ``ref`` and store what is new since its last scan (everything with
    ``full``, or when the last scanned head is not on the new head's first-parent chain)."""
    started = time.perf_counter()
    last = None if full else store.last_scan(repo.name)
    scan = repo.scan(
        lambda path: attributor.map_file(repo.name, path), ref=ref, last_head=last.head if last else ""
    )
    state = store.write_history(
        repo.name,
        head=scan.head,
        since=scan.since,
        commits=scan.commits,
        head_files=scan.head_files,
        scanned_at_unix_nano=now(),
    )
    return ScanSummary(
        repo.name,
        scan.head,
        scan.incremental,
        len(scan.commits),
        len(scan.head_files),
        state,
        time.perf_counter() - started,
    )


def scan_path(
    store: HistoryStore,
    attributor: Attributor,
    path: Path,
    *,
    name: str,
    ref: str = "HEAD",
    full: bool = False,
) -> ScanSummary:
    """:func:`scan_repository` of the local repository at ``path``."""
    return scan_repository(store, attributor, GitRepository(path, name=name), ref=ref, full=full)


def configured_repository(entry: HistoryRepository, clone_dir: Path) -> tuple[GitRepository, str]:
    """The repository of one ``history.repositories`` entry (cloned or fetched first when it
    is a URL) and the ref to scan."""
    if entry.path is not None:
        return GitRepository(entry.path, name=entry.name), entry.branch or "HEAD"
    repo = sync_clone(
        entry.url, clone_dir / entry.name, name=entry.name, token=entry.token_value(), branch=entry.branch
    )
    return repo, entry.branch or "HEAD"


def scan_configured(
    store: HistoryStore, attributor: Attributor, settings: HistorySettings
) -> list[ScanSummary]:
    """Scan every configured repository; one that fails is logged and the others go on."""
    out: list[ScanSummary] = []
    for entry in settings.repositories:
        try:
            repo, ref = configured_repository(entry, settings.clone_dir)
            summary = scan_repository(store, attributor, repo, ref=ref)
        except (GitError, StoreError, ConfigError) as exc:
            log.warning("history scan of %s failed: %s", entry.name, exc)
            continue
        log.info(
            "history scan of %s: %d new commits to %s (%s, %.1f s)",
            entry.name,
            summary.new_commits,
            summary.head[:12],
            "incremental" if summary.incremental else "full",
            summary.seconds,
        )
        out.append(summary)
    return out


class HistoryRescans:
    """``prodloop run``'s periodic re-scans of ``history.repositories``, on a daemon thread
    with a store client of its own (git runs as subprocesses; a first full scan's writes do
    not hold the pipeline's shared client)."""

    def __init__(
        self, open_store: Callable[[], Any], attributor: Attributor, settings: HistorySettings
    ) -> None:
        self._open_store = open_store
        self._attributor = attributor
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="history-rescans", daemon=True)

    @property
    def enabled(self) -> bool:
        return bool(self._settings.repositories) and self._settings.scan_interval_seconds > 0

    def start(self) -> None:
        """Start the re-scans (once; later calls do nothing)."""
        if self.enabled and self._thread.ident is None and not self._stop.is_set():
            log.info(
                "history: re-scanning %s every %d s",
                ", ".join(r.name for r in self._settings.repositories),
                self._settings.scan_interval_seconds,
            )
            self._thread.start()

    def _loop(self) -> None:
        try:
            store = self._open_store()
        except StoreError as exc:
            log.warning("history re-scans are off: %s", exc)
            return
        try:
            while not self._stop.is_set():
                scan_configured(store, self._attributor, self._settings)
                self._stop.wait(self._settings.scan_interval_seconds)
        finally:
            store.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
