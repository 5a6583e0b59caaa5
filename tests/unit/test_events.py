"""Deploy and incident events (attribution/events.py) against their JSON Schemas.

The contracts are ``schemas/events/*.schema.json``.  Examples are validated with the
``jsonschema`` package (draft 2020-12, with an RFC 3339 ``date-time`` check written here from
the RFC's grammar), then parsed: every schema-valid example must parse, and every invalid one
must be rejected by both, the parser naming the same field the schema complains about.
Expected timestamps are computed with ``datetime``, independently of the parser.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from attribution.events import (
    EventValidationError,
    deploy_event_to_json,
    format_rfc3339,
    parse_deploy_event,
    parse_incident_event,
    parse_rfc3339,
)
from attribution.model import DeployEvent

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"

# RFC 3339 section 5.6, date-time (the 'T' may be lower case; see its section 5.6 note).
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(formats=())


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(x) for x in m.groups()[:6])
    datetime(year, month, day, hour, minute, min(second, 59))  # raises for 2026-02-30
    return True


FORMATS.checks("date-time", raises=ValueError)(_is_rfc3339)


def validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    v: jsonschema.protocols.Validator = cls(schema, format_checker=FORMATS)
    return v


DEPLOY = validator("deploy")
INCIDENT = validator("incident")


def ns(dt: datetime, extra_ns: int = 0) -> int:
    """Unix nanoseconds of an aware datetime, with integer arithmetic only."""
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 + extra_ns


FULL_DEPLOY: dict[str, Any] = {
    "deploy_id": "gh-run-8812-1",
    "service": "checkout",
    "environment": "prod",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "deployed_at": "2026-11-23T10:15:00.25+01:00",
    "repository": "https://github.com/acme/shop",
    "previous_sha": "fedcba9",
    "status": "succeeded",
    "url": "https://github.com/acme/shop/actions/runs/8812",
    "x-extra": {"ignored": True},
}

MIN_DEPLOY: dict[str, Any] = {
    "deploy_id": "d1",
    "service": "checkout",
    "environment": "",
    "commit_sha": "abc1234",
    "deployed_at": "2026-11-23T10:15:00Z",
}

FULL_INCIDENT: dict[str, Any] = {
    "incident_id": "INC-42",
    "title": "Checkout latency",
    "services": ["checkout", "payments"],
    "environment": "prod",
    "started_at": "2026-11-23T10:20:00Z",
    "resolved_at": "2026-11-23T11:05:30.5Z",
    "severity": "sev2",
    "deploy_id": "gh-run-8812-1",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "modules": ["checkout/api", "payments/retry"],
    "postmortem_url": "https://wiki/pm/42",
}

MIN_INCIDENT: dict[str, Any] = {
    "incident_id": "INC-1",
    "services": ["checkout"],
    "started_at": "2026-11-23T10:20:00Z",
    "severity": "low",
    "resolved_at": None,
}


# ---------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:15:00Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23t10:15:00z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23 10:15:00Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),  # RFC 3339 5.6 note
        ("2026-11-23T10:15:00+00:00", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23T10:15:00-00:00", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23T11:15:00+01:00", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23T05:45:00-04:30", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))),
        ("2026-11-23T10:15:00.5Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 500_000_000)),
        ("2026-11-23T10:15:00.000001Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 1_000)),
        ("2026-11-23T10:15:00.123456789Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 123_456_789)),
        # beyond nanoseconds: truncated
        ("2026-11-23T10:15:00.1234567899Z", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 123_456_789)),
        ("2026-11-23T12:15:00.75+02:00", ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 750_000_000)),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.5Z", -500_000_000),
        ("2000-02-29T00:00:00Z", ns(datetime(2000, 2, 29, tzinfo=UTC))),
        ("2262-04-11T23:47:16Z", ns(datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC))),
    ],
)
def test_parse_rfc3339(text: str, expected: int) -> None:
    assert parse_rfc3339(text, "deployed_at") == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T10:15:00",  # no zone
        "2026-11-23T10:15:00.5",  # no zone
        "2026-11-23",
        "10:15:00Z",
        "2026-11-23T10:15Z",  # no seconds
        "2026-02-30T10:15:00Z",  # no such day
        "2026-11-23T25:15:00Z",
        "2026-11-23T10:15:00+25:00",
        "yesterday",
        "",
    ],
)
def test_parse_rfc3339_rejects_and_names_the_field(text: str) -> None:
    with pytest.raises(EventValidationError) as info:
        parse_rfc3339(text, "deployed_at")
    assert info.value.field == "deployed_at"
    assert "deployed_at" in str(info.value)


NOT_RFC3339 = [
    "2026-11-23T10:15:00.Z",  # time-secfrac needs at least one digit
    "2026-11-23T10:15:00+01",  # time-numoffset is +HH:MM
    "2026-11-23T10:15:00+0100",
    "2026-11-23T10:15:00+01:00:30",
    "2026-11-23T10:15:00 Z",
    "2026-11-23T10:15:00,5Z",  # ISO 8601's decimal comma is not RFC 3339
]


def test_parse_rfc3339_rejects_what_rfc3339_rejects() -> None:
    for text in NOT_RFC3339:
        with pytest.raises(ValueError):
            _is_rfc3339(text)  # the schema side rejects every one
    accepted = []
    for text in NOT_RFC3339:
        try:
            parse_rfc3339(text, "deployed_at")
        except EventValidationError:
            continue
        accepted.append(text)
    assert accepted == []


def test_parse_rfc3339_never_silently_drops_a_fraction() -> None:
    exact = ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC), 500_000_000)
    try:
        got = parse_rfc3339("2026-11-23T10:15:00,5Z", "deployed_at")
    except EventValidationError:
        return  # rejecting it is fine too
    assert got == exact


@pytest.mark.parametrize("value", [None, 1795428900, 1.5, ["2026-11-23T10:15:00Z"]])
def test_parse_rfc3339_rejects_non_strings(value: object) -> None:
    with pytest.raises(EventValidationError, match="started_at"):
        parse_rfc3339(value, "started_at")


@pytest.mark.parametrize(
    "unix_nano",
    [
        0,
        1,
        999_999_999,
        1_000_000_000,
        1_795_428_900_123_456_789,
        1_795_428_900_000_000_000,
        1_700_000_040_500_000_000,
    ],
)
def test_format_rfc3339_round_trips_and_is_schema_date_time(unix_nano: int) -> None:
    text = format_rfc3339(unix_nano)
    assert text.endswith("Z")
    _is_rfc3339(text)
    assert parse_rfc3339(text, "t") == unix_nano
    seconds, frac = divmod(unix_nano, 1_000_000_000)
    assert text.startswith(
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    if frac == 0:
        assert "." not in text


# -------------------------------------------------------------------------------- deploys


def test_parse_full_deploy_event() -> None:
    assert DEPLOY.is_valid(FULL_DEPLOY)
    d = parse_deploy_event(FULL_DEPLOY)
    assert d == DeployEvent(
        deploy_id="gh-run-8812-1",
        service="checkout",
        environment="prod",
        commit_sha="0123456789abcdef0123456789abcdef01234567",
        deployed_at_unix_nano=ns(
            datetime(2026, 11, 23, 10, 15, tzinfo=timezone(timedelta(hours=1))), 250_000_000
        ),
        repository="https://github.com/acme/shop",
        previous_sha="fedcba9",
        status="succeeded",
        url="https://github.com/acme/shop/actions/runs/8812",
    )
    assert d.live


def test_parse_minimal_deploy_event_defaults() -> None:
    assert DEPLOY.is_valid(MIN_DEPLOY)
    d = parse_deploy_event(MIN_DEPLOY)
    assert (d.environment, d.status, d.repository, d.previous_sha, d.url) == ("", "succeeded", "", "", "")
    assert d.deployed_at_unix_nano == ns(datetime(2026, 11, 23, 10, 15, tzinfo=UTC))


@pytest.mark.parametrize("status", ["succeeded", "failed", "rolled_back"])
def test_deploy_statuses(status: str) -> None:
    obj = dict(MIN_DEPLOY, status=status)
    assert DEPLOY.is_valid(obj)
    assert parse_deploy_event(obj).live is (status != "failed")


def test_deploy_event_to_json_is_schema_valid_and_round_trips() -> None:
    for obj in (FULL_DEPLOY, MIN_DEPLOY, dict(MIN_DEPLOY, status="failed")):
        d = parse_deploy_event(obj)
        out = deploy_event_to_json(d)
        assert DEPLOY.is_valid(out), list(DEPLOY.iter_errors(out))
        assert parse_deploy_event(out) == d
        assert parse_deploy_event(json.loads(json.dumps(out))) == d


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    del out[key]
    return out


DEPLOY_INVALID: list[tuple[str, dict[str, Any]]] = [
    ("deploy_id", _without(FULL_DEPLOY, "deploy_id")),
    ("deploy_id", dict(FULL_DEPLOY, deploy_id="")),
    ("deploy_id", dict(FULL_DEPLOY, deploy_id="x" * 257)),
    ("deploy_id", dict(FULL_DEPLOY, deploy_id=42)),
    ("service", _without(FULL_DEPLOY, "service")),
    ("service", dict(FULL_DEPLOY, service="")),
    ("service", dict(FULL_DEPLOY, service=["checkout"])),
    ("environment", _without(FULL_DEPLOY, "environment")),
    ("environment", dict(FULL_DEPLOY, environment=None)),
    ("commit_sha", _without(FULL_DEPLOY, "commit_sha")),
    ("commit_sha", dict(FULL_DEPLOY, commit_sha="abc123")),  # 6: too short
    ("commit_sha", dict(FULL_DEPLOY, commit_sha="a" * 41)),
    ("commit_sha", dict(FULL_DEPLOY, commit_sha="v1.2.3")),
    ("commit_sha", dict(FULL_DEPLOY, commit_sha="ghijklm")),
    ("deployed_at", _without(FULL_DEPLOY, "deployed_at")),
    ("deployed_at", dict(FULL_DEPLOY, deployed_at="2026-11-23T10:15:00")),
    ("deployed_at", dict(FULL_DEPLOY, deployed_at="2026-02-30T10:15:00Z")),
    ("deployed_at", dict(FULL_DEPLOY, deployed_at=1795428900)),
    ("previous_sha", dict(FULL_DEPLOY, previous_sha="not-a-sha")),
    ("status", dict(FULL_DEPLOY, status="done")),
    ("status", dict(FULL_DEPLOY, status="Succeeded")),
    ("repository", dict(FULL_DEPLOY, repository=7)),
    ("url", dict(FULL_DEPLOY, url=["https://x"])),
]


def _schema_fields(v: jsonschema.protocols.Validator, obj: Any) -> set[str]:
    """The fields the schema complains about (a missing required property counts as its name)."""
    fields = set()
    for err in v.iter_errors(obj):
        if err.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", err.message)
            assert missing is not None
            fields.add(missing.group(1))
        elif err.absolute_path:
            fields.add(str(err.absolute_path[0]))
        else:
            fields.add("(event)")
    return fields


@pytest.mark.parametrize(
    ("field", "obj"), DEPLOY_INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(DEPLOY_INVALID)]
)
def test_invalid_deploy_rejected_by_schema_and_parser_naming_the_same_field(
    field: str, obj: dict[str, Any]
) -> None:
    assert _schema_fields(DEPLOY, obj) == {field}
    with pytest.raises(EventValidationError) as info:
        parse_deploy_event(obj)
    assert info.value.field == field
    assert repr(field) in str(info.value)


@pytest.mark.parametrize("obj", [[], "deploy", 3, None])
def test_deploy_event_must_be_an_object(obj: Any) -> None:
    assert not DEPLOY.is_valid(obj)
    with pytest.raises(EventValidationError, match="JSON object"):
        parse_deploy_event(obj)


def test_uppercase_sha_is_lenient_and_normalised() -> None:
    # the schema wants lowercase; the parser accepts upper case and lowercases it
    obj = dict(MIN_DEPLOY, commit_sha="ABC1234DEF")
    assert not DEPLOY.is_valid(obj)
    d = parse_deploy_event(obj)
    assert d.commit_sha == "abc1234def"
    assert DEPLOY.is_valid(deploy_event_to_json(d))


# ------------------------------------------------------------------------------ incidents


def test_parse_full_incident_event() -> None:
    assert INCIDENT.is_valid(FULL_INCIDENT)
    i = parse_incident_event(FULL_INCIDENT)
    assert i.incident_id == "INC-42"
    assert i.services == ("checkout", "payments")
    assert i.severity == "sev2"
    assert i.started_at_unix_nano == ns(datetime(2026, 11, 23, 10, 20, tzinfo=UTC))
    assert i.resolved_at_unix_nano == ns(datetime(2026, 11, 23, 11, 5, 30, tzinfo=UTC), 500_000_000)
    assert (i.deploy_id, i.commit_sha) == ("gh-run-8812-1", "0123456789abcdef0123456789abcdef01234567")
    assert i.modules == ("checkout/api", "payments/retry")
    assert (i.title, i.postmortem_url) == ("Checkout latency", "https://wiki/pm/42")


def test_parse_minimal_incident_event() -> None:
    assert INCIDENT.is_valid(MIN_INCIDENT)
    i = parse_incident_event(MIN_INCIDENT)
    assert (i.resolved_at_unix_nano, i.deploy_id, i.commit_sha, i.modules) == (0, "", "", ())


@pytest.mark.parametrize(
    "severity", ["sev1", "sev2", "sev3", "sev4", "sev5", "critical", "high", "medium", "low", "info"]
)
def test_every_schema_severity_parses(severity: str) -> None:
    obj = dict(MIN_INCIDENT, severity=severity)
    assert INCIDENT.is_valid(obj)
    assert parse_incident_event(obj).severity == severity


def test_every_schema_severity_is_accepted_by_the_parser() -> None:
    enum = json.loads((SCHEMAS / "incident.schema.json").read_text())["properties"]["severity"]["enum"]
    for severity in enum:
        assert parse_incident_event(dict(MIN_INCIDENT, severity=severity)).severity == severity


def test_every_schema_deploy_status_is_accepted_by_the_parser() -> None:
    enum = json.loads((SCHEMAS / "deploy.schema.json").read_text())["properties"]["status"]["enum"]
    for status in enum:
        assert parse_deploy_event(dict(MIN_DEPLOY, status=status)).status == status


INCIDENT_INVALID: list[tuple[str, dict[str, Any]]] = [
    ("incident_id", _without(FULL_INCIDENT, "incident_id")),
    ("incident_id", dict(FULL_INCIDENT, incident_id="")),
    ("services", _without(FULL_INCIDENT, "services")),
    ("services", dict(FULL_INCIDENT, services=[])),
    ("services", dict(FULL_INCIDENT, services=["checkout", ""])),
    ("services", dict(FULL_INCIDENT, services="checkout")),
    ("started_at", _without(FULL_INCIDENT, "started_at")),
    ("started_at", dict(FULL_INCIDENT, started_at="2026-11-23 10:20")),
    ("resolved_at", dict(FULL_INCIDENT, resolved_at="soon")),
    ("severity", _without(FULL_INCIDENT, "severity")),
    ("severity", dict(FULL_INCIDENT, severity="sev6")),
    ("commit_sha", dict(FULL_INCIDENT, commit_sha="xyz")),
    ("modules", dict(FULL_INCIDENT, modules="checkout/api")),
    ("modules", dict(FULL_INCIDENT, modules=[1, 2])),
    ("deploy_id", dict(FULL_INCIDENT, deploy_id=5)),
]


@pytest.mark.parametrize(
    ("field", "obj"), INCIDENT_INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INCIDENT_INVALID)]
)
def test_invalid_incident_rejected_by_schema_and_parser_naming_the_same_field(
    field: str, obj: dict[str, Any]
) -> None:
    assert _schema_fields(INCIDENT, obj) == {field}
    with pytest.raises(EventValidationError) as info:
        parse_incident_event(obj)
    assert info.value.field == field


def test_incident_resolved_before_started_is_rejected() -> None:
    obj = dict(FULL_INCIDENT, resolved_at="2026-11-23T10:00:00Z")
    assert INCIDENT.is_valid(obj)  # the schema cannot say it
    with pytest.raises(EventValidationError) as info:
        parse_incident_event(obj)
    assert info.value.field == "resolved_at"


def test_incident_event_must_be_an_object() -> None:
    with pytest.raises(EventValidationError, match="JSON object"):
        parse_incident_event(["INC-1"])
