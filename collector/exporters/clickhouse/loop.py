"""The long loop's own tables and reads (migration 0012): incident links, and the tickets of
regression findings with the deploy they blame."""

from __future__ import annotations

from collections.abc import Sequence

from attribution.dora import IncidentLink, TicketFinding
from collector.exporters.clickhouse.client import ClickHouseClient, utc_datetime

_LINK_COLUMNS = (
    "incident_id",
    "deploy_id",
    "deploy_evidence",
    "modules",
    "modules_evidence",
    "linked_at",
    "version",
)


class LoopTables(ClickHouseClient):
    """Writes ``incident_links``; reads them and the regression tickets."""

    def write_incident_links(self, links: Sequence[IncidentLink], linked_at_unix_nano: int) -> int:
        """Store the links (a newer version of an incident's link replaces the older);
        a link equal to the stored one is not written again."""
        stored = {
            (x.incident_id): (x.deploy_id, x.deploy_evidence, x.modules, x.modules_evidence)
            for x in self.load_incident_links()
        }
        rows = [
            [
                x.incident_id,
                x.deploy_id,
                x.deploy_evidence,
                list(x.modules),
                x.modules_evidence,
                utc_datetime(linked_at_unix_nano),
                linked_at_unix_nano + i,
            ]
            for i, x in enumerate(links)
            if stored.get(x.incident_id) != (x.deploy_id, x.deploy_evidence, x.modules, x.modules_evidence)
        ]
        self.insert_rows("incident_links", rows, _LINK_COLUMNS)
        return len(rows)

    def load_incident_links(self) -> list[IncidentLink]:
        """The stored links, joined with their incidents' times."""
        rows = self.query(
            """
            SELECT l.incident_id, l.deploy_id, l.modules, toUnixTimestamp64Nano(i.started_at),
                   ifNull(toUnixTimestamp64Nano(i.resolved_at), 0), l.deploy_evidence, l.modules_evidence
            FROM (SELECT * FROM incident_links FINAL) AS l
            INNER JOIN (SELECT incident_id, started_at, resolved_at FROM incidents FINAL) AS i
                USING (incident_id)
            ORDER BY i.started_at, l.incident_id
            """
        )
        return [IncidentLink(r[0], r[1], tuple(r[2]), int(r[3]), int(r[4]), r[5], r[6]) for r in rows]

    def load_regression_tickets(self) -> list[TicketFinding]:
        """Every ticket opened for a ``regression_after_deploy`` finding that names its deploy
        (one per fingerprint and generation: the first sink's), by opening time."""
        rows = self.query(
            """
            SELECT fingerprint, generation, argMin(ticket_key, sink), any(deploy_id), any(module),
                   toUnixTimestamp64Nano(min(opened_at))
            FROM tickets FINAL
            WHERE kind = 'regression_after_deploy' AND deploy_id != '' AND state != 'intent'
            GROUP BY fingerprint, generation
            ORDER BY min(opened_at), fingerprint, generation
            """
        )
        return [
            TicketFinding(key or f"{fp}#{gen}", deploy, module, int(at))
            for fp, gen, key, deploy, module, at in rows
        ]

    def ticket_counts(self, *, from_unix_nano: int, to_unix_nano: int) -> dict[tuple[str, str, str], int]:
        """Tickets opened in ``[from, to)`` per (service, environment, module): one per
        fingerprint and generation, whatever the number of sinks."""
        rows = self.query(
            """
            SELECT service, environment, module, uniqExact(fingerprint, generation)
            FROM tickets FINAL
            WHERE state != 'intent'
              AND opened_at >= fromUnixTimestamp64Nano({lo:Int64}) AND opened_at < fromUnixTimestamp64Nano({hi:Int64})
            GROUP BY service, environment, module
            """,
            {"lo": from_unix_nano, "hi": to_unix_nano},
        )
        return {(r[0], r[1], r[2]): int(r[3]) for r in rows}
