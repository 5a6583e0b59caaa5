"""What rules are evaluated over, as the adapter loads it: declared modules, data, the ranges to load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from attribution.aggregate import AggregateRow
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules.values import MINUTE


@dataclass(frozen=True)
class DeclaredModule:
    """A module of ``modules.yaml``: its name, the services it is limited to, its code paths."""

    name: str
    services: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    repository: str = ""


@dataclass(frozen=True)
class EvaluationData:
    """Everything rules are evaluated over, loaded by the adapter.

    ``rows``: merged per-window aggregates (``ClickHouseStore.load_rows``) covering the
    ranges of :func:`required_ranges`; ``window_ns``: the aggregation window; ``last_seen``:
    (service, environment, module) -> end of the last window with spans; ``data_since``:
    start of the oldest aggregate window in the store (None: empty store).
    """

    rows: Sequence[AggregateRow] = ()
    window_ns: int = MINUTE
    deploys: Sequence[DeployEvent] = ()
    incidents: Sequence[IncidentEvent] = ()
    declared_modules: Sequence[DeclaredModule] = ()
    last_seen: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    data_since_unix_nano: int | None = None


@dataclass(frozen=True)
class DataRange:
    """Aggregates the adapter must load: windows starting in ``[from, to)`` (None: any)."""

    from_unix_nano: int
    to_unix_nano: int
    service: str | None = None
    environment: str | None = None
