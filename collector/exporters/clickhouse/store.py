"""The ClickHouse store: the one object callers get, composed of the exporter's parts.

* :mod:`.client` - DSNs, the connection, statements, queries and inserts, errors wrapped once;
* :mod:`.migrations` - the schema files, applying them, the TTL;
* :mod:`.aggregates` - ``module_aggregates``: writes (chunks, tokens, bisection) and the read model;
* :mod:`.state` - ``deploys``, ``incidents`` and the stream's write-ahead ``stream_intents``;
* :mod:`.coverage` - ``unattributed_names`` and the coverage read model;
* :mod:`.costs` - ``service_costs`` and the cost-per-module read model;
* :mod:`.history` - the git history tables (scans, commits, their files, the head's files);
* :mod:`.loop` - incident links and the regression tickets (DORA, suspects, hotspots).

It implements the store ports of :mod:`collector.ports` (checked by mypy below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.exporters.clickhouse.aggregates import AggregateTables
from collector.exporters.clickhouse.costs import CostTables
from collector.exporters.clickhouse.coverage import CoverageTables
from collector.exporters.clickhouse.history import HistoryTables
from collector.exporters.clickhouse.loop import LoopTables
from collector.exporters.clickhouse.migrations import SchemaMigrations
from collector.exporters.clickhouse.state import StateTables
from collector.ports import CostStore, CoverageStore, DirectStore, HistoryStore, StreamStore


class ClickHouseStore(
    SchemaMigrations, AggregateTables, StateTables, CoverageTables, CostTables, HistoryTables, LoopTables
):
    """Reads and writes prodloop's tables."""


if TYPE_CHECKING:

    def _implements_the_store_ports(store: ClickHouseStore) -> tuple[DirectStore, StreamStore]:
        return store, store

    def _implements_the_coverage_port(store: ClickHouseStore) -> CoverageStore:
        return store

    def _implements_the_cost_port(store: ClickHouseStore) -> CostStore:
        return store

    def _implements_the_history_port(store: ClickHouseStore) -> HistoryStore:
        return store
