"""Deploy and incident events from JSON: the one place that wraps the core's validation errors.

:mod:`attribution.events` validates the fields and raises its own ``EventValidationError`` (a
``ValueError``: the core imports nothing from ``collector``); every adapter decodes events here,
so they all see :class:`collector.errors.EventError`, which names the field, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from attribution.events import EventValidationError, parse_deploy_event, parse_incident_event
from attribution.model import DeployEvent, IncidentEvent
from collector.errors import EventError

T = TypeVar("T")


def _checked(parse: Callable[[Any], T], obj: Any, where: str) -> T:
    try:
        return parse(obj)
    except EventValidationError as exc:
        raise EventError(str(exc), where=where) from None


def decode_deploy(obj: Any, where: str = "") -> DeployEvent:
    """A deploy event from a parsed JSON document (schemas/events/deploy.schema.json)."""
    return _checked(parse_deploy_event, obj, where)


def decode_incident(obj: Any, where: str = "") -> IncidentEvent:
    """An incident event from a parsed JSON document (schemas/events/incident.schema.json)."""
    return _checked(parse_incident_event, obj, where)


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EventError(f"not valid JSON: {exc}", where=where) from None


def decode_deploy_json(raw: bytes, where: str = "") -> DeployEvent:
    """A deploy event from its JSON bytes (a Kafka record)."""
    return decode_deploy(_json(raw, where), where)


def decode_incident_json(raw: bytes, where: str = "") -> IncidentEvent:
    """An incident event from its JSON bytes (a Kafka record)."""
    return decode_incident(_json(raw, where), where)
