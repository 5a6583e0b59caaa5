"""Deploy and incident events: validation of already-parsed JSON objects.  Pure.

The contracts are ``schemas/events/deploy.schema.json`` and ``incident.schema.json``;
these functions enforce them and raise :class:`EventValidationError` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from attribution.model import DeployEvent, IncidentEvent

_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_DEPLOY_STATUSES = frozenset({"succeeded", "failed", "rolled_back"})
_SEVERITIES = frozenset({"sev1", "sev2", "sev3", "sev4", "sev5", "critical", "high", "medium", "low", "info"})


class EventValidationError(ValueError):
    """An event violates its schema.  ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"field {field!r}: {message}")


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_rfc3339(value: Any, field: str) -> int:
    """An RFC 3339 timestamp (with a zone: ``Z`` or ``+hh:mm``) -> unix nanoseconds, exactly."""
    if not isinstance(value, str) or not value:
        raise EventValidationError(field, "must be an RFC 3339 timestamp string, e.g. 2026-11-23T10:15:00Z")
    m = _RFC3339.match(value.strip())
    if m is None:
        raise EventValidationError(
            field, f"{value!r} is not an RFC 3339 timestamp (e.g. 2026-11-23T10:15:00Z or ...+02:00)"
        )
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=UTC
        )
    except ValueError as exc:
        raise EventValidationError(field, f"{value!r} is not a valid date and time: {exc}") from None
    if int(oh or 0) > 23 or int(om or 0) > 59:
        raise EventValidationError(field, f"{value!r} has an invalid zone offset")
    offset_s = 0 if z else (1 if sign == "+" else -1) * (int(oh) * 3600 + int(om) * 60)
    frac_ns = int(frac[1:][:9].ljust(9, "0")) if frac else 0
    seconds = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1) - offset_s
    return seconds * 1_000_000_000 + frac_ns


def format_rfc3339(unix_nano: int) -> str:
    seconds, ns = divmod(unix_nano, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds, tz=UTC)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns:09d}Z".replace(".000000000Z", "Z")


def format_window(start_unix_nano: int, end_unix_nano: int) -> str:
    """``[start, end)`` as its exact UTC start–end (RFC 3339)."""
    return f"{format_rfc3339(start_unix_nano)}–{format_rfc3339(end_unix_nano)}"


def _req_str(obj: Mapping[str, Any], field: str, *, allow_empty: bool = False) -> str:
    if field not in obj or obj[field] is None:
        raise EventValidationError(field, "is required")
    v = obj[field]
    if not isinstance(v, str):
        raise EventValidationError(field, f"must be a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise EventValidationError(field, "must not be empty")
    if len(v) > 256:
        raise EventValidationError(field, "is longer than 256 characters")
    return v


def _opt_str(obj: Mapping[str, Any], field: str) -> str:
    v = obj.get(field)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise EventValidationError(field, f"must be a string, got {type(v).__name__}")
    return v


def _sha(value: str, field: str) -> str:
    sha = value.strip().lower()
    if not _SHA.match(sha):
        raise EventValidationError(field, f"{value!r} is not a git SHA (7 to 40 hex characters)")
    return sha


_MAX_STATUS_ID = (1 << 63) - 1


def _status_at(obj: Mapping[str, Any]) -> int:
    v = obj.get("status_at")
    if v is None:
        return 0
    t = parse_rfc3339(v, "status_at")
    if not 0 < t < 1 << 63:
        raise EventValidationError("status_at", f"{v!r} is not within 1970-01-01 and 2262-04-11")
    return t


def _status_id(obj: Mapping[str, Any]) -> int:
    v = obj.get("status_id")
    if v is None:
        return 0
    if isinstance(v, float) and v.is_integer():  # JSON 7.0: an integer to the schema too
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise EventValidationError("status_id", f"must be an integer, got {type(v).__name__}")
    if not 0 <= v <= _MAX_STATUS_ID:
        raise EventValidationError("status_id", f"{v} is not within 0 and 2**63-1")
    return v


def parse_deploy_event(obj: Any) -> DeployEvent:
    if not isinstance(obj, Mapping):
        raise EventValidationError(
            "(event)", f"a deploy event must be a JSON object, got {type(obj).__name__}"
        )
    status = _opt_str(obj, "status") or "succeeded"
    if status not in _DEPLOY_STATUSES:
        raise EventValidationError("status", f"{status!r} is not one of {sorted(_DEPLOY_STATUSES)}")
    prev = _opt_str(obj, "previous_sha")
    return DeployEvent(
        deploy_id=_req_str(obj, "deploy_id"),
        service=_req_str(obj, "service"),
        environment=_req_str(obj, "environment", allow_empty=True),
        commit_sha=_sha(_req_str(obj, "commit_sha"), "commit_sha"),
        deployed_at_unix_nano=parse_rfc3339(obj.get("deployed_at"), "deployed_at"),
        repository=_opt_str(obj, "repository"),
        previous_sha=_sha(prev, "previous_sha") if prev else "",
        status=status,
        url=_opt_str(obj, "url"),
        status_at_unix_nano=_status_at(obj),
        status_id=_status_id(obj),
    )


def deploy_event_to_json(ev: DeployEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deploy_id": ev.deploy_id,
        "service": ev.service,
        "environment": ev.environment,
        "commit_sha": ev.commit_sha,
        "deployed_at": format_rfc3339(ev.deployed_at_unix_nano),
        "status": ev.status,
    }
    for k, v in (("repository", ev.repository), ("previous_sha", ev.previous_sha), ("url", ev.url)):
        if v:
            out[k] = v
    if ev.status_at_unix_nano:
        out["status_at"] = format_rfc3339(ev.status_at_unix_nano)
    if ev.status_id:
        out["status_id"] = ev.status_id
    return out


def parse_incident_event(obj: Any) -> IncidentEvent:
    if not isinstance(obj, Mapping):
        raise EventValidationError(
            "(event)", f"an incident event must be a JSON object, got {type(obj).__name__}"
        )
    services = obj.get("services")
    if not isinstance(services, list) or not services or not all(isinstance(s, str) and s for s in services):
        raise EventValidationError("services", "must be a non-empty list of service names")
    severity = _req_str(obj, "severity").lower()
    if severity not in _SEVERITIES:
        raise EventValidationError("severity", f"{severity!r} is not one of {sorted(_SEVERITIES)}")
    modules = obj.get("modules") or []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise EventValidationError("modules", "must be a list of module names")
    resolved = obj.get("resolved_at")
    started = parse_rfc3339(obj.get("started_at"), "started_at")
    resolved_ns = parse_rfc3339(resolved, "resolved_at") if resolved else 0
    if resolved_ns and resolved_ns < started:
        raise EventValidationError("resolved_at", "is before started_at")
    sha = _opt_str(obj, "commit_sha")
    return IncidentEvent(
        incident_id=_req_str(obj, "incident_id"),
        services=tuple(services),
        started_at_unix_nano=started,
        severity=severity,
        resolved_at_unix_nano=resolved_ns,
        deploy_id=_opt_str(obj, "deploy_id"),
        commit_sha=_sha(sha, "commit_sha") if sha else "",
        modules=tuple(modules),
        postmortem_url=_opt_str(obj, "postmortem_url"),
        title=_opt_str(obj, "title"),
    )
