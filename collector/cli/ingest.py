"""``prodloop ingest``: OTLP trace files and deploy events into the store."""

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
    store_options,
)
from collector.cli.render import print_ingest_summary, warn_problems
from collector.processing.runtime import tune_gc


@click.command()
@click.option(
    "--traces",
    "trace_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="OTLP file: JSON lines (one request per line) or length-prefixed protobuf. Repeatable.",
)
@click.option(
    "--deploys",
    "deploy_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Deploy events, one JSON object per line (schemas/events/deploy.schema.json). Repeatable.",
)
@click.option(
    "--incidents",
    "incident_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Incident events, one JSON object per line (schemas/events/incident.schema.json). Repeatable.",
)
@attribution_options
@store_options
@click.option(
    "--window-seconds",
    envvar="PRODLOOP_AGGREGATION__WINDOW_SECONDS",
    show_envvar=True,
    type=int,
    default=None,
    help="Aggregation window [default: 60].",
)
@click.option(
    "--sample-rate-attribute",
    envvar="PRODLOOP_ATTRIBUTION__SAMPLE_RATE_ATTRIBUTE",
    show_envvar=True,
    default=None,
    help="Span attribute holding '1 in N' sampling (e.g. SampleRate); else the ot=th tracestate is used.",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar="PRODLOOP_STRICT",
    show_envvar=True,
    help="Exit 1 if any record was rejected.",
)
@format_option(["text", "json"], "text")
def ingest(
    trace_files: tuple[Path, ...],
    deploy_files: tuple[Path, ...],
    incident_files: tuple[Path, ...],
    flags: SettingsFlags,
    window_seconds: int | None,
    sample_rate_attribute: str | None,
    strict: bool,
    fmt: str,
) -> None:
    """Ingest OTLP trace files, deploy events and incident events into the store."""
    if not (trace_files or deploy_files or incident_files):
        raise click.UsageError("give at least one of --traces, --deploys and --incidents")
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help

    extra: Overrides = {}
    if window_seconds:
        extra["aggregation"] = {"window_seconds": window_seconds}
    if sample_rate_attribute:
        extra["attribution"] = {"sample_rate_attribute": sample_rate_attribute}
    settings = flags.settings(extra)
    loaded = build.load_attribution(settings)
    warn_problems(loaded)
    store = build.open_store(settings)
    tune_gc()
    try:
        summary = build.ingest_files(
            settings,
            store,
            loaded.repositories,
            list(trace_files),
            list(deploy_files),
            now_unix_nano=now_ns(),
            incident_files=list(incident_files),
        )
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        print_ingest_summary(summary)
    if strict and summary.rejected:
        sys.exit(1)
