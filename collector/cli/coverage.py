"""``prodloop query coverage``: how much of each service is attributed, and why not.

Also the store half of ``prodloop check --store``: configured modules nothing matched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from attribution.events import format_rfc3339
from collector.cli.options import SettingsFlags, format_option, now_ns, parse_time, store_options
from collector.cli.render import render_table

if TYPE_CHECKING:
    from attribution.repository import Repository
    from collector.ports import CoverageReadModel


@click.command("coverage")
@store_options
@click.option(
    "--since",
    envvar="PRODLOOP_QUERY__SINCE",
    show_envvar=True,
    default="-7d",
    show_default=True,
    help="Start (RFC 3339, unix s, or -2h); up to now.",
)
@click.option("--service", envvar="PRODLOOP_QUERY__SERVICE", show_envvar=True, help="Only this service.")
@click.option(
    "--environment",
    envvar="PRODLOOP_QUERY__ENVIRONMENT",
    show_envvar=True,
    default=None,
    help="Only this environment.",
)
@format_option(["table", "json"], "table")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    envvar="PRODLOOP_QUERY__TOP",
    show_envvar=True,
    help="Unattributed span names shown per service.",
)
def coverage(
    flags: SettingsFlags,
    since: str,
    service: str | None,
    environment: str | None,
    fmt: str,
    top: int,
) -> None:
    """Per service: the share of spans and of self time attributed to a module, and the
    unattributed spans by reason and by span name."""
    from collector.app import build  # noqa: PLC0415  lazy: the store and pipelines cost 0.3 s of --help

    now = now_ns()
    from_ns = parse_time(since, now)
    store = build.open_store(flags.settings(), create=False)
    try:
        rows = store.query_coverage(
            from_unix_nano=from_ns, to_unix_nano=now, service=service, environment=environment, top=top
        )
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_coverage(rows))


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _label(r: Mapping[str, Any]) -> str:
    return f"{r['service']} ({r['environment']})" if r["environment"] else str(r["service"])


def headline(r: Mapping[str, Any]) -> str:
    """One service's answer: its shares attributed and its biggest gap."""
    out = f"{_label(r)}: {_pct(r['attributed_share'])} of spans"
    if r["attributed_self_time_share"] is not None:
        out += f", {_pct(r['attributed_self_time_share'])} of self time"
    out += " attributed"
    if not r["unattributed_spans"]:
        return out + "; no gap"
    if r["top_unattributed"]:
        gap = r["top_unattributed"][0]
        return out + f"; top gap: {gap['spans']} spans {gap['span_name']!r} ({gap['unattributed_reason']})"
    reason, n = max(r["unattributed_by_reason"].items(), key=lambda kv: (kv[1], kv[0]), default=("?", 0))
    return out + f"; top gap: {n} spans ({reason}; span names not recorded)"


def render_coverage(rows: Sequence[Mapping[str, Any]]) -> str:
    """The headlines, then the per-service table and the top unattributed span names."""
    if not rows:
        return "(no spans in the range: ingest traces first, or widen --since)"
    lines = [headline(r) for r in rows]
    body = [
        [
            r["service"],
            r["environment"] or "-",
            str(r["spans"]),
            str(r["attributed_spans"]),
            _pct(r["attributed_share"]),
            _pct(r["attributed_self_time_share"]),
            ", ".join(f"{k} {v}" for k, v in r["unattributed_by_reason"].items()) or "-",
        ]
        for r in rows
    ]
    lines += [
        "",
        render_table(
            ["SERVICE", "ENV", "SPANS", "ATTRIBUTED", "SPANS%", "SELF%", "UNATTRIBUTED BY REASON"],
            body,
            right={2, 3, 4, 5},
        ),
    ]
    names = [
        [r["service"], r["environment"] or "-", str(n["spans"]), n["unattributed_reason"], n["span_name"]]
        for r in rows
        for n in r["top_unattributed"]
    ]
    if names:
        lines += [
            "",
            "top unattributed span names:",
            render_table(["SERVICE", "ENV", "SPANS", "REASON", "SPAN NAME"], names, right={2}),
        ]
    return "\n".join(lines)


def unmatched_module_warnings(
    store: CoverageReadModel, repositories: Sequence[Repository], from_ns: int, to_ns: int
) -> list[str]:
    """``check --store``: a warning per configured module (a module rule's name) that matched
    no span stored over ``[from, to)``, at its first rule's file:line."""
    where: dict[str, tuple[str, int]] = {}
    rules: dict[str, int] = {}
    for repo in repositories:
        for rule in repo.modules.rules:
            where.setdefault(rule.name, (repo.modules.source, rule.line))
            rules[rule.name] = rules.get(rule.name, 0) + 1
    if not where:
        return []
    span = f"{format_rfc3339(from_ns)[:19]}Z..{format_rfc3339(to_ns)[:19]}Z"
    if not store.has_spans(from_unix_nano=from_ns, to_unix_nano=to_ns):
        click.echo(f"store: no spans stored over {span}; not checking which modules matched")
        return []
    out = []
    for name in store.unmatched_modules(where, from_unix_nano=from_ns, to_unix_nano=to_ns):
        source, line = where[name]
        loc = f"{source}:{line}" if line else source
        more = f" ({rules[name]} rules)" if rules[name] > 1 else ""
        out.append(f"{loc}: warning: module {name!r}{more} matched no span in the store over {span}")
    return out
