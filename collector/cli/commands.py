"""``prodloop``: the command group, its error handling, and the small commands.

The command families live beside this file (``ingest``, ``query``, ``coverage``, ``explain``, ``run``,
``alerts``, ``costs``); each builds :class:`Settings` once (``collector/cli/options.py``) and calls
the composition root (``collector/app/build.py``) for the objects it needs.
"""

from __future__ import annotations

import json
from typing import Any

import click

from collector.cli.alerts import alerts
from collector.cli.costs import costs, query_cost
from collector.cli.coverage import coverage
from collector.cli.explain import check, explain
from collector.cli.history import history, query_coupling, query_history
from collector.cli.ingest import ingest
from collector.cli.longloop import (
    query_dead_code,
    query_dora,
    query_hotspots,
    query_incidents,
    query_suspects,
)
from collector.cli.options import SettingsFlags, store_options
from collector.cli.query import query
from collector.cli.records import query_deploys, query_tickets
from collector.cli.render import fail
from collector.cli.report import report
from collector.cli.run import run
from collector.errors import ProdloopError, exit_code


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProdloopError as exc:
            fail(str(exc), exit_code(exc))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="prodloop")
def main() -> None:
    """prodloop: which module, which owner, which commit - from production traces.

    Start with `prodloop demo`.  Ingest OTLP files with `prodloop ingest`, ask with
    `prodloop query modules`, and debug attribution with `prodloop explain` and `prodloop check`.
    """


# -- schema ----------------------------------------------------------------------------------


@main.group()
def schema() -> None:
    """Manage the ClickHouse schema."""


@schema.command("apply")
@store_options
@click.option(
    "--ttl-days",
    type=int,
    default=None,
    envvar="PRODLOOP_STORE__TTL_DAYS",
    show_envvar=True,
    help="Expire aggregates after N days (default: keep).",
)
def schema_apply(flags: SettingsFlags, ttl_days: int | None) -> None:
    """Apply pending numbered migrations (idempotent)."""
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help

    extra = {"store": {"ttl_days": ttl_days}} if ttl_days else None
    settings = flags.settings(extra)
    store = build.open_store(settings, migrate=False)
    try:
        done = store.apply_migrations()
        if settings.store.ttl_days:
            store.set_ttl(settings.store.ttl_days)
        for m in done:
            click.echo(f"applied {m.version:04d}_{m.name}")
        click.echo(
            f"schema up to date ({len(store.applied_versions())} migrations) in {store.display_dsn} database {store.database}"
        )
    finally:
        store.close()


@main.command("config")
@store_options
def config_dump(flags: SettingsFlags) -> None:
    """Print the effective settings (secrets redacted)."""
    from collector.app import build  # noqa: PLC0415  lazy: the exporters cost 0.3 s of --help

    click.echo(json.dumps(build.shown_settings(flags.settings()), indent=2, default=str))


@main.command()
@click.option(
    "--minutes",
    type=int,
    default=10,
    envvar="PRODLOOP_DEMO__MINUTES",
    show_envvar=True,
    help="Simulated minutes of traffic.",
)
@click.option(
    "--seed", type=int, default=7, envvar="PRODLOOP_DEMO__SEED", show_envvar=True, help="Random seed."
)
@click.option(
    "--store",
    "store_dsn",
    envvar="PRODLOOP_DEMO__STORE",
    show_envvar=True,
    default=None,
    help="Where the demo writes [default: chdb://./.prodloop/demo, recreated each run].",
)
def demo(minutes: int, seed: int, store_dsn: str | None) -> None:
    """Run the whole loop on a bundled demo shop, on the embedded store."""
    from collector.demo.run import run_demo  # noqa: PLC0415  lazy: the demo shop and OpenTelemetry SDK

    run_demo(minutes=minutes, seed=seed, store_dsn=store_dsn, echo=click.echo)


for _command in (ingest, query, explain, check, run, alerts, report):
    main.add_command(_command)
query.add_command(coverage)
main.add_command(costs)
query.add_command(query_cost)
main.add_command(history)
query.add_command(query_history)
query.add_command(query_coupling)
for _command in (
    query_dora,
    query_incidents,
    query_suspects,
    query_hotspots,
    query_dead_code,
    query_deploys,
    query_tickets,
):
    query.add_command(_command)
