"""The ticket bodies of findings: title, body, update and recovery notes, the dashboard link.

Pure: a :class:`attribution.rules.findings.Finding` in, a :class:`collector.codec.ticket_document.Doc`
out (the sinks render it as Markdown or ADF).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from attribution.events import format_rfc3339, format_window
from attribution.rules.findings import Finding, Measurement
from attribution.rules.values import format_duration, format_value
from collector.codec.ticket_blocks import Block, Bullets, Heading, Inline, Para, Table, Text
from collector.codec.ticket_document import Doc, marker
from collector.errors import ConfigError
from collector.ports import FindingSuspects

NS = 1_000_000_000


class _UrlVars(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise ConfigError(
            f"alerts.dashboard_url: unknown placeholder {{{key}}}; use {', '.join('{' + k + '}' for k in sorted(self))}"
        )


def dashboard_link(template: str, f: Finding) -> str:
    """The configured URL template with the module and time range filled in (URL-encoded)."""
    if not template:
        return ""
    o = f.observation
    lo, hi = o.range_from_unix_nano, o.range_to_unix_nano
    values = _UrlVars(
        service=f.key.service,
        environment=f.key.environment,
        module=f.key.module,
        rule=f.rule.name,
        fingerprint=f.fingerprint,
        from_ms=str(lo // 1_000_000),
        to_ms=str(hi // 1_000_000),
        from_s=str(lo // NS),
        to_s=str(hi // NS),
        **{"from": format_rfc3339(lo), "to": format_rfc3339(hi)},
    )
    encoded = _UrlVars({k: quote(v, safe="") for k, v in values.items()})
    return template.format_map(encoded)


def _ts(unix_nano: int | None) -> str:
    return format_rfc3339(unix_nano) if unix_nano else "-"


def _p(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:.2g}" if x >= 1e-4 else "< 0.0001"


def evidence_table(f: Finding) -> Table | Bullets:
    ms: Sequence[Measurement] = f.observation.measurements
    kind = f.rule.kind
    if kind == "regression_after_deploy":
        rows = []
        for m in ms:
            change = "inf" if m.relative_change == float("inf") else f"{100 * m.relative_change:+.0f}%"
            rows.append(
                (
                    m.metric,
                    format_value(m.metric, m.before),
                    format_value(m.metric, m.after),
                    change,
                    f">= +{100 * m.threshold:g}%",
                    _p(m.p_value),
                    m.test,
                    "yes" if m.breached else "no",
                )
            )
        return Table(
            ("metric", "before", "after", "change", "limit", "p-value", "test", "breached"), tuple(rows)
        )
    if kind == "threshold":
        p = f.rule.params
        op = getattr(p, "op", "above")
        return Table(
            ("metric", "value", "limit", "spans"),
            tuple(
                (
                    m.metric,
                    format_value(m.metric, m.value),
                    f"{op} {format_value(m.metric, m.threshold)}",
                    str(f.observation.samples),
                )
                for m in ms
            ),
        )
    if kind == "cost_share":
        return Table(
            ("measure", "value", "limit"),
            tuple(
                (
                    m.metric.replace("_", " ") + (f" ({m.note})" if m.note else ""),
                    format_value("ratio" if m.metric == "ratio" else "share", m.value),
                    "-"
                    if m.threshold != m.threshold
                    else format_value("ratio" if m.metric == "ratio" else "share", m.threshold),
                )
                for m in ms
            ),
        )
    if kind == "incident_recurrence":
        return Bullets(tuple((Text(i, code=True),) for i in f.observation.incidents) or (("(none)",),))
    return Bullets(((f.observation.summary,),))


def _sha(s: str) -> str:
    return s[:12] if s else "?"


def deploy_blocks(f: Finding) -> list[Block]:
    o = f.observation
    d, prev = o.deploy, o.previous_deploy
    if d is None:
        return []
    before_sha = d.previous_sha or (prev.commit_sha if prev else "")
    repo = (d.repository or o.repository).rstrip("/")
    items: list[tuple[Inline, ...]] = []
    run = (" (", Text("pipeline run", href=d.url), ")") if d.url else ()
    items.append(
        (
            "Deploy ",
            Text(d.deploy_id, code=True),
            f" of {d.service} ({d.environment}) at {_ts(d.deployed_at_unix_nano)}",
            *run,
        )
    )
    shas: tuple[Inline, ...] = (
        "Commits ",
        Text(_sha(before_sha), code=True),
        " → ",
        Text(_sha(d.commit_sha), code=True),
    )
    if repo.startswith("https://github.com/") and before_sha and d.commit_sha:
        shas += (" (", Text("compare", href=f"{repo}/compare/{before_sha}...{d.commit_sha}"), ")")
    items.append(shas)
    if prev is not None:
        items.append(
            ("Previous deploy ", Text(prev.deploy_id, code=True), f" at {_ts(prev.deployed_at_unix_nano)}")
        )
    if o.before_window is not None and o.after_window is not None:
        items.append(
            (
                f"Compared windows: before {format_window(*o.before_window)} (spans of ",
                Text(prev.deploy_id if prev else "?", code=True),
                f"), after {format_window(*o.after_window)} (spans of ",
                Text(d.deploy_id, code=True),
                "); the aggregation window holding the deploy splits by deploy id",
            )
        )
    return [Heading("Deploy"), Bullets(tuple(items))]


def suspect_blocks(found: FindingSuspects | None) -> list[Block]:
    """The "Suspect commits" section: the commits of the blamed deploy ranked by their churn in
    the module (attribution.suspects), linked to the commits and the pull requests they name."""
    if found is None or not found.suspects:
        return []
    repo = found.repository_url
    items: list[tuple[Inline, ...]] = []
    for s in found.suspects:
        sha = Text(s.sha[:12], code=True, href=f"{repo}/commit/{s.sha}" if repo else "")
        churn = f"{s.module_churn} changed lines in the module" if s.touched else "did not touch the module"
        parts: list[Inline] = [sha, f" {s.subject} — {s.author_name}, {churn}"]
        for n in s.pull_requests:
            parts += [", ", Text(f"#{n}", href=f"{repo}/pull/{n}" if repo else "")]
        if s.files:
            parts.append(f" ({', '.join(s.files[:3])}{', …' if len(s.files) > 3 else ''})")
        items.append(tuple(parts))
    lead = Para(
        (f"The commits of {found.deploy_id}, those that changed the module first, by their churn there:",)
    )
    return [Heading("Suspect commits"), lead, Bullets(tuple(items))]


def ticket_doc(
    f: Finding,
    *,
    dashboard_url: str = "",
    previous_url: str = "",
    generation: int = 1,
    suspects: FindingSuspects | None = None,
) -> Doc:
    """The ticket body: what, since when, the numbers, the code and owners, the deploy and its
    suspect commits, the rule."""
    o = f.observation
    k = f.key
    blocks: list[Block] = []
    if f.rule.ticket.body:
        blocks.append(Para((_template(f.rule.ticket.body, f),)))
    where = k.module or k.service
    scope = f" in {k.service} ({k.environment or 'any environment'})" if k.module and k.service else ""
    blocks.append(Para((Text(where, bold=True), f"{scope}: {o.summary}.")))
    since = f.breach_since_unix_nano
    blocks.append(
        Para(
            (
                f"Breaching since {_ts(since)}",
                f" (held for {format_duration(f.evaluated_at_unix_nano - since)})" if since else "",
                f"; evaluated at {_ts(f.evaluated_at_unix_nano)}. Severity: ",
                Text(f.rule.severity, bold=True),
                ".",
            )
        )
    )
    if previous_url:
        blocks.append(
            Para(
                (
                    "The previous ticket (",
                    Text(previous_url, href=previous_url),
                    ") was closed while the breach persisted past the cooldown; this is ticket "
                    f"#{generation} for it.",
                )
            )
        )
    blocks += [Heading("Evidence"), evidence_table(f)]
    blocks += deploy_blocks(f)
    blocks += suspect_blocks(suspects)
    code: list[tuple[Inline, ...]] = []
    if k.module:
        code.append(("Module ", Text(k.module, code=True)))
    if f.code_paths:
        parts: list[Inline] = ["Code paths "]
        for i, pth in enumerate(f.code_paths):
            parts += [", " if i else "", Text(pth, code=True)]
        code.append(tuple(parts))
    owners = o.owners
    code.append(("Owners ", ", ".join(owners) if owners else "(none: add the module's path to CODEOWNERS)"))
    blocks += [Heading("Code"), Bullets(tuple(code))]
    link = dashboard_link(dashboard_url, f)
    if link:
        blocks.append(
            Para(
                (
                    Text("Dashboard", href=link),
                    f": {k.module or k.service}, {_ts(o.range_from_unix_nano)} to {_ts(o.range_to_unix_nano)}",
                )
            )
        )
    rule_items: list[tuple[Inline, ...]] = [
        ("Rule ", Text(f.rule.name, code=True), f" ({f.rule.kind})"),
        ("Condition: ", f.rule.describe()),
    ]
    if f.rule.description:
        rule_items.append((f.rule.description,))
    rule_items.append(
        ("Fingerprint ", Text(f.fingerprint, code=True), " (rule, service, environment, module)")
    )
    blocks += [Heading("Rule"), Bullets(tuple(rule_items))]
    return Doc(tuple(blocks), marker(f.fingerprint, generation))


def _template(text: str, f: Finding) -> str:
    return text.format(
        rule=f.rule.name,
        kind=f.rule.kind,
        severity=f.rule.severity,
        service=f.key.service,
        environment=f.key.environment,
        module=f.key.module or f.key.service,
        summary=f.observation.summary,
        owners=", ".join(f.observation.owners),
    )


def ticket_title(f: Finding) -> str:
    return " ".join(_template(f.rule.ticket.title, f).split())


def note_doc(f: Finding, kind: str, generation: int, *, dashboard_url: str = "") -> Doc:
    o = f.observation
    if kind == "recovered":
        head = (
            Text("Recovered", bold=True),
            f": clear at every evaluation for {format_duration(f.rule.ticket.recover_after_ns)} "
            f"(evaluated at {_ts(f.evaluated_at_unix_nano)}). Now: {o.summary}.",
        )
    else:
        head = (
            Text("Still breaching", bold=True),
            f" at {_ts(f.evaluated_at_unix_nano)} (since {_ts(f.breach_since_unix_nano)}): {o.summary}.",
        )
    blocks: list[Block] = [Para(head), evidence_table(f), *deploy_blocks(f)]
    link = dashboard_link(dashboard_url, f)
    if link:
        blocks.append(Para((Text("Dashboard", href=link),)))
    return Doc(tuple(blocks), marker(f.fingerprint, generation))
