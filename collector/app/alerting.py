"""Alerting from the settings: the ticket sinks of ``settings.alerts`` and the alert engine.

``prodloop run`` (:mod:`collector.app.service`) and ``prodloop alerts evaluate``
(:mod:`collector.cli.alerts`) build the engine here: the rules file, the sinks whose section
is configured, the evaluation lease, and the engine's state in the store.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from attribution.repository import Repository
from collector.app.longloop import StoreSuspects
from collector.app.rules_file import load_rules
from collector.app.settings import AlertSettings, Settings
from collector.errors import ConfigError
from collector.exporters.clickhouse.alert_state import ClickHouseAlertState, Lease, StateStore
from collector.exporters.tickets.file import FileSink
from collector.exporters.tickets.github import GitHubSink
from collector.exporters.tickets.http import RetryPolicy
from collector.exporters.tickets.jira import JiraSink
from collector.exporters.tickets.webhook import WebhookSink
from collector.pipelines.alerts import AlertEngine, declared_modules
from collector.ports import TicketRecord, TicketSink

NS = 1_000_000_000


def read_secret(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    """A secret from settings/env, or from a file (trailing newline stripped)."""
    if value is not None and value.get_secret_value():
        return value
    if path is None:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{what}: {path} is empty")
    return SecretStr(text)


def build_ticket_sinks(
    alerts: AlertSettings,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> list[TicketSink]:
    """The sinks configured in ``settings.alerts`` (a section is on when its target is set)."""
    policy = RetryPolicy(max_wait_s=alerts.max_rate_limit_wait_seconds)
    http_kw: dict[str, Any] = {"policy": policy}
    if transport is not None:
        http_kw["transport"] = transport
    if sleep is not None:
        http_kw["sleep"] = sleep
    sinks: list[TicketSink] = []
    gh = alerts.github
    if gh.repository:
        token = read_secret(gh.token, gh.token_file, "alerts.github.token")
        if token is None:
            raise ConfigError("alerts.github: set token (PRODLOOP_ALERTS__GITHUB__TOKEN) or token_file")
        sinks.append(GitHubSink(gh.repository, token, api_url=gh.api_url, labels=gh.labels, **http_kw))
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
                **http_kw,
            )
        )
    hook = alerts.webhook
    if hook.url:
        secret = read_secret(hook.secret, hook.secret_file, "alerts.webhook.secret")
        if secret is None:
            raise ConfigError("alerts.webhook: set secret (PRODLOOP_ALERTS__WEBHOOK__SECRET) or secret_file")
        sinks.append(WebhookSink(hook.url, secret, **http_kw))
    if alerts.file.path is not None:
        sinks.append(FileSink(alerts.file.path))
    return sinks


def default_replica_id() -> str:
    """This replica's name in the lease: host, process and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_alert_engine(
    settings: Settings,
    store: StateStore,
    *,
    rules_file: Path | None = None,
    sinks: Sequence[TicketSink] | None = None,
    repositories: Sequence[Repository] | None = None,
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
        ClickHouseAlertState(store),
        rules,
        list(sinks) if sinks is not None else build_ticket_sinks(a),
        window_ns=settings.aggregation.window_seconds * NS,
        declared=declared_modules(repositories or ()),
        dashboard_url=a.dashboard_url,
        settle_ns=a.settle_seconds * NS,
        lease=Lease(store, replica_id or a.replica_id or default_replica_id(), max(ttl_ns, interval_ns)),
        suspects=StoreSuspects(store),  # type: ignore[arg-type]  # StateStore is the store (or SharedStore)
    )


def latest_tickets(store: StateStore) -> list[TicketRecord]:
    """The latest record of each finding on each sink (``prodloop query tickets``), by
    service, module, rule and sink."""
    records = ClickHouseAlertState(store).latest_tickets().values()
    return sorted(records, key=lambda r: (r.service, r.environment, r.module, r.rule, r.sink))
