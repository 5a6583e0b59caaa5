"""The file sink: ticket events appended as JSON lines to a local file (the demo, dry runs)."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector.errors import TicketError
from collector.ports import Note, RemoteState, TicketDraft, TicketRef


class FileSink:
    """JSON lines, one event per line: ``opened``, ``comment``, ``closed``.  For the demo and dry runs.

    People close a ticket by appending ``{"event": "closed", "key": KEY, "by": "person"}``.
    """

    def __init__(self, path: Path, *, name: str = "file") -> None:
        self.name = name
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r})"

    def close(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        try:
            with self._locked() as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise TicketError(f"file sink {self.path}: {exc.strerror}") from exc

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        for e in self.events():
            if (
                e.get("event") == "opened"
                and e.get("fingerprint") == fingerprint
                and e.get("generation") == generation
            ):
                return TicketRef(str(e["key"]), f"file://{self.path}#{e['key']}")
        return None

    def create(self, draft: TicketDraft) -> TicketRef:
        key = f"{draft.fingerprint}-{draft.generation}"
        self._append(
            {
                "event": "opened",
                "key": key,
                "fingerprint": draft.fingerprint,
                "generation": draft.generation,
                "title": draft.title,
                "labels": list(draft.labels),
                "owners": list(draft.owners),
                "assignees": list(draft.users) if draft.assign_owners else [],
                "severity": draft.severity,
                "previous_url": draft.previous_url or None,
                "markdown": draft.doc.markdown(),
                "finding": dict(draft.data),
                "at_unix_nano": draft.at_unix_nano,
            }
        )
        return TicketRef(key, f"file://{self.path}#{key}")

    def comment(self, ref: TicketRef, note: Note) -> None:
        self._append(
            {
                "event": "comment",
                "key": ref.key,
                "kind": note.kind,
                "markdown": note.doc.markdown(),
                "finding": dict(note.data),
                "at_unix_nano": note.at_unix_nano,
            }
        )

    def state(self, ref: TicketRef) -> RemoteState:
        for e in reversed(self.events()):
            if e.get("key") != ref.key:
                continue
            if e.get("event") == "closed":
                return RemoteState(False, e.get("at_unix_nano"), e.get("by") == "prodloop")
            if e.get("event") == "reopened":
                return RemoteState(True)
        return RemoteState(True)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self.comment(ref, note)
        self._append({"event": "closed", "key": ref.key, "by": "prodloop", "at_unix_nano": note.at_unix_nano})
