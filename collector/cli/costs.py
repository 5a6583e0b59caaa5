"""``prodloop costs import`` (billing files into the store) and ``prodloop query cost`` (each
module's cost against its share of the traffic).  The method: docs/cost.md."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attribution.cost import MICRO_USD, BillingFile, format_usd, headline, parse_billing_csv
from collector.cli.options import (
    SettingsFlags,
    format_option,
    now_ns,
    range_options,
    store_options,
    time_range,
)
from collector.cli.render import fail, render_table

if TYPE_CHECKING:
    from attribution.cost import Allocation, ModuleCost

_MAX_ERRORS_SHOWN = 50


@click.group()
def costs() -> None:
    """Service costs: import billing files (FOCUS columns); see `prodloop query cost`."""


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read the billing file: {exc}")


@costs.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@store_options
@click.option(
    "--source",
    envvar="PRODLOOP_COSTS__SOURCE",
    show_envvar=True,
    default=None,
    help="Name the entries are stored under [default: the file's name].  A later import under the "
    "same name replaces the earlier values of the same service, environment and period: give "
    "re-deliveries of one bill (month-to-date exports) one name.",
)
@click.option(
    "--cost-column",
    envvar="PRODLOOP_COSTS__COST_COLUMN",
    show_envvar=True,
    default=None,
    help="The cost column [default: EffectiveCost when present, else BilledCost].",
)
@click.option(
    "--service-tag",
    envvar="PRODLOOP_COSTS__SERVICE_TAG",
    show_envvar=True,
    default="service",
    show_default=True,
    help="Key of the Tags JSON naming the service (when there is no x_service column).",
)
@click.option(
    "--environment-tag",
    envvar="PRODLOOP_COSTS__ENVIRONMENT_TAG",
    show_envvar=True,
    default="environment",
    show_default=True,
    help="Key of the Tags JSON naming the environment (when there is no x_environment column).",
)
@click.option(
    "--service",
    "default_service",
    envvar="PRODLOOP_COSTS__SERVICE",
    show_envvar=True,
    default="",
    help="Service of the rows that name none [default: such rows are skipped].",
)
@click.option(
    "--environment",
    "default_environment",
    envvar="PRODLOOP_COSTS__ENVIRONMENT",
    show_envvar=True,
    default="",
    help="Environment of the rows that name none (match the spans' deployment.environment.name).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="PRODLOOP_COSTS__DRY_RUN",
    show_envvar=True,
    help="Read and check the files; store nothing.",
)
@format_option(["text", "json"], "text")
def costs_import(
    files: tuple[Path, ...],
    flags: SettingsFlags,
    source: str | None,
    cost_column: str | None,
    service_tag: str,
    environment_tag: str,
    default_service: str,
    default_environment: str,
    dry_run: bool,
    fmt: str,
) -> None:
    """Import billing CSV files (FOCUS 1.x columns; .csv.gz too) as costs per service and day.

    All or nothing: a file with any unreadable row (each named FILE:LINE: COLUMN) imports nothing.
    Importing the same file again adds nothing.
    """
    if source and len(files) > 1:
        fail("--source names one file's entries: import one file at a time with it")
    parsed: list[BillingFile] = []
    for path in files:
        parsed.append(
            parse_billing_csv(
                _read(path),
                source or path.name,
                cost_column=cost_column,
                service_tag=service_tag,
                environment_tag=environment_tag,
                default_service=default_service,
                default_environment=default_environment,
            )
        )
    errors = [e for p in parsed for e in p.errors]
    for e in errors[:_MAX_ERRORS_SHOWN]:
        click.echo(f"prodloop: error: {e}", err=True)
    if errors:
        more = f" (the first {_MAX_ERRORS_SHOWN} shown)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        fail(f"{len(errors)} unreadable rows{more}; nothing was imported")
    written = 0
    if not dry_run:
        from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help

        store = build.open_store(flags.settings())
        try:
            for p in parsed:
                written += store.write_costs(p.entries, source=p.source, imported_at_unix_nano=now_ns())
        finally:
            store.close()
    if fmt == "json":
        click.echo(
            json.dumps({"files": [_file_json(p) for p in parsed], "entries_written": written}, indent=2)
        )
        return
    for p in parsed:
        services = sorted({f"{e.service}/{e.environment}" if e.environment else e.service for e in p.entries})
        click.echo(
            f"{p.source}: {p.rows} rows ({p.cost_column}) -> {len(p.entries)} entries, {format_usd(p.micro_usd)}"
            f" for {', '.join(services) or 'no service'}"
        )
        if p.skipped_rows:
            click.echo(
                f"  skipped {p.skipped_rows} rows naming no service ({format_usd(p.skipped_micro_usd)}): "
                f"tag them, or give --service"
            )
    click.echo("dry run: nothing stored" if dry_run else f"stored {written} entries")


def _file_json(p: BillingFile) -> dict[str, Any]:
    return {
        "source": p.source,
        "cost_column": p.cost_column,
        "rows": p.rows,
        "entries": len(p.entries),
        "cost_micro_usd": p.micro_usd,
        "skipped_rows": p.skipped_rows,
        "skipped_micro_usd": p.skipped_micro_usd,
    }


@click.command("cost")
@store_options
@range_options("-7d")
@click.option("--service", envvar="PRODLOOP_QUERY__SERVICE", show_envvar=True, help="Only this service.")
@click.option(
    "--environment",
    envvar="PRODLOOP_QUERY__ENVIRONMENT",
    show_envvar=True,
    default=None,
    help="Only this environment.",
)
@click.option(
    "--limit",
    type=int,
    default=0,
    envvar="PRODLOOP_QUERY__LIMIT",
    show_envvar=True,
    help="At most N rows (0: all).",
)
@format_option(["table", "json"], "table")
def query_cost(
    flags: SettingsFlags,
    since: str,
    until: str,
    service: str | None,
    environment: str | None,
    limit: int,
    fmt: str,
) -> None:
    """Per module: its cost, its share of the service's cost and traffic, sorted by their ratio.

    Costs are imported billing entries (`prodloop costs import`) or, on days without them, the
    configured rates (cost.rates); each day's cost is split by CPU time where spans carry it,
    else by self time.  A ratio of 4.0 reads "10% of the traffic, 40% of the cost".
    """
    from collector.app import build  # noqa: PLC0415  lazy: the store costs 0.3 s of --help

    now = now_ns()
    start, end = time_range(since, until, now)
    store = build.open_store(flags.settings(), create=False)
    try:
        rows, allocation = store.query_costs(start, end, service, environment)
    finally:
        store.close()
    line = headline(rows)
    shown = rows[:limit] if limit else rows
    if fmt == "json":
        click.echo(json.dumps(_report_json(start, end, line, shown, allocation), indent=2))
        return
    if not allocation.totals:
        click.echo(
            "(no costs in this range: import a billing file with `prodloop costs import FILE.csv`, "
            "or configure cost.rates)"
        )
        return
    click.echo(line)
    click.echo("")
    click.echo(render_cost_table(shown))
    click.echo("")
    for (svc, env), total in sorted(allocation.totals.items()):
        bases = ", ".join(b.replace("_", " ") for b in allocation.bases.get((svc, env), [])) or "none (idle)"
        click.echo(f"{svc}{'/' + env if env else ''}: {format_usd(total)}, split by {bases}")


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def render_cost_table(rows: list[ModuleCost]) -> str:
    body = [
        [
            r.service,
            r.environment or "-",
            r.module,
            ",".join(r.owners) or "-",
            f"{r.micro_usd / MICRO_USD:.2f}",
            _share(r.cost_share),
            _share(r.traffic_share),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            _share(r.self_time_share),
        ]
        for r in rows
    ]
    headers = ["SERVICE", "ENV", "MODULE", "OWNERS", "COST USD", "COST%", "TRAFFIC%", "RATIO", "SELF%"]
    return render_table(headers, body, right={4, 5, 6, 7, 8})


def _report_json(
    start: int, end: int, line: str, rows: list[ModuleCost], allocation: Allocation
) -> dict[str, Any]:
    return {
        "from_unix_nano": start,
        "to_unix_nano": end,
        "headline": line,
        "total_micro_usd": sum(allocation.totals.values()),
        "services": [
            {
                "service": svc,
                "environment": env,
                "cost_micro_usd": total,
                "cost_usd": total / MICRO_USD,
                "split_by": allocation.bases.get((svc, env), []),
            }
            for (svc, env), total in sorted(allocation.totals.items())
        ],
        "modules": [
            {
                "service": r.service,
                "environment": r.environment,
                "module": r.module,
                "owners": list(r.owners),
                "cost_micro_usd": r.micro_usd,
                "cost_usd": r.micro_usd / MICRO_USD,
                "cost_share": r.cost_share,
                "traffic_share": r.traffic_share,
                "ratio": r.ratio,
                "self_time_share": r.self_time_share,
            }
            for r in rows
        ],
    }
