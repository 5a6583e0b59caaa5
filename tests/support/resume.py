"""Timing a replica's resume after a kill -9: from its restart to its first assignment and commit.

Used by ``tests/integration/test_static_membership.py`` and ``bench/resume_after_kill.py``.
The times come from the restarted process itself: its JSON log (when the consumer subscribed,
when the first partition was assigned) and its metrics (the Unix time of its first commit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.support.streaming import RunProcess


@dataclass(frozen=True)
class Resume:
    """Seconds from the restart (the new process's spawn) to each step."""

    subscribed_s: float  # the consumer joined the group ("consuming ..." logged)
    assigned_s: float  # its first partition was assigned ("assigned ..." logged)
    committed_s: float  # its first offset commit

    @property
    def assignment_wait_s(self) -> float:
        """From joining the group to the first assignment: what a dead member's session costs."""
        return self.assigned_s - self.subscribed_s


def _log_time(line: str) -> tuple[float, str] | None:
    try:
        rec = json.loads(line)
        ts = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return ts.timestamp(), str(rec["msg"])
    except (ValueError, KeyError, TypeError):
        return None


def first_log_times(path: Path) -> dict[str, float]:
    """Unix time of the first "consuming ..." and "assigned ..." log lines of a run."""
    out: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        got = _log_time(line)
        if got is None:
            continue
        ts, msg = got
        for key in ("consuming", "assigned"):
            if key not in out and msg.startswith(key + " "):
                out[key] = ts
    return out


def wait_first_commit(run: RunProcess, timeout: float) -> float:
    """The Unix time of ``run``'s first offset commit (its last-commit gauge), waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = run.metrics().get("prodloop_last_commit_timestamp_seconds", 0.0)
        if at > 0:
            return at
        if not run.alive():
            raise AssertionError(f"prodloop run exited with {run.proc.returncode}:\n{run.log_tail()}")
        time.sleep(0.02)
    raise AssertionError(f"no commit within {timeout}s:\n{run.log_tail()}")


def kill_and_restart(start: Callable[[str], RunProcess], name: str, timeout: float = 60) -> Resume:
    """Start a replica, kill -9 it once it has committed, restart it; time the restart."""
    first = start(f"{name}-killed")
    wait_first_commit(first, timeout)
    first.kill()
    spawned = time.time()
    again = start(f"{name}-restarted")
    committed = wait_first_commit(again, timeout)
    logged = first_log_times(again.log_path)
    assert {"consuming", "assigned"} <= set(logged), again.log_tail()
    return Resume(
        subscribed_s=logged["consuming"] - spawned,
        assigned_s=logged["assigned"] - spawned,
        committed_s=committed - spawned,
    )
