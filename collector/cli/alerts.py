"""``prodloop alerts``: evaluate the alert rules once, from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from collector.cli.options import (
    Overrides,
    SettingsFlags,
    attribution_options,
    format_option,
    now_ns,
    parse_time,
    rules_option,
    store_options,
)
from collector.cli.render import fail, render_alerts


@click.group()
def alerts() -> None:
    """Alert rules that open refactor tickets (rules.yaml; see docs/rules.md)."""


@alerts.command("evaluate")
@store_options
@attribution_options
@rules_option("rules.yaml [default: alerts.rules of the config].")
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="PRODLOOP_ALERTS__DRY_RUN",
    show_envvar=True,
    help="Print what would fire and why; create, comment and record nothing.",
)
@click.option(
    "--now",
    "now_text",
    envvar="PRODLOOP_ALERTS__NOW",
    show_envvar=True,
    default=None,
    help="Evaluate as of this time (RFC 3339, unix s, or -2h) [default: now].",
)
@click.option(
    "--settle-seconds",
    type=int,
    envvar="PRODLOOP_ALERTS__SETTLE_SECONDS",
    show_envvar=True,
    default=None,
    help="Ignore the newest data for this long (windows still being written) [default: 120].",
)
@format_option(["table", "json"], "table")
def alerts_evaluate(
    flags: SettingsFlags,
    rules_file: Path | None,
    dry_run: bool,
    now_text: str | None,
    settle_seconds: int | None,
    fmt: str,
) -> None:
    """Evaluate the alert rules once: print what fires and why, and (unless --dry-run) file tickets."""
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help
    from collector.app.alerting import build_alert_engine  # noqa: PLC0415  lazy: as build

    extra: Overrides = {"alerts": {}}
    if rules_file is not None:
        extra["alerts"]["rules"] = rules_file
    if settle_seconds is not None:
        extra["alerts"]["settle_seconds"] = settle_seconds
    settings = flags.settings(extra)
    if settings.alerts.rules is None:
        fail("no rules file: give --rules FILE (or alerts.rules in the config)")
    a = settings.attribution
    repositories = build.load_attribution(settings).repositories if (a.config or a.modules) else []
    now = now_ns()
    at = parse_time(now_text, now) if now_text else now
    store = build.open_store(settings)
    try:
        engine = build_alert_engine(settings, store, repositories=repositories)
        assert engine is not None
        try:
            report = engine.evaluate_once(at if at is not None else now, dry_run=dry_run)
        finally:
            for sink in engine.sinks.values():
                sink.close()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(render_alerts(report))
    if not report.leader:
        click.echo("prodloop: another replica holds the evaluation lease; nothing was evaluated", err=True)
    for e in report.errors:
        click.echo(f"prodloop: error: {e}", err=True)
    if report.errors:
        sys.exit(1)
