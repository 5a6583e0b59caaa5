"""``prodloop explain`` and ``prodloop check``: debug and validate the attribution files."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from collector.cli.options import (
    SettingsFlags,
    attribution_options,
    config_option,
    format_option,
    now_ns,
    parse_time,
)
from collector.cli.render import fail


@click.command()
@attribution_options
@config_option("YAML config file.")
@click.option(
    "--service",
    envvar="PRODLOOP_EXPLAIN__SERVICE",
    show_envvar=True,
    default="",
    help="Service, to pick its repository and service-scoped rules.",
)
@format_option(["table", "json"], "table")
@click.argument("paths", nargs=-1, required=True)
def explain(
    flags: SettingsFlags,
    service: str,
    fmt: str,
    paths: tuple[str, ...],
) -> None:
    """Why is PATH attributed to that module and those owners?"""
    from attribution.attribute import Attributor  # noqa: PLC0415  lazy: the attribution core, 40 ms of --help
    from collector.app.attribution_files import load_attribution_from  # noqa: PLC0415  lazy: ruamel

    settings = flags.settings()
    loaded = load_attribution_from(settings)
    attributor = Attributor(loaded.repositories)
    results: list[dict[str, Any]] = []
    for p in paths:
        e = attributor.explain(p, service)
        results.append(
            {
                "path": e.path,
                "normalized_path": e.normalized_path,
                "repository": e.repository,
                "module": e.module,
                "module_rule": e.module_rule or None,
                "owners": list(e.owners),
                "codeowners_line": (
                    {"number": e.codeowners_line, "text": e.codeowners_text} if e.codeowners_line else None
                ),
                "unattributed_reason": e.reason or None,
            }
        )
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['path']}")
        if r["normalized_path"] is None:
            click.echo("  unattributed: external (outside every source root; add --source-root)")
            continue
        click.echo(f"  normalized path: {r['normalized_path']}")
        click.echo(f"  module:          {r['module']}")
        click.echo(f"  module rule:     {r['module_rule']}")
        click.echo(f"  owners:          {', '.join(r['owners']) or '(none)'}")
        line = r["codeowners_line"]
        click.echo(
            f"  CODEOWNERS line: {line['number']}: {line['text']}"
            if line
            else "  CODEOWNERS line: (no line matches)"
        )


@click.command()
@attribution_options
@config_option("YAML config file.")
@click.option(
    "--store",
    "store_dsn",
    envvar="PRODLOOP_CHECK__STORE",
    show_envvar=True,
    default=None,
    help="Also warn about configured modules that matched no span stored here over --since "
    "(chdb:///path or http(s)://user:pass@host:8123/db).",
)
@click.option(
    "--database",
    envvar="PRODLOOP_STORE__DATABASE",
    show_envvar=True,
    default=None,
    help="ClickHouse database of --store [default: prodloop].",
)
@click.option(
    "--since",
    envvar="PRODLOOP_CHECK__SINCE",
    show_envvar=True,
    default="-7d",
    show_default=True,
    help="With --store: the range checked, up to now (RFC 3339, unix s, or -2h).",
)
def check(
    flags: SettingsFlags,
    since: str,
) -> None:
    """Validate CODEOWNERS and modules files; exit 1 on errors.  With --store, also warn
    about configured modules that matched nothing in the store."""
    from collector.app.attribution_files import load_attribution_from  # noqa: PLC0415  lazy: ruamel and the attribution core

    settings = flags.settings()
    if not (settings.attribution.codeowners or settings.attribution.modules or settings.attribution.config):
        fail("nothing to check: give --codeowners, --modules or --attribution")
    loaded = load_attribution_from(settings)
    errors = 0
    warnings = 0
    for p in loaded.codeowners_problems:
        click.echo(f"{p.source}:{p.line}: {p.severity}: {p.message}")
        if p.text:
            click.echo(f"    {p.text}")
        errors += p.severity == "error"
        warnings += p.severity != "error"
    for m in loaded.module_problems:
        click.echo(str(m))
        errors += m.severity == "error"
        warnings += m.severity != "error"
    if flags.store_dsn:
        from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
        from collector.cli.coverage import unmatched_module_warnings  # noqa: PLC0415  lazy, as build

        now = now_ns()
        from_ns = parse_time(since, now) or 0
        store = build.open_store(settings)
        try:
            for w in unmatched_module_warnings(store, loaded.repositories, from_ns, now):
                click.echo(w)
                warnings += 1
        finally:
            store.close()
    rules = sum(len(r.codeowners.rules) for r in loaded.repositories)
    modules = sum(len(r.modules.rules) for r in loaded.repositories)
    click.echo(
        f"checked {len(loaded.repositories)} repositories: {rules} CODEOWNERS rules, {modules} module rules; "
        f"{errors} errors, {warnings} warnings"
    )
    if errors:
        sys.exit(1)
