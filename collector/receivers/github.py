"""The GitHub ``deployment_status`` webhook: signature check, redelivery memory, deploy events.

The webhook authenticates by its HMAC signature (``X-Hub-Signature-256``, compared in
constant time), not by the bearer token; a redelivery (same ``X-GitHub-Delivery``) is
acknowledged and not applied twice.  Transport-neutral: the HTTP receiver hands over the
body and the headers' values, and sends the answer back.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
from collections import OrderedDict
from urllib.parse import parse_qs

from attribution.events import deploy_event_to_json
from attribution.model import DeployEvent
from collector.codec.events import decode_deploy
from collector.codec.results import MAX_NESTING_DEPTH
from collector.errors import EventError, RequestError
from collector.ports import JsonValue, TraceSink

log = logging.getLogger("prodloop.receiver")

GITHUB_DELIVERIES_KEPT = 10_000
_MAX_DELIVERY_ID = 128
_GITHUB_STATES = {"success": "succeeded", "failure": "failed", "error": "failed"}


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` check, in constant time."""
    if not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode())


class GithubDeliveries:
    """The ids (``X-GitHub-Delivery``) of the deliveries this process applied, so that a
    redelivery is acknowledged as a duplicate and not applied again.

    In memory, per process, the last ``size`` ids.  Another replica, or this one after a
    restart, does not know them; there the deploy events' ``status_order`` makes a replayed
    status harmless: an older status never replaces a newer one, and an equal one is the
    same status again.
    """

    def __init__(self, size: int = GITHUB_DELIVERIES_KEPT) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, delivery: str) -> bool:
        with self._lock:
            return delivery in self._ids

    def add(self, delivery: str) -> None:
        with self._lock:
            self._ids[delivery] = None
            self._ids.move_to_end(delivery)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


def _invalid(field: str, message: str) -> EventError:
    return EventError(f"field {field!r}: {message}")  # worded as the core's event errors


def deploy_from_github(payload: JsonValue) -> DeployEvent | None:
    """A ``deployment_status`` webhook payload -> a deploy event (None: a state we ignore).

    * ``success`` -> ``succeeded``; ``failure`` and ``error`` -> ``failed`` (never live);
      other states (queued, pending, in_progress, inactive) -> None.
    * ``deploy_id``: ``github:OWNER/REPO:DEPLOYMENT_ID``, so a later status of the same
      deployment replaces the earlier one.
    * ``service``: the deployment's payload ``service`` (``{"service": "checkout"}`` set by
      the workflow), else the repository name.  ``environment``: the payload's
      ``environment``, else the deployment's environment.
    * ``commit_sha``: the deployment's ``sha``; ``deployed_at``: the status's ``updated_at``
      (or ``created_at``); ``url``: the status's ``log_url`` or ``target_url``.
    * ``status_at`` and ``status_id``: the status's ``updated_at`` (or ``created_at``) and
      ``id``, which order the statuses of one deployment whatever their arrival order.

    Raises :class:`collector.errors.EventError` naming the missing or invalid field.
    """
    if not isinstance(payload, dict):
        raise _invalid("(payload)", "must be a JSON object")
    st = payload.get("deployment_status")
    dep = payload.get("deployment")
    if not isinstance(st, dict):
        raise _invalid("deployment_status", "is required")
    if not isinstance(dep, dict):
        raise _invalid("deployment", "is required")
    status = _GITHUB_STATES.get(str(st.get("state", "")))
    if status is None:
        return None
    repo_doc = payload.get("repository")
    repo = repo_doc if isinstance(repo_doc, dict) else {}
    extra = dep.get("payload")
    if isinstance(extra, str) and extra.strip().startswith("{"):
        with contextlib.suppress(json.JSONDecodeError):
            extra = json.loads(extra)
    if not isinstance(extra, dict):
        extra = {}
    prodloop_extra = extra.get("prodloop")
    if isinstance(prodloop_extra, dict):
        extra = {**extra, **prodloop_extra}
    dep_id = dep.get("id")
    if dep_id is None:
        raise _invalid("deployment.id", "is required")
    event = {
        "deploy_id": f"github:{repo.get('full_name', '')}:{dep_id}",
        "service": extra.get("service") or repo.get("name"),
        "environment": extra.get("environment") or st.get("environment") or dep.get("environment") or "",
        "commit_sha": dep.get("sha"),
        "deployed_at": st.get("updated_at") or st.get("created_at"),
        "repository": repo.get("html_url") or "",
        "status": status,
        "url": st.get("log_url") or st.get("target_url") or "",
        "status_at": st.get("updated_at") or st.get("created_at"),
        "status_id": st.get("id"),
    }
    return decode_deploy(event)


def _json_answer(doc: dict[str, JsonValue]) -> bytes:
    return json.dumps(doc).encode()


class GithubWebhook:
    """``POST /v1/webhooks/github`` over a sink: verify, de-duplicate, map, add the deploy."""

    def __init__(self, sink: TraceSink, secret: str, deliveries: GithubDeliveries | None = None) -> None:
        self.sink = sink
        self._secret = secret.encode()
        self.deliveries = deliveries if deliveries is not None else GithubDeliveries()

    def require_enabled(self) -> None:
        """Refuse (404) while no webhook secret is set."""
        if not self._secret:
            raise RequestError(
                404,
                "the GitHub webhook is off: set receiver.github_webhook_secret "
                "(PRODLOOP_RECEIVER__GITHUB_WEBHOOK_SECRET) to the webhook's secret",
                close=True,
            )

    def receive(
        self,
        body: bytes,
        *,
        event: str,
        delivery: str,
        signature: str | None,
        content_type: str,
        peer: str,
    ) -> tuple[int, bytes]:
        """One delivery -> (HTTP status, JSON answer).  Raises RequestError for a refused one.

        ``content_type`` is the media type (no parameters); ``delivery`` is stripped."""
        self.require_enabled()
        if not verify_github_signature(self._secret, body, signature):
            why = "missing" if not signature else "bad"
            log.warning(
                "refused GitHub webhook from %s: %s X-Hub-Signature-256 (event %r, delivery %s, %d bytes)",
                peer,
                why,
                event[:64],
                delivery[:64] or "-",
                len(body),
            )
            raise RequestError(401, f"{why} X-Hub-Signature-256: sign with the webhook's secret", close=True)
        if event == "ping":
            return 200, b'{"ok":true}'
        if event != "deployment_status":
            return 202, _json_answer({"ignored": f"event {event!r}"})
        # a redelivery: applied once (a longer id than GitHub's GUIDs is not remembered)
        known = delivery if 0 < len(delivery) <= _MAX_DELIVERY_ID else ""
        if known and known in self.deliveries:
            log.info("GitHub delivery %s was already applied: acknowledged as a duplicate", known)
            return 200, _json_answer({"accepted": 0, "duplicate": known})
        payload = _payload(body, content_type)
        try:
            ev = deploy_from_github(payload)
        except EventError as exc:
            raise RequestError(400, f"deployment_status payload: {exc}") from None
        if ev is None:
            assert isinstance(payload, dict)
            st = payload.get("deployment_status")
            state = st.get("state") if isinstance(st, dict) else None
            return 202, _json_answer({"ignored": f"deployment state {state!r}"})
        self.sink.add_deploys([ev], [deploy_event_to_json(ev)])
        if known:  # only once the sink took it: a refused delivery may be redelivered
            self.deliveries.add(known)
        return 200, _json_answer({"accepted": 1, "deploy_id": ev.deploy_id, "status": ev.status})


def _payload(body: bytes, content_type: str) -> JsonValue:
    try:
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("ascii"), strict_parsing=True)
            doc: JsonValue = json.loads(form["payload"][0])
        else:
            doc = json.loads(body)
    except RecursionError:
        raise RequestError(
            400, f"the webhook payload nests too deeply (at most {MAX_NESTING_DEPTH} levels)"
        ) from None
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the webhook payload is not valid JSON: {exc}") from None
    return doc
