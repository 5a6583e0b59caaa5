"""What the CLI prints: tables, the module table, the alert report, the ingest summary, errors."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from attribution.events import format_rfc3339

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


def _short_sha(sha: str) -> str:
    return sha[:10] if sha else "-"


def render_modules_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no data: ingest traces first, e.g. `prodloop ingest --traces FILE`, or run `prodloop demo`)"
    headers = [
        "SERVICE",
        "ENV",
        "MODULE",
        "OWNERS",
        "COMMIT",
        "SPANS",
        "ADJ",
        "ERR%",
        "P50 ms",
        "P95 ms",
        "P99 ms",
        "TOTAL s",
    ]
    body = []
    for r in rows:
        owners = ",".join(r["owners"]) or "-"
        module = r["module"]
        if r.get("unattributed_reasons"):
            module += " [" + ",".join(r["unattributed_reasons"]) + "]"
        body.append(
            [
                r["service"],
                r["environment"] or "-",
                module,
                owners if len(owners) <= 40 else owners[:37] + "...",
                _short_sha(r["commit_sha"]),
                f"{r['spans']}",
                f"{r['spans_adjusted']:.0f}",
                f"{100 * r['error_rate']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p95_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['duration_adjusted_sum_ms'] / 1000:.1f}",
            ]
        )
    return render_table(headers, body, right={5, 6, 7, 8, 9, 10, 11})


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
    rejected = s.rejected_records + s.rejected_spans + s.deploys_rejected
    click.echo(
        f"rejected:         {rejected} ({s.rejected_records} records, {s.rejected_spans} spans, {s.deploys_rejected} deploys)"
    )
    for reason, n in sorted(s.rejected_by_reason.items()):
        click.echo(f"  {reason}: {n}")
    for m in s.messages:
        click.echo(f"  - {m}")
    click.echo(f"rows written:     {s.rows_written}")


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
    if report.actions:
        lines.append("")
        for act in report.actions:
            verb = act.action if act.done else f"would {act.action}" if report.dry_run else act.action
            where = f" on {act.sink}" if act.sink else ""
            ticket = f" {act.ticket}" if act.ticket else ""
            lines.append(f"  {verb}{where}{ticket}: {act.rule} {act.module or act.service}: {act.reason}")
    return "\n".join(lines)
