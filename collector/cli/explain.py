"""``prodloop explain`` and ``prodloop check``: debug attribution, and validate the config files."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from collector.cli.options import (
    SettingsFlags,
    attribution_options,
    config_option,
    format_option,
    now_ns,
    parse_time,
    rules_option,
)
from collector.cli.render import fail
from collector.errors import ConfigError


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


def _at(source: str, line: int) -> str:
    """``file:line:column`` of a whole-line problem (line 0: the file as a whole)."""
    return f"{source}:{max(line, 1)}:1"


@click.command()
@attribution_options
@config_option(
    "YAML config file (prodloop.yaml) to validate; its attribution and rules files are checked too."
)
@rules_option("rules.yaml to validate [default: alerts.rules of the config].")
@click.option(
    "--store",
    "store_dsn",
    envvar="PRODLOOP_CHECK__STORE",
    show_envvar=True,
    default=None,
    help="Also warn about configured modules that matched no span stored here over --since "
    "(chdb:///path or http(s)://user@host:8123/db).",
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
    rules_file: Path | None,
    since: str,
) -> None:
    """Validate prodloop.yaml, rules.yaml, CODEOWNERS and modules files, without a store; print
    each problem as file:line:column and exit 1 on errors.  With --store, also warn about
    configured modules that matched nothing in the store."""
    from collector.app.attribution_files import load_attribution_from  # noqa: PLC0415  lazy: ruamel and the attribution core
    from collector.app.rules_file import load_rules  # noqa: PLC0415  lazy, as attribution_files

    errors = 0
    warnings = 0

    def report(exc: ConfigError) -> None:
        nonlocal errors
        for line in str(exc).splitlines():  # one error a line
            click.echo(line)
            errors += 1

    try:
        settings = flags.settings()
    except ConfigError as exc:
        report(exc)
        settings = dataclasses.replace(flags, config_file=None).settings()
    rules_file = rules_file or settings.alerts.rules
    a = settings.attribution
    if not (flags.config_file or rules_file or a.codeowners or a.modules or a.config):
        fail("nothing to check: give --config, --rules, --codeowners, --modules or --attribution")
    if rules_file is not None:
        try:
            rule_count = len(load_rules(rules_file).rules)
            click.echo(f"checked {rules_file}: {rule_count} rules")
        except ConfigError as exc:
            report(exc)
    try:
        loaded = load_attribution_from(settings)
    except ConfigError as exc:
        report(exc)
        click.echo(f"{errors} errors, {warnings} warnings")
        sys.exit(1)
    for p in loaded.codeowners_problems:
        click.echo(f"{_at(p.source, p.line)}: {p.severity}: {p.message}")
        if p.text:
            click.echo(f"    {p.text}")
        errors += p.severity == "error"
        warnings += p.severity != "error"
    for m in loaded.module_problems:
        click.echo(f"{_at(m.source, m.line)}: {m.severity}: {m.message}")
        errors += m.severity == "error"
        warnings += m.severity != "error"
    if flags.store_dsn:
        from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help
        from collector.cli.coverage import unmatched_module_warnings  # noqa: PLC0415  lazy, as build

        now = now_ns()
        from_ns = parse_time(since, now) or 0
        store = build.open_store(settings, create=False)
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
