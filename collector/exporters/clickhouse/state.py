"""The event and state tables: deploys, incidents, and the stream's write-ahead intents.

Rows are versioned so that ``FINAL`` keeps the right one whatever the order of writes and
replays: the newest status of a deploy, the latest received incident, the latest intent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attribution.model import DeployEvent, IncidentEvent
from collector.exporters.clickhouse.client import ClickHouseClient, dedup_settings, utc_datetime
from collector.ports import DeploySource, StreamIntent


class StateTables(ClickHouseClient):
    """Writes and reads ``deploys``, ``incidents`` and ``stream_intents``."""

    def write_deploys(
        self,
        events: Sequence[DeployEvent],
        received_at_unix_nano: int,
        sources: Sequence[tuple[int, int, int]] | None = None,
    ) -> int:
        """Store deploy events.  ``sources``: (partition, offset, record timestamp ms) per event,
        for events read from the deploys topic.

        The row version is ``(status_at, status_id, received_at + i)`` packed into a UInt256
        (migration 0007), so ``FINAL`` keeps the newest status of a deploy_id, not the last
        written: a replayed older status never wins, on any replica or after a restart."""
        if sources is not None and len(sources) != len(events):
            raise ValueError("one source per event")
        srcs = list(sources) if sources is not None else [(-1, -1, 0)] * len(events)
        rows = [
            [
                e.deploy_id,
                e.service,
                e.environment,
                e.commit_sha,
                e.previous_sha,
                e.deployed_at_unix_nano,  # DateTime64(9) takes integer nanoseconds exactly
                e.repository,
                e.status,
                e.url,
                utc_datetime(received_at_unix_nano),
                (e.status_at_unix_nano << 128) | (e.status_id << 64) | (received_at_unix_nano + i),
                srcs[i][0],
                srcs[i][1],
                srcs[i][2],
                e.status_at_unix_nano,
                e.status_id,
            ]
            for i, e in enumerate(events)
        ]
        cols = [
            "deploy_id",
            "service",
            "environment",
            "commit_sha",
            "previous_sha",
            "deployed_at",
            "repository",
            "status",
            "url",
            "received_at",
            "version",
            "source_partition",
            "source_offset",
            "source_timestamp_ms",
            "status_at",
            "status_id",
        ]
        self.insert("deploys", rows, cols)
        return len(rows)

    def load_deploy_sources(self) -> list[DeploySource]:
        """Deploys with their topic provenance (partition, offset, timestamp ms; -1 when none)."""
        rows = self.query(
            "SELECT deploy_id, service, environment, commit_sha, toUnixTimestamp64Nano(deployed_at), repository, "
            "previous_sha, status, url, source_partition, source_offset, source_timestamp_ms, "
            "toUnixTimestamp64Nano(status_at), status_id FROM deploys FINAL ORDER BY deployed_at, deploy_id"
        )
        return [
            DeploySource(
                DeployEvent(
                    r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], r[7], r[8], int(r[12]), int(r[13])
                ),
                int(r[9]),
                int(r[10]),
                int(r[11]),
            )
            for r in rows
        ]

    def load_deploys(self) -> list[DeployEvent]:
        """Every deploy, its newest status, in deploy order."""
        rows = self.query(
            "SELECT deploy_id, service, environment, commit_sha, toUnixTimestamp64Nano(deployed_at), repository, "
            "previous_sha, status, url, toUnixTimestamp64Nano(status_at), status_id "
            "FROM deploys FINAL ORDER BY deployed_at, deploy_id"
        )
        return [
            DeployEvent(
                deploy_id=r[0],
                service=r[1],
                environment=r[2],
                commit_sha=r[3],
                deployed_at_unix_nano=int(r[4]),
                repository=r[5],
                previous_sha=r[6],
                status=r[7],
                url=r[8],
                status_at_unix_nano=int(r[9]),
                status_id=int(r[10]),
            )
            for r in rows
        ]

    def write_incidents(self, events: Sequence[IncidentEvent], received_at_unix_nano: int) -> int:
        """Store incident events; the newest received version of an incident_id wins."""
        rows = [
            [
                e.incident_id,
                e.title,
                list(e.services),
                "",
                e.started_at_unix_nano,
                e.resolved_at_unix_nano or None,
                e.severity,
                e.deploy_id,
                e.commit_sha,
                list(e.modules),
                e.postmortem_url,
                utc_datetime(received_at_unix_nano),
                received_at_unix_nano + i,
            ]
            for i, e in enumerate(events)
        ]
        cols = [
            "incident_id",
            "title",
            "services",
            "environment",
            "started_at",
            "resolved_at",
            "severity",
            "deploy_id",
            "commit_sha",
            "modules",
            "postmortem_url",
            "received_at",
            "version",
        ]
        self.insert("incidents", rows, cols)
        return len(rows)

    # -- stream intents --------------------------------------------------------------------

    def write_intent(
        self,
        group: str,
        topic: str,
        partition: int,
        start_offset: int,
        end_offset: int,
        deploy_positions: dict[int, int],
        deploy_bound_ms: int,
        token: str,
        now_unix_nano: int,
        chunk_rows: int = 0,
        *,
        low_offset: int = 0,
        rebuild: str = "",
        tick: bool = False,
    ) -> None:
        """Record a stream batch before its aggregates are written (the write-ahead intent),
        with its trace buffer's rebuild state after it (``low_offset``, ``rebuild`` JSON)."""
        self.insert(
            "stream_intents",
            [
                [
                    group,
                    topic,
                    partition,
                    start_offset,
                    end_offset,
                    deploy_positions,
                    deploy_bound_ms,
                    chunk_rows,
                    token,
                    utc_datetime(now_unix_nano),
                    low_offset,
                    rebuild,
                    int(tick),
                ]
            ],
            [
                "consumer_group",
                "topic",
                "partition",
                "start_offset",
                "end_offset",
                "deploy_positions",
                "deploy_bound_ms",
                "chunk_rows",
                "token",
                "created_at",
                "low_offset",
                "rebuild",
                "tick",
            ],
            dedup_settings(f"intent:{token}"),
        )

    _INTENT_COLUMNS = "start_offset, end_offset, deploy_positions, deploy_bound_ms, token, chunk_rows, low_offset, rebuild, tick"

    @staticmethod
    def _intent(row: Sequence[Any]) -> StreamIntent:
        start, end, positions, bound, token, chunk_rows, low, rebuild, tick = row
        return {
            "start_offset": int(start),
            "chunk_rows": int(chunk_rows),
            "end_offset": int(end),
            "deploy_positions": {int(k): int(v) for k, v in positions.items()},
            "deploy_bound_ms": int(bound),
            "token": str(token),
            "low_offset": int(low),
            "rebuild": str(rebuild),
            "tick": bool(tick),
        }

    def intent_at(self, group: str, topic: str, partition: int, start_offset: int) -> StreamIntent | None:
        """The recorded batch that starts at ``start_offset``, if one was written."""
        rows = self.query(
            f"SELECT {self._INTENT_COLUMNS} FROM stream_intents FINAL "
            "WHERE consumer_group = {g:String} AND topic = {t:String} AND partition = {p:UInt32} "
            "AND start_offset = {s:UInt64} ORDER BY created_at DESC LIMIT 1",
            {"g": group, "t": topic, "p": partition, "s": start_offset},
        )
        return self._intent(rows[0]) if rows else None

    def intents_between(self, group: str, topic: str, partition: int, lo: int, hi: int) -> list[StreamIntent]:
        """The recorded batches holding records of ``[lo, hi)``, in offset order."""
        rows = self.query(
            f"SELECT {self._INTENT_COLUMNS} FROM stream_intents FINAL "
            "WHERE consumer_group = {g:String} AND topic = {t:String} AND partition = {p:UInt32} "
            "AND end_offset > {lo:UInt64} AND start_offset < {hi:UInt64} ORDER BY start_offset",
            {"g": group, "t": topic, "p": partition, "lo": lo, "hi": hi},
        )
        return [self._intent(r) for r in rows]
