"""The schema: migration files (``schemas/clickhouse/NNNN_name.sql``), applying them, the TTL.

Migrations are applied in version order and recorded in ``schema_migrations`` with a checksum,
so applying is idempotent and an applied migration that was edited afterwards is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.errors import ConfigError, StoreError
from collector.exporters.clickhouse.client import ClickHouseClient

# the top-level schemas/, linked into the package as collector/_schemas (the wheel carries a copy)
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "_schemas"
MIGRATIONS_DIR = SCHEMAS_DIR / "clickhouse"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# the tables whose windows expire after store.ttl_days
TTL_TABLES = ("module_aggregates", "unattributed_names")


@dataclass(frozen=True)
class Migration:
    """One schema file, ``NNNN_name.sql``: its statements, separated by ``;``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, in version order."""
    if not directory.is_dir():
        raise ConfigError(f"migrations directory {directory} does not exist")
    out = []
    for p in sorted(directory.iterdir()):
        if p.suffix != ".sql":
            continue
        m = _MIGRATION_FILE.match(p.name)
        if m is None:
            raise ConfigError(f"{p}: migration files are named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"{directory}: two migrations share a version number")
    return out


class SchemaMigrations(ClickHouseClient):
    """The schema operations of the store."""

    def apply_migrations(self, migrations: Sequence[Migration] | None = None) -> list[Migration]:
        """Apply pending migrations in order; idempotent.  Returns those applied now."""
        migrations = list(migrations) if migrations is not None else load_migrations()
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String, "
            "applied_at DateTime('UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        applied = {
            int(v): (str(n), str(c))
            for v, n, c in self.query("SELECT version, name, checksum FROM schema_migrations FINAL")
        }
        done = []
        for m in migrations:
            if m.version in applied:
                name, checksum = applied[m.version]
                if checksum != m.checksum:
                    raise ConfigError(
                        f"migration {m.version:04d}_{m.name}.sql changed after it was applied "
                        f"(as {name}); never edit an applied migration, add a new one"
                    )
                continue
            for stmt in m.statements():
                self.command(stmt)
            self.insert(
                "schema_migrations",
                [[m.version, m.name, m.checksum, datetime.now(tz=UTC)]],
                ["version", "name", "checksum", "applied_at"],
            )
            done.append(m)
        return done

    def applied_versions(self) -> list[int]:
        try:
            return [
                int(r[0]) for r in self.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
            ]
        except StoreError:
            return []

    def set_ttl(self, days: int | None) -> None:
        """Expire aggregates (and unattributed span names) older than ``days`` (None: keep
        forever, the default)."""
        if days is not None and (not isinstance(days, int) or days < 1):
            raise ConfigError(f"ttl_days must be a positive integer, got {days!r}")
        for table in TTL_TABLES:
            if days is None:
                try:
                    self.command(f"ALTER TABLE {table} REMOVE TTL")
                except StoreError as exc:
                    if "TTL" not in str(exc):
                        raise
                continue
            self.command(
                f"ALTER TABLE {table} MODIFY TTL window_start + toIntervalDay({{days:UInt32}})",
                {"days": days},
            )
