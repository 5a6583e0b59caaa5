"""The typed seams between prodloop's components (the OpenTelemetry Collector's model).

Receivers hand data to a :class:`TraceSink`; pipelines read from sources and write through the
store ports; exporters implement them.  This module imports only ``attribution`` and the standard
library, and no ``Any`` crosses it (mypy's ``disallow_any_explicit`` holds here): rows are
dataclasses, JSON documents are :data:`JsonObject`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from attribution.model import DeployEvent, IncidentEvent

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"


# --------------------------------------------------------------------------------------
# Receivers -> a trace sink (direct pipeline or Kafka gateway)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of one trace request: spans accepted, spans rejected, why (first reason)."""

    spans: int
    rejected: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class ModulesQuery:
    """The filters of ``prodloop query modules`` (and of ``GET /api/v1/modules``)."""

    from_unix_nano: int | None = None
    to_unix_nano: int | None = None
    service: str | None = None
    environment: str | None = None
    attributed_only: bool = False
    limit: int = 0


class TraceSink(Protocol):
    """Where received data goes: :class:`collector.pipelines.direct.DirectPipeline` or
    :class:`collector.exporters.kafka.gateway.KafkaGateway`.  Methods are called from many threads.

    ``export_traces`` raises :class:`DecodeError` for an undecodable request,
    :class:`BusyError` or :class:`UnavailableError` when it cannot take it now.
    """

    def export_traces(self, payload: bytes, encoding: str) -> Accepted: ...

    def add_deploys(self, events: Sequence[DeployEvent], raw: Sequence[JsonObject]) -> int: ...

    def add_incidents(self, events: Sequence[IncidentEvent], raw: Sequence[JsonObject]) -> int: ...

    def query_modules(self, q: ModulesQuery) -> list[JsonObject]: ...

    def close(self, grace_s: float = 10.0) -> None: ...


# --------------------------------------------------------------------------------------
# Store ports (pipelines -> ClickHouse exporter)
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Sources and dead letters (pipelines <- Kafka)
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Alerts: lease and ticket state, ticket sinks
# --------------------------------------------------------------------------------------
