"""Alert evaluation: rules over the stored aggregates, tickets with their evidence, never twice.

The service (``prodloop run``) builds one :class:`AlertEngine` (:func:`build_alert_engine`)
and calls :meth:`AlertEngine.evaluate_once` every ``alerts.interval_seconds``; ``prodloop
alerts evaluate`` calls it once.  Each call:

1. takes the evaluation lease (:class:`Lease`): of several replicas, exactly one evaluates;
2. loads what the rules need (aggregates around recent deploys and over the rule windows,
   incidents, last-seen times, the open tickets) and evaluates every rule with the pure
   core (:func:`attribution.rules.evaluate_rule`);
3. drives each finding's ticket on each sink through its lifecycle (:class:`TicketBook`):

   - a firing finding without a ticket: record the *intent* (state ``intent``) in the
     ``tickets`` table, then create, then record ``open``.  A crash in between leaves the
     intent; the next evaluation *finds* the ticket by its fingerprint label instead of
     creating a second one;
   - a firing finding with an open ticket: a comment with fresh numbers, at most once per
     cooldown; if people closed the ticket and the breach persists past the cooldown, a new
     ticket (the next *generation*) that links the old one;
   - a finding clear for ``recover_after``: a recovery comment, and a close if configured.

Dry runs (``dry_run=True``) evaluate and report what would happen, touching nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from attribution.aggregate import AggregateRow
from attribution.events import format_rfc3339
from attribution.model import DeployEvent, IncidentEvent
from attribution.rules import (
    BREACH,
    DataRange,
    DeclaredModule,
    EvaluationData,
    Finding,
    FindingKey,
    Measurement,
    RuleSet,
    RulesFileError,
    evaluate_rule,
    evaluation_instant,
    format_duration,
    format_value,
    module_paths,
    parse_rules,
    required_ranges,
)
from collector.errors import ConfigError, ProdloopError, StoreError, TicketError
from collector.exporters.tickets.sinks import (
    Bullets,
    Doc,
    FileSink,
    GitHubSink,
    Heading,
    JiraSink,
    Note,
    Para,
    RetryPolicy,
    Table,
    Text,
    TicketDraft,
    TicketRef,
    TicketSink,
    WebhookSink,
    marker,
    read_secret,
)

log = logging.getLogger("prodloop.alerts")

NS = 1_000_000_000


# -- rules file ----------------------------------------------------------------------------------


def load_rules(path: Path) -> RuleSet:
    """Read and validate ``rules.yaml``; every problem is reported, naming rule and field."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: rules file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules file: {exc.strerror}") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_rules(data, str(path))
    except RulesFileError as exc:
        raise ConfigError(str(exc)) from None


def declared_modules(repositories: Sequence[Any]) -> list[DeclaredModule]:
    """The modules of the loaded modules.yaml files (``collector.app.attribution_files.load_attribution``)."""
    out = []
    for repo in repositories:
        for rule in repo.modules.rules:
            owners: tuple[str, ...] = tuple(rule.owners)
            if not owners and rule.paths:
                base = rule.paths[0].split("*")[0].rstrip("/")
                if base:
                    owners = tuple(repo.codeowners.owners(base + "/"))
            out.append(
                DeclaredModule(rule.name, frozenset(rule.services), tuple(rule.paths), owners, repo.url)
            )
    return out


# -- store access ----------------------------------------------------------------------------------


def _dt(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)


def load_incidents(store: Any, since_unix_nano: int) -> list[IncidentEvent]:
    rows = store.query(
        "SELECT incident_id, services, toUnixTimestamp64Nano(started_at), severity, "
        "ifNull(toUnixTimestamp64Nano(resolved_at), 0), deploy_id, commit_sha, modules, postmortem_url, title "
        "FROM incidents FINAL WHERE started_at >= fromUnixTimestamp64Nano({since:Int64}) ORDER BY started_at",
        {"since": since_unix_nano},
    )
    return [
        IncidentEvent(r[0], tuple(r[1]), int(r[2]), r[3], int(r[4]), r[5], r[6], tuple(r[7]), r[8], r[9])
        for r in rows
    ]


def load_last_seen(store: Any, since_unix_nano: int) -> dict[tuple[str, str, str], int]:
    rows = store.query(
        "SELECT service, environment, module, "
        "toInt64(toUnixTimestamp(max(window_start))) + toInt64(any(window_seconds)) "
        "FROM module_aggregates WHERE window_start >= toDateTime({since:Int64}, 'UTC') "
        "AND unattributed_reason = '' GROUP BY service, environment, module",
        {"since": since_unix_nano // NS},
    )
    return {(r[0], r[1], r[2]): int(r[3]) * NS for r in rows}


def load_data_since(store: Any) -> int | None:
    rows = store.query("SELECT toInt64(toUnixTimestamp(min(window_start))), count() FROM module_aggregates")
    if not rows or not rows[0][1]:
        return None
    return int(rows[0][0]) * NS


def load_ranges(store: Any, ranges: Sequence[DataRange]) -> list[AggregateRow]:
    """Rows covering every range, each (window, key) once."""
    merged: dict[tuple[str | None, str | None], list[int]] = {}
    for r in ranges:
        k = (r.service, r.environment)
        if k in merged:
            merged[k][0] = min(merged[k][0], r.from_unix_nano)
            merged[k][1] = max(merged[k][1], r.to_unix_nano)
        else:
            merged[k] = [r.from_unix_nano, r.to_unix_nano]
    if (None, None) in merged:  # one range over everything covers the rest
        lo = min(v[0] for v in merged.values())
        hi = max(v[1] for v in merged.values())
        merged = {(None, None): [lo, hi]}
    out: dict[tuple[object, ...], AggregateRow] = {}
    for (service, environment), (lo, hi) in sorted(merged.items(), key=str):
        for row in store.load_rows(
            service=service, environment=environment, from_unix_nano=lo, to_unix_nano=hi
        ):
            out[(row.window_start_unix_nano, *row.key())] = row
    return list(out.values())


# -- the lease -------------------------------------------------------------------------------------


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease:
    """A lease row in ClickHouse: of several replicas, one holds it until it expires.

    Every acquisition *and* renewal claims the next term with the insert deduplication
    token ``lease:<name>:<term>``.  ClickHouse keeps the first insert of a token and drops
    the rest, so when two replicas claim the same term exactly one row lands; each reads
    the term back and only the one named there holds the lease.  A replica never claims
    while another's unexpired lease stands.
    """

    def __init__(self, store: Any, holder: str, ttl_ns: int, name: str = "alerts") -> None:
        if ttl_ns <= 0:
            raise ConfigError("alerts.lease_ttl_seconds must be positive")
        self.store = store
        self.holder = holder
        self.ttl_ns = ttl_ns
        self.name = name
        self.term = 0

    def current(self) -> tuple[int, str, int] | None:
        """(term, holder, expires_at_unix_nano) of the latest term."""
        rows = self.store.query(
            "SELECT term, holder, toUnixTimestamp64Milli(expires_at) FROM alert_lease FINAL "
            "WHERE name = {n:String} ORDER BY term DESC LIMIT 1",
            {"n": self.name},
        )
        if not rows:
            return None
        return int(rows[0][0]), str(rows[0][1]), int(rows[0][2]) * 1_000_000

    def acquire(self, now_unix_nano: int) -> bool:
        cur = self.current()
        if cur is not None and cur[1] != self.holder and cur[2] > now_unix_nano:
            self.term = 0
            return False
        term = (cur[0] if cur else 0) + 1
        self.store._insert(
            "alert_lease",
            [[self.name, term, self.holder, _dt(now_unix_nano), _dt(now_unix_nano + self.ttl_ns)]],
            ["name", "term", "holder", "acquired_at", "expires_at"],
            {"insert_deduplicate": 1, "insert_deduplication_token": f"lease:{self.name}:{term}"},
        )
        rows = self.store.query(
            "SELECT holder FROM alert_lease FINAL WHERE name = {n:String} AND term = {t:UInt64}",
            {"n": self.name, "t": term},
        )
        won = bool(rows) and rows[0][0] == self.holder
        self.term = term if won else 0
        return won

    def held(self) -> bool:
        """Still the latest term (no one took over since)?"""
        cur = self.current()
        return self.term > 0 and cur is not None and cur[0] == self.term and cur[1] == self.holder

    def release(self, now_unix_nano: int) -> None:
        """Hand over at once (on shutdown): claim the next term as already expired."""
        if not self.held():
            return
        term = self.term + 1
        self.store._insert(
            "alert_lease",
            [[self.name, term, self.holder, _dt(now_unix_nano), _dt(now_unix_nano)]],
            ["name", "term", "holder", "acquired_at", "expires_at"],
            {"insert_deduplicate": 1, "insert_deduplication_token": f"lease:{self.name}:{term}"},
        )
        self.term = 0


# -- the tickets table -----------------------------------------------------------------------------


@dataclass
class TicketRecord:
    fingerprint: str
    sink: str
    generation: int
    rule: str
    service: str
    environment: str
    module: str
    state: str  # intent | open | recovered | closed | void
    ticket_key: str = ""
    ticket_url: str = ""
    previous_url: str = ""
    opened_at: int = 0
    last_comment_at: int = 0
    recovered_at: int | None = None
    closed_at: int | None = None
    closed_by: str = ""
    summary: str = ""

    @property
    def key(self) -> FindingKey:
        return FindingKey(self.rule, self.service, self.environment, self.module)

    @property
    def ref(self) -> TicketRef:
        return TicketRef(self.ticket_key, self.ticket_url)


_TICKET_COLUMNS = [
    "fingerprint",
    "sink",
    "generation",
    "rule",
    "service",
    "environment",
    "module",
    "state",
    "ticket_key",
    "ticket_url",
    "previous_url",
    "opened_at",
    "last_comment_at",
    "recovered_at",
    "closed_at",
    "closed_by",
    "summary",
    "updated_at",
    "version",
]


class TicketBook:
    """The ``tickets`` table: the latest state of each (fingerprint, sink, generation)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._seq = 0

    def latest(self) -> dict[tuple[str, str], TicketRecord]:
        """Per (fingerprint, sink): the record of the highest generation."""
        rows = self.store.query(
            "SELECT fingerprint, sink, generation, rule, service, environment, module, state, ticket_key, "
            "ticket_url, previous_url, toUnixTimestamp64Milli(opened_at), toUnixTimestamp64Milli(last_comment_at), "
            "toUnixTimestamp64Milli(recovered_at), toUnixTimestamp64Milli(closed_at), closed_by, summary "
            "FROM tickets FINAL ORDER BY fingerprint, sink, generation"
        )
        out: dict[tuple[str, str], TicketRecord] = {}
        ms = 1_000_000
        for r in rows:
            out[(r[0], r[1])] = TicketRecord(
                r[0],
                r[1],
                int(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                int(r[11]) * ms,
                int(r[12]) * ms,
                int(r[13]) * ms if r[13] is not None else None,
                int(r[14]) * ms if r[14] is not None else None,
                r[15],
                r[16],
            )
        return out

    def save(self, rec: TicketRecord, now_unix_nano: int) -> None:
        self._seq += 1
        self.store._insert(
            "tickets",
            [
                [
                    rec.fingerprint,
                    rec.sink,
                    rec.generation,
                    rec.rule,
                    rec.service,
                    rec.environment,
                    rec.module,
                    rec.state,
                    rec.ticket_key,
                    rec.ticket_url,
                    rec.previous_url,
                    _dt(rec.opened_at),
                    _dt(rec.last_comment_at),
                    _dt(rec.recovered_at) if rec.recovered_at is not None else None,
                    _dt(rec.closed_at) if rec.closed_at is not None else None,
                    rec.closed_by,
                    rec.summary[:1000],
                    _dt(now_unix_nano),
                    # versions grow with time, and within one process with each save
                    (now_unix_nano // 1_000) * 1_000 + self._seq % 1_000,
                ]
            ],
            _TICKET_COLUMNS,
        )


# -- ticket bodies ---------------------------------------------------------------------------------


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


def deploy_blocks(f: Finding) -> list[Any]:
    o = f.observation
    d, prev = o.deploy, o.previous_deploy
    if d is None:
        return []
    before_sha = d.previous_sha or (prev.commit_sha if prev else "")
    repo = (d.repository or o.repository).rstrip("/")
    items: list[tuple[Any, ...]] = []
    run = (" (", Text("pipeline run", href=d.url), ")") if d.url else ()
    items.append(
        (
            "Deploy ",
            Text(d.deploy_id, code=True),
            f" of {d.service} ({d.environment}) at {_ts(d.deployed_at_unix_nano)}",
            *run,
        )
    )
    shas: tuple[Any, ...] = (
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
    return [Heading("Deploy"), Bullets(tuple(items))]


def ticket_doc(f: Finding, *, dashboard_url: str = "", previous_url: str = "", generation: int = 1) -> Doc:
    """The ticket body: what, since when, the numbers, the code and owners, the deploy, the rule."""
    o = f.observation
    k = f.key
    blocks: list[Any] = []
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
    code: list[tuple[Any, ...]] = []
    if k.module:
        code.append(("Module ", Text(k.module, code=True)))
    if f.code_paths:
        parts: list[Any] = ["Code paths "]
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
    rule_items: list[tuple[Any, ...]] = [
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
    blocks: list[Any] = [Para(head), evidence_table(f), *deploy_blocks(f)]
    link = dashboard_link(dashboard_url, f)
    if link:
        blocks.append(Para((Text("Dashboard", href=link),)))
    return Doc(tuple(blocks), marker(f.fingerprint, generation))


# -- the engine ------------------------------------------------------------------------------------


@dataclass
class Action:
    """What the engine did (or, in a dry run, would do) for one finding on one sink."""

    action: str  # open | reopen | comment | recover | close | resolve_intent | wait | pending | error
    rule: str
    fingerprint: str
    service: str
    environment: str
    module: str
    sink: str = ""
    ticket: str = ""
    reason: str = ""
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EvaluationReport:
    evaluated_at_unix_nano: int
    leader: bool = True
    dry_run: bool = False
    findings: list[Finding] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def firing(self) -> list[Finding]:
        return [f for f in self.findings if f.firing]

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluated_at": format_rfc3339(self.evaluated_at_unix_nano),
            "evaluated_at_unix_nano": self.evaluated_at_unix_nano,
            "leader": self.leader,
            "dry_run": self.dry_run,
            "findings": [f.to_json() for f in self.findings],
            "actions": [a.to_json() for a in self.actions],
            "errors": list(self.errors),
        }


class AlertEngine:
    """Evaluates a rule set on a store and keeps tickets in step.  See the module docstring."""

    def __init__(
        self,
        store: Any,
        rules: RuleSet,
        sinks: Sequence[TicketSink],
        *,
        window_ns: int = 60 * NS,
        declared: Sequence[DeclaredModule] = (),
        dashboard_url: str = "",
        settle_ns: int = 0,
        lease: Lease | None = None,
    ) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ConfigError(f"alerts: two sinks share a name: {names}")
        for rule in rules:
            unknown = [s for s in rule.ticket.sinks if s not in names]
            if unknown:
                raise ConfigError(
                    f"{rules.source}: rule {rule.name!r}: ticket.sinks: {', '.join(unknown)} not configured "
                    f"(configured: {', '.join(names) or 'none'})"
                )
        self.store = store
        self.rules = rules
        self.sinks = {s.name: s for s in sinks}
        self.window_ns = window_ns
        self.declared = list(declared)
        self.dashboard_url = dashboard_url
        self.settle_ns = settle_ns
        self.lease = lease
        self.book = TicketBook(store)

    # -- data ------------------------------------------------------------------------------

    def load_data(self, now_unix_nano: int) -> EvaluationData:
        t = evaluation_instant(now_unix_nano, self.window_ns, self.settle_ns)
        deploys: list[DeployEvent] = self.store.load_deploys()
        ranges: list[DataRange] = []
        for rule in self.rules:
            ranges += required_ranges(rule, t, self.window_ns, deploys)
        rows = load_ranges(self.store, ranges) if ranges else []
        kinds = {r.kind for r in self.rules}
        incidents: list[IncidentEvent] = []
        if "incident_recurrence" in kinds:
            longest = max(
                r.window_ns + r.ticket.recover_after_ns for r in self.rules if r.kind == "incident_recurrence"
            )
            incidents = load_incidents(self.store, t - longest - self.window_ns)
        last_seen: dict[tuple[str, str, str], int] = {}
        since = None
        if "unused" in kinds:
            longest = max(r.window_ns for r in self.rules if r.kind == "unused")
            last_seen = load_last_seen(self.store, t - longest)
            since = load_data_since(self.store)
        return EvaluationData(
            rows=rows,
            window_ns=self.window_ns,
            deploys=deploys,
            incidents=incidents,
            declared_modules=self.declared,
            last_seen=last_seen,
            data_since_unix_nano=since,
        )

    def evaluate(
        self, now_unix_nano: int, records: Mapping[tuple[str, str], TicketRecord] | None = None
    ) -> list[Finding]:
        """Findings of every rule (no side effects)."""
        data = self.load_data(now_unix_nano)
        paths = module_paths(self.declared)
        tracked: dict[str, set[FindingKey]] = {}
        for rec in (records or {}).values():
            if rec.state in ("intent", "open", "recovered"):
                tracked.setdefault(rec.rule, set()).add(rec.key)
        out: list[Finding] = []
        for rule in self.rules:
            out += evaluate_rule(
                rule,
                data,
                now_unix_nano,
                track=tracked.get(rule.name, ()),
                settle_ns=self.settle_ns,
                code_paths=paths,
            )
        return out

    # -- one evaluation --------------------------------------------------------------------

    def evaluate_once(self, now_unix_nano: int, *, dry_run: bool = False) -> EvaluationReport:
        """Evaluate every rule at ``now`` and drive the tickets; the service calls this on an interval.

        Returns without evaluating (``leader=False``) when another replica holds the lease.
        Errors of one sink or ticket are reported and retried next time; they never stop
        the others.
        """
        report = EvaluationReport(now_unix_nano, dry_run=dry_run)
        if not dry_run and self.lease is not None and not self.lease.acquire(now_unix_nano):
            report.leader = False
            return report
        records = self.book.latest()
        report.findings = self.evaluate(now_unix_nano, records)
        report.evaluated_at_unix_nano = evaluation_instant(now_unix_nano, self.window_ns, self.settle_ns)
        if not dry_run and self.lease is not None and not self.lease.held():
            report.leader = False
            report.errors.append("lost the evaluation lease while evaluating; another replica acts")
            return report
        for f in report.findings:
            if f.firing and not self.sinks:
                report.actions.append(
                    self._action(f, "fire", "", reason=f"{f.observation.summary} (no ticket sink configured)")
                )
            for sink_name in f.rule.ticket.sinks or tuple(self.sinks):
                sink = self.sinks[sink_name]
                rec = records.get((f.fingerprint, sink_name))
                try:
                    action = self._step(f, sink, rec, now_unix_nano, dry_run)
                except (TicketError, StoreError) as exc:
                    log.warning("alerts: %s on %s: %s", f.rule.name, sink_name, exc)
                    report.errors.append(
                        f"{f.rule.name} {f.key.module or f.key.service} on {sink_name}: {exc}"
                    )
                    action = self._action(f, "error", sink_name, reason=str(exc))
                if action is not None:
                    report.actions.append(action)
        # tickets whose finding vanished (rule removed or renamed) are left as they are
        return report

    def _action(self, f: Finding, what: str, sink: str, **kw: Any) -> Action:
        return Action(
            what, f.rule.name, f.fingerprint, f.key.service, f.key.environment, f.key.module, sink, **kw
        )

    def _record(self, f: Finding, sink: str, generation: int, state: str) -> TicketRecord:
        return TicketRecord(
            f.fingerprint,
            sink,
            generation,
            f.rule.name,
            f.key.service,
            f.key.environment,
            f.key.module,
            state,
            summary=f.observation.summary,
        )

    def _draft(self, f: Finding, generation: int, previous_url: str, now: int) -> TicketDraft:
        return TicketDraft(
            fingerprint=f.fingerprint,
            generation=generation,
            title=ticket_title(f),
            doc=ticket_doc(
                f, dashboard_url=self.dashboard_url, previous_url=previous_url, generation=generation
            ),
            labels=f.rule.ticket.labels,
            owners=f.observation.owners,
            assign_owners=f.rule.ticket.assign_owners,
            severity=f.rule.severity,
            previous_url=previous_url,
            data=f.to_json(),
            at_unix_nano=now,
        )

    def _open(
        self,
        f: Finding,
        sink: TicketSink,
        generation: int,
        previous: TicketRecord | None,
        now: int,
        dry_run: bool,
    ) -> Action:
        what = "reopen" if previous is not None else "open"
        previous_url = previous.ticket_url if previous is not None else ""
        if dry_run:
            return self._action(f, what, sink.name, reason=f"firing: {f.observation.summary}")
        rec = self._record(f, sink.name, generation, "intent")
        rec.previous_url = previous_url
        rec.opened_at = rec.last_comment_at = now
        self.book.save(rec, now)  # the intent, before anything is created
        ref = sink.create(self._draft(f, generation, previous_url, now))
        rec.state, rec.ticket_key, rec.ticket_url = "open", ref.key, ref.url
        self.book.save(rec, now)
        return self._action(
            f, what, sink.name, ticket=ref.url or ref.key, reason=f.observation.summary, done=True
        )

    def _step(
        self, f: Finding, sink: TicketSink, rec: TicketRecord | None, now: int, dry_run: bool
    ) -> Action | None:
        rule = f.rule
        cooldown = rule.ticket.cooldown_ns
        # 1. an intent left by a crash: find what was created before doing anything else
        if rec is not None and rec.state == "intent":
            if dry_run:
                return self._action(
                    f, "resolve_intent", sink.name, reason="an earlier attempt may have created it"
                )
            ref = sink.find(rec.fingerprint, rec.generation)
            if ref is not None:
                rec.state, rec.ticket_key, rec.ticket_url = "open", ref.key, ref.url
                self.book.save(rec, now)
                return self._action(
                    f, "resolve_intent", sink.name, ticket=ref.url or ref.key, reason="found", done=True
                )
            if not f.firing:
                rec.state = "void"
                self.book.save(rec, now)
                return None
            previous = None
            if rec.previous_url:
                previous = TicketRecord("", "", 0, "", "", "", "", "closed", ticket_url=rec.previous_url)
            return self._open(f, sink, rec.generation, previous, now, dry_run)
        if f.firing:
            if rec is None or rec.state == "void":
                return self._open(f, sink, rec.generation + 1 if rec else 1, None, now, dry_run)
            if rec.state == "closed":
                waited = now - (rec.closed_at or now)
                if rec.closed_by == "prodloop" or waited >= cooldown:
                    return self._open(f, sink, rec.generation + 1, rec, now, dry_run)
                return self._action(
                    f,
                    "wait",
                    sink.name,
                    ticket=rec.ticket_url,
                    reason=f"closed by people {format_duration(waited)} ago; "
                    f"reopening after the cooldown ({format_duration(cooldown)})",
                )
            # open or recovered: a comment at most once per cooldown
            if now - rec.last_comment_at < cooldown:
                return None
            if dry_run:
                return self._action(
                    f, "comment", sink.name, ticket=rec.ticket_url, reason=f.observation.summary
                )
            remote = sink.state(rec.ref)
            if not remote.open:
                rec.state = "closed"
                rec.closed_at = remote.closed_at_unix_nano or now
                rec.closed_by = "prodloop" if remote.closed_by_us else "people"
                self.book.save(rec, now)
                if rec.closed_by == "prodloop" or now - rec.closed_at >= cooldown:
                    return self._open(f, sink, rec.generation + 1, rec, now, dry_run)
                return self._action(
                    f,
                    "wait",
                    sink.name,
                    ticket=rec.ticket_url,
                    reason="closed by people; waiting out the cooldown",
                )
            sink.comment(
                rec.ref,
                Note(
                    "update",
                    note_doc(f, "update", rec.generation, dashboard_url=self.dashboard_url),
                    f.fingerprint,
                    rec.generation,
                    f.to_json(),
                    now,
                ),
            )
            rec.state = "open"
            rec.last_comment_at = now
            rec.summary = f.observation.summary
            self.book.save(rec, now)
            return self._action(
                f, "comment", sink.name, ticket=rec.ticket_url, reason=f.observation.summary, done=True
            )
        if f.status == BREACH:
            return self._action(
                f, "pending", sink.name, reason=f"breaching, not yet for {format_duration(rule.for_ns)}"
            )
        if f.recovered and rec is not None and rec.state == "open":
            close = rule.ticket.close_on_recovery
            what = "close" if close else "recover"
            if dry_run:
                return self._action(f, what, sink.name, ticket=rec.ticket_url, reason=f.observation.summary)
            note = Note(
                "recovered",
                note_doc(f, "recovered", rec.generation, dashboard_url=self.dashboard_url),
                f.fingerprint,
                rec.generation,
                f.to_json(),
                now,
            )
            if close:
                sink.close_ticket(rec.ref, note)
                rec.state, rec.closed_at, rec.closed_by = "closed", now, "prodloop"
            else:
                sink.comment(rec.ref, note)
                rec.state = "recovered"
            rec.recovered_at = now
            rec.last_comment_at = now
            self.book.save(rec, now)
            return self._action(
                f, what, sink.name, ticket=rec.ticket_url, reason=f.observation.summary, done=True
            )
        return None


# -- wiring from settings --------------------------------------------------------------------------


def build_sinks(
    alerts: Any, *, transport: Any = None, sleep: Callable[[float], None] | None = None
) -> list[TicketSink]:
    """The sinks configured in ``settings.alerts`` (a section is on when its target is set)."""
    policy = RetryPolicy(max_wait_s=alerts.max_rate_limit_wait_seconds)
    kw: dict[str, Any] = {"policy": policy}
    if transport is not None:
        kw["transport"] = transport
    if sleep is not None:
        kw["sleep"] = sleep
    sinks: list[TicketSink] = []
    gh = alerts.github
    if gh.repository:
        token = read_secret(gh.token, gh.token_file, "alerts.github.token")
        if token is None:
            raise ConfigError("alerts.github: set token (PRODLOOP_ALERTS__GITHUB__TOKEN) or token_file")
        sinks.append(GitHubSink(gh.repository, token, api_url=gh.api_url, labels=gh.labels, **kw))
    jira = alerts.jira
    if jira.base_url:
        token = read_secret(jira.api_token, jira.api_token_file, "alerts.jira.api_token")
        if token is None or not jira.email or not jira.project:
            raise ConfigError("alerts.jira: set email, project and api_token (or api_token_file)")
        sinks.append(
            JiraSink(
                jira.base_url,
                jira.email,
                token,
                jira.project,
                issue_type=jira.issue_type,
                labels=jira.labels,
                priorities=jira.priorities,
                **kw,
            )
        )
    hook = alerts.webhook
    if hook.url:
        secret = read_secret(hook.secret, hook.secret_file, "alerts.webhook.secret")
        if secret is None:
            raise ConfigError("alerts.webhook: set secret (PRODLOOP_ALERTS__WEBHOOK__SECRET) or secret_file")
        sinks.append(WebhookSink(hook.url, secret, **kw))
    if alerts.file.path is not None:
        sinks.append(FileSink(alerts.file.path))
    return sinks


def build_alert_engine(
    settings: Any,
    store: Any,
    *,
    rules_file: Path | None = None,
    sinks: Sequence[TicketSink] | None = None,
    repositories: Sequence[Any] | None = None,
    replica_id: str | None = None,
) -> AlertEngine | None:
    """The engine ``prodloop run`` drives, or None when no rules file is configured.

    ``repositories`` (from ``collector.app.attribution_files.load_attribution``) supply the modules of
    modules.yaml for ``unused`` rules and code paths in tickets.
    """
    a = settings.alerts
    path = rules_file or a.rules
    if path is None:
        return None
    rules = load_rules(Path(path))
    interval_ns = a.interval_seconds * NS
    ttl_ns = (a.lease_ttl_seconds or 3 * a.interval_seconds) * NS
    return AlertEngine(
        store,
        rules,
        list(sinks) if sinks is not None else build_sinks(a),
        window_ns=settings.aggregation.window_seconds * NS,
        declared=declared_modules(repositories or ()),
        dashboard_url=a.dashboard_url,
        settle_ns=a.settle_seconds * NS,
        lease=Lease(store, replica_id or a.replica_id or default_replica_id(), max(ttl_ns, interval_ns)),
    )


__all__ = [
    "Action",
    "AlertEngine",
    "EvaluationReport",
    "Lease",
    "ProdloopError",
    "TicketBook",
    "TicketRecord",
    "build_alert_engine",
    "build_sinks",
    "declared_modules",
    "load_rules",
    "ticket_doc",
]
