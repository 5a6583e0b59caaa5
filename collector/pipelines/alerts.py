"""Alert evaluation: rules over the stored aggregates, tickets with their evidence, never twice.

The service (``prodloop run``) builds one :class:`AlertEngine`
(:func:`collector.app.alerting.build_alert_engine`) and calls :meth:`AlertEngine.evaluate_once`
every ``alerts.interval_seconds``; ``prodloop alerts evaluate`` calls it once.  The engine works
over ports: :class:`collector.ports.AlertState` (what it reads and records),
:class:`collector.ports.AlertLease` and :class:`collector.ports.TicketSink`.  Each call:

1. takes the evaluation lease: of several replicas, exactly one evaluates;
2. loads what the rules need (aggregates around recent deploys and over the rule windows,
   incidents, last-seen times, the open tickets) and evaluates every rule with the pure
   core (:func:`attribution.rules.evaluate.evaluate_rule`);
3. drives each finding's ticket on each sink through its lifecycle:

   - a firing finding without a ticket: record the *intent* (state ``intent``) in the
     ticket state, then create, then record ``open``.  A crash in between leaves the
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attribution.aggregate import AggregateRow
from attribution.events import format_rfc3339
from attribution.model import DeployEvent, IncidentEvent
from attribution.repository import Repository
from attribution.rules.evaluate import evaluate_rule, evaluation_instant, module_paths, required_ranges
from attribution.rules.findings import BREACH, Finding, FindingKey
from attribution.rules.inputs import DataRange, DeclaredModule, EvaluationData
from attribution.rules.schema import RuleSet
from attribution.rules.values import format_duration
from collector.errors import ConfigError, StoreError, TicketError
from collector.pipelines.alert_documents import note_doc, ticket_doc, ticket_title
from collector.ports import (
    AlertLease,
    AlertState,
    FindingSuspects,
    Note,
    SuspectSource,
    TicketDraft,
    TicketRecord,
    TicketSink,
)

log = logging.getLogger("prodloop.alerts")

NS = 1_000_000_000


def declared_modules(repositories: Sequence[Repository]) -> list[DeclaredModule]:
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


def load_ranges(state: AlertState, ranges: Sequence[DataRange]) -> list[AggregateRow]:
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
        for row in state.load_rows(
            service=service, environment=environment, from_unix_nano=lo, to_unix_nano=hi
        ):
            out[(row.window_start_unix_nano, *row.key())] = row
    return list(out.values())


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
    """Evaluates a rule set over its :class:`AlertState` and keeps tickets in step.  See the module docstring."""

    def __init__(
        self,
        state: AlertState,
        rules: RuleSet,
        sinks: Sequence[TicketSink],
        *,
        window_ns: int = 60 * NS,
        declared: Sequence[DeclaredModule] = (),
        dashboard_url: str = "",
        settle_ns: int = 0,
        lease: AlertLease | None = None,
        suspects: SuspectSource | None = None,
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
        self.state = state
        self.rules = rules
        self.sinks = {s.name: s for s in sinks}
        self.window_ns = window_ns
        self.declared = list(declared)
        self.dashboard_url = dashboard_url
        self.settle_ns = settle_ns
        self.lease = lease
        self.suspects = suspects

    # -- data ------------------------------------------------------------------------------

    def load_data(self, now_unix_nano: int) -> EvaluationData:
        t = evaluation_instant(now_unix_nano, self.window_ns, self.settle_ns)
        deploys: list[DeployEvent] = self.state.load_deploys()
        ranges: list[DataRange] = []
        for rule in self.rules:
            ranges += required_ranges(rule, t, self.window_ns, deploys)
        rows = load_ranges(self.state, ranges) if ranges else []
        kinds = {r.kind for r in self.rules}
        incidents: list[IncidentEvent] = []
        if "incident_recurrence" in kinds:
            longest = max(
                r.window_ns + r.ticket.recover_after_ns for r in self.rules if r.kind == "incident_recurrence"
            )
            incidents = self.state.load_incidents(t - longest - self.window_ns)
        last_seen: dict[tuple[str, str, str], int] = {}
        since = None
        if "unused" in kinds:
            longest = max(r.window_ns for r in self.rules if r.kind == "unused")
            last_seen = self.state.last_seen(t - longest)
            since = self.state.data_since()
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
        records = self.state.latest_tickets()
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

    def _action(
        self, f: Finding, what: str, sink: str, *, ticket: str = "", reason: str = "", done: bool = False
    ) -> Action:
        return Action(
            what,
            f.rule.name,
            f.fingerprint,
            f.key.service,
            f.key.environment,
            f.key.module,
            sink,
            ticket=ticket,
            reason=reason,
            done=done,
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
            kind=f.rule.kind,
            deploy_id=f.observation.deploy.deploy_id if f.observation.deploy else "",
        )

    def _suspects(self, f: Finding) -> FindingSuspects | None:
        if self.suspects is None:
            return None
        try:
            return self.suspects(f)
        except StoreError as exc:  # a ticket without suspects beats no ticket
            log.warning("suspect commits of %s: %s", f.key, exc)
            return None

    def _draft(self, f: Finding, generation: int, previous_url: str, now: int) -> TicketDraft:
        return TicketDraft(
            fingerprint=f.fingerprint,
            generation=generation,
            title=ticket_title(f),
            doc=ticket_doc(
                f,
                dashboard_url=self.dashboard_url,
                previous_url=previous_url,
                generation=generation,
                suspects=self._suspects(f),
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
        self.state.save_ticket(rec, now)  # the intent, before anything is created
        ref = sink.create(self._draft(f, generation, previous_url, now))
        rec.state, rec.ticket_key, rec.ticket_url = "open", ref.key, ref.url
        self.state.save_ticket(rec, now)
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
                self.state.save_ticket(rec, now)
                return self._action(
                    f, "resolve_intent", sink.name, ticket=ref.url or ref.key, reason="found", done=True
                )
            if not f.firing:
                rec.state = "void"
                self.state.save_ticket(rec, now)
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
                self.state.save_ticket(rec, now)
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
            self.state.save_ticket(rec, now)
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
            self.state.save_ticket(rec, now)
            return self._action(
                f, what, sink.name, ticket=rec.ticket_url, reason=f.observation.summary, done=True
            )
        return None
