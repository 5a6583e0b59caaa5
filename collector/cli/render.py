"""What the CLI prints: tables, the module table, the alert report, the ingest summary, errors."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from attribution.events import format_rfc3339, format_window

if TYPE_CHECKING:
    from collector.app.attribution_files import LoadedAttribution


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"prodloop: error: {message}", err=True)
    sys.exit(code)


def warn_problems(loaded: LoadedAttribution) -> None:
    for p in loaded.codeowners_problems:
        click.echo(f"prodloop: {p.severity}: {p.source}:{p.line}: {p.message}", err=True)
    for m in loaded.module_problems:
        click.echo(f"prodloop: {m}", err=True)


def render_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def human_duration(seconds: float | None, none: str = "-") -> str:
    """Seconds as a short human duration: "45s", "12m", "3.5h", "2.1d"; None is ``none``."""
    if seconds is None:
        return none
    s = float(seconds)
    if abs(s) < 60:
        return f"{s:.0f}s"
    if abs(s) < 3600:
        return f"{s / 60:.0f}m"
    if abs(s) < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _short_sha(sha: str) -> str:
    return sha[:7] if sha else "-"


def _num(v: float | None) -> str:
    """A duration (ms or s) in at most 6 characters, 3 significant digits for small values."""
    if v is None or v != v:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# Columns of the module table in the order shown; the ``optional`` ones go first when the
# table is wider than asked, then empty COST/EXC columns, then MODULE and OWNERS are clipped.
_MODULE_COLUMNS: tuple[tuple[str, bool, bool], ...] = (  # header, right-aligned, optional
    ("MODULE", False, False),
    ("OWNERS", False, False),
    ("COMMIT", False, False),
    ("DEPLOY", False, True),
    ("SPANS", True, False),
    ("ADJ", True, True),
    ("ERR%", True, False),
    ("P50 ms", True, True),
    ("P95 ms", True, False),
    ("P99 ms", True, True),
    ("SELF s", True, False),
    ("SELF%", True, False),
    ("SELF P95", True, False),
    ("EXC", True, False),
    ("COST $", True, False),
)
_CLIPS = ((32, 24), (28, 20), (24, 16), (20, 12))  # (MODULE, OWNERS) widths tried in turn
_INDENT = "  "


def _module_cells(r: Mapping[str, Any]) -> list[str]:
    module = r["module"]
    if r.get("unattributed_reasons"):
        module += " [" + ",".join(r["unattributed_reasons"]) + "]"
    measured = bool(r.get("self_spans"))  # no self data yet (or rows older than self time): "-"
    self_ns = r.get("self_time_adjusted_sum_ns") if measured else None
    share = r.get("self_share") if measured else None
    cost = r.get("cost_usd")
    exc = r.get("exceptions")
    return [
        module,
        ",".join(r["owners"]) or "-",
        _short_sha(r["commit_sha"]),
        r.get("deploy_id") or "-",
        f"{r['spans']}",
        f"{r['spans_adjusted']:.0f}",
        f"{100 * r['error_rate']:.2f}",
        _num(r["p50_ms"]),
        _num(r["p95_ms"]),
        _num(r["p99_ms"]),
        "-" if self_ns is None else _num(self_ns / 1e9),
        "-" if share is None else f"{100 * share:.1f}",
        _num(r.get("self_p95_ms")),
        "-" if exc is None else f"{exc}",
        "-" if cost is None else f"{cost:.2f}",
    ]


def format_range(start_unix_nano: int, end_unix_nano: int) -> str:
    """A UTC range in short: ``2026-12-03 10:00–12:00Z``, the end's date only when it differs."""
    start, end = format_rfc3339(start_unix_nano), format_rfc3339(end_unix_nano)

    def clock(t: str) -> str:  # HH:MM, or HH:MM:SS when the seconds are not 0
        hms = t[11:19]
        return hms[:5] if hms.endswith(":00") else hms

    tail = clock(end) if start[:10] == end[:10] else f"{end[:10]} {clock(end)}"
    return f"{start[:10]} {clock(start)}–{tail}Z"


def render_modules_table(rows: Sequence[Mapping[str, Any]], width: int = 100, title: str = "") -> str:
    """The module table: ``title``, then under a line per service and environment (in the rows'
    order), its rows.

    SELF s is the sampling-adjusted self time (a span's duration minus its children's) and
    SELF% its share of the service's; EXC the exceptions thrown in the module.  Columns are
    dropped or clipped to fit ``width`` where possible.
    """
    if not rows:
        return "(no data: ingest traces first, e.g. `prodloop ingest --traces FILE`, or run `prodloop demo`)"
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for r in rows:
        groups.setdefault((r["service"], r["environment"]), []).append(_module_cells(r))
    cells = [c for body in groups.values() for c in body]
    keep = list(range(len(_MODULE_COLUMNS)))
    clip = (10_000, 10_000)

    def widths() -> list[int]:
        out = []
        for i in keep:
            w = max(len(_MODULE_COLUMNS[i][0]), *(len(c[i]) for c in cells))
            out.append(min(w, clip[i]) if i < 2 else w)
        return out

    def too_wide() -> bool:
        return len(_INDENT) + sum(widths()) + 2 * (len(keep) - 1) > width

    optional = [i for i, (_, _, opt) in enumerate(_MODULE_COLUMNS) if opt]
    empty = [
        i
        for i, (h, _, _) in enumerate(_MODULE_COLUMNS)
        if h in ("EXC", "COST $") and all(c[i] in ("-", "0") for c in cells)
    ]
    for i in optional + empty[::-1]:
        if too_wide():
            keep.remove(i)
    for c in _CLIPS:
        if too_wide():
            clip = c
    ws = widths()

    def line(row: list[str]) -> str:
        parts = []
        for w, i in zip(ws, keep, strict=True):
            text = _clip(row[i], w)
            parts.append(text.rjust(w) if _MODULE_COLUMNS[i][1] else text.ljust(w))
        return (_INDENT + "  ".join(parts)).rstrip()

    out = [title] if title else []
    out.append(line([h for h, _, _ in _MODULE_COLUMNS]))
    for (service, environment), body in groups.items():
        out.append(f"{service} ({environment or '-'})")
        out.extend(line(c) for c in body)
    return "\n".join(out)


def print_ingest_summary(s: Any) -> None:
    """``prodloop ingest``'s text output (``s``: a :class:`collector.pipelines.files.IngestSummary`)."""
    click.echo(f"files:            {s.files}")
    click.echo(f"records:          {s.records}")
    click.echo(f"spans read:       {s.spans_read}")
    click.echo(f"attributed:       {s.spans_attributed} ({100 * s.attributed_ratio:.1f}%)")
    for reason, n in sorted(s.unattributed_by_reason.items()):
        click.echo(f"  unattributed ({reason}): {n}")
    if s.overflow_spans:
        click.echo(f"overflow spans:   {s.overflow_spans} (cardinality cap reached)")
    click.echo(f"deploys read:     {s.deploys_read}")
    if s.incidents_read or s.incidents_rejected:
        click.echo(f"incidents read:   {s.incidents_read}")
    click.echo(
        f"rejected:         {s.rejected} ({s.rejected_records} records, {s.rejected_spans} spans, "
        f"{s.deploys_rejected} deploys, {s.incidents_rejected} incidents)"
    )
    for reason, n in sorted(s.rejected_by_reason.items()):
        click.echo(f"  {reason}: {n}")
    for m in s.messages:
        click.echo(f"  - {m}")
    click.echo(f"rows written:     {s.rows_written}")


def _compared_windows(findings: Sequence[Any]) -> list[str]:
    """A line per deploy comparison of ``findings``: the exact windows its figures come from."""
    seen: dict[tuple[str, str], str] = {}
    for f in findings:
        o = f.observation
        if o.deploy is None or o.previous_deploy is None or o.before_window is None or o.after_window is None:
            continue
        key = (f.rule.name, o.deploy.deploy_id)
        seen[key] = (
            f"{f.rule.name}: {o.previous_deploy.deploy_id} before {format_window(*o.before_window)}"
            f" vs {o.deploy.deploy_id} after {format_window(*o.after_window)}"
        )
    return ["", "compared windows:", *(f"  {v}" for v in seen.values())] if seen else []


def render_alerts(report: Any) -> str:
    """``prodloop alerts evaluate``'s table (``report``: a :class:`collector.pipelines.alerts.EvaluationReport`)."""
    lines = [
        f"evaluated at {format_rfc3339(report.evaluated_at_unix_nano)}"
        + (" (dry run)" if report.dry_run else "")
    ]
    if not report.findings:
        lines.append("(nothing breaching)")
    else:
        body = []
        for f in report.findings:
            status = f.status
            if f.firing or f.recovered or f.status == "breach":
                status = "FIRING" if f.firing else "RECOVERED" if f.recovered else "pending"
            since = format_rfc3339(f.breach_since_unix_nano)[:19] if f.breach_since_unix_nano else "-"
            body.append(
                [
                    status,
                    f.rule.name,
                    f.key.service or "-",
                    f.key.environment or "-",
                    f.key.module or "-",
                    since,
                    f.observation.summary,
                ]
            )
        lines.append(
            render_table(["STATUS", "RULE", "SERVICE", "ENV", "MODULE", "SINCE", "WHY"], body, right=set())
        )
        lines += _compared_windows(report.findings)
    if report.actions:
        lines.append("")
        for act in report.actions:
            verb = act.action if act.done else f"would {act.action}" if report.dry_run else act.action
            where = f" on {act.sink}" if act.sink else ""
            ticket = f" {act.ticket}" if act.ticket else ""
            lines.append(f"  {verb}{where}{ticket}: {act.rule} {act.module or act.service}: {act.reason}")
    return "\n".join(lines)
