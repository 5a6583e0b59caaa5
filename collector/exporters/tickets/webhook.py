"""The webhook sink: JSON ticket events POSTed with an HMAC-SHA256 signature and an idempotency key."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from collector.errors import ConfigError
from collector.exporters.tickets.http import HttpClient, redact_url
from collector.ports import Note, RemoteState, TicketDraft, TicketRef

SIGNATURE_HEADER = "X-Prodloop-Signature-256"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs JSON events signed with HMAC-SHA256 (``X-Prodloop-Signature-256: sha256=<hex>``).

    A webhook cannot be listed, so ``find`` finds nothing; instead every event carries a
    deterministic ``Idempotency-Key`` (fingerprint, generation, event) for receivers to
    drop repeats, and ``state`` is always open (the receiver owns the lifecycle).
    """

    def __init__(
        self,
        url: str,
        secret: SecretStr,
        *,
        name: str = "webhook",
        headers: Mapping[str, str] | None = None,
        http: HttpClient | None = None,
        **http_kw: Any,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook.url: {redact_url(url)!r} must be an http(s) URL")
        self.name = name
        self.url = url
        self._secret = secret
        self.http = http or HttpClient("", dict(headers or {}), what="webhook", **http_kw)

    def __repr__(self) -> str:
        return f"WebhookSink({redact_url(self.url)!r})"

    def close(self) -> None:
        self.http.close()

    def _post(self, event: str, key: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"event": event, **payload}, sort_keys=True, separators=(",", ":")).encode()
        self.http.request(
            "POST",
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Prodloop-Event": event,
                "Idempotency-Key": key,
                SIGNATURE_HEADER: sign(self._secret.get_secret_value().encode(), body),
            },
        )

    def find(self, fingerprint: str, generation: int) -> TicketRef | None:
        return None

    def create(self, draft: TicketDraft) -> TicketRef:
        key = f"{draft.fingerprint}-{draft.generation}"
        self._post(
            "ticket.opened",
            f"{key}:opened",
            {
                "fingerprint": draft.fingerprint,
                "generation": draft.generation,
                "title": draft.title,
                "markdown": draft.doc.markdown(),
                "labels": list(draft.labels),
                "owners": list(draft.owners),
                "severity": draft.severity,
                "previous_url": draft.previous_url or None,
                "finding": dict(draft.data),
                "at_unix_nano": draft.at_unix_nano,
            },
        )
        return TicketRef(key, "")

    def _note(self, event: str, ref: TicketRef, note: Note) -> None:
        self._post(
            event,
            f"{ref.key}:{note.kind}:{note.at_unix_nano}",
            {
                "fingerprint": note.fingerprint,
                "generation": note.generation,
                "kind": note.kind,
                "markdown": note.doc.markdown(),
                "finding": dict(note.data),
                "at_unix_nano": note.at_unix_nano,
            },
        )

    def comment(self, ref: TicketRef, note: Note) -> None:
        self._note("ticket.comment", ref, note)

    def state(self, ref: TicketRef) -> RemoteState:
        return RemoteState(True)

    def close_ticket(self, ref: TicketRef, note: Note) -> None:
        self._note("ticket.closed", ref, note)
