"""The Helm chart's wiring of the ops settings: the metrics bearer token and TLS (Secret, env,
ServiceMonitor, probes) and static group membership (the pod name as kafka.group_instance_id).

Rendered with the real helm (scripts/validate_deploy.sh installs it and validates every
ci/*-values.yaml with kubeconform); the rendered prodloop.yaml and env load with prodloop's own
``load_settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from collector.app.settings import load_settings
from tests.integration import test_deploy_artifacts as artifacts
from tests.integration.test_deploy_artifacts import CHART, by_kind, helm_template, render

pytestmark = pytest.mark.integration

validated_tools = artifacts.validated_tools  # the fixture: validate_deploy.sh ran, helm is installed

TLS_VALUES = CHART / "ci" / "metrics-tls-token-values.yaml"


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    out: dict[str, Any] = container
    return out


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_metrics_token_and_tls_reach_the_pod_the_probes_and_the_servicemonitor(
    validated_tools: Path, tmp_path: Path
) -> None:
    docs = render(validated_tools, "-f", str(TLS_VALUES))
    container = _container(docs)
    env = _env(container)
    assert env["PRODLOOP_SERVICE__METRICS_BEARER_TOKEN"] == {
        "secretKeyRef": {"name": "prodloop", "key": "metrics-bearer-token"}
    }
    (secret,) = by_kind(docs, "Secret")
    assert set(secret["data"]) == {"metrics-bearer-token"}
    (configmap,) = by_kind(docs, "ConfigMap")
    text = configmap["data"]["prodloop.yaml"]
    assert "not-a-real-metrics-token" not in text and "metrics_bearer_token" not in text
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", container[probe]
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "prodloop-metrics-tls", "key": "ca.crt"}},
        "serverName": "prodloop.obs.svc",
    }
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "prodloop", "key": "metrics-bearer-token"},
    }
    assert "PRODLOOP_KAFKA__GROUP_INSTANCE_ID" not in env  # kafkaStaticMembership: false

    # the file and the env build the intended settings
    (tmp_path / "prodloop.yaml").write_text(text)
    saved = {k: v for k, v in os.environ.items() if k.startswith("PRODLOOP_")}
    for k in saved:
        del os.environ[k]
    os.environ["PRODLOOP_SERVICE__METRICS_BEARER_TOKEN"] = "from-the-secret"
    try:
        settings = load_settings(tmp_path / "prodloop.yaml")
    finally:
        del os.environ["PRODLOOP_SERVICE__METRICS_BEARER_TOKEN"]
        os.environ.update(saved)
    s = settings.service
    assert (
        s.metrics_bearer_token is not None and s.metrics_bearer_token.get_secret_value() == "from-the-secret"
    )
    assert str(s.metrics_tls_cert_file) == "/etc/prodloop-metrics-tls/tls.crt"
    assert str(s.metrics_tls_key_file) == "/etc/prodloop-metrics-tls/tls.key"
    assert settings.kafka.session_timeout_ms == 30000 and settings.kafka.leave_group_on_stop is False


def test_an_existing_secret_is_what_the_servicemonitor_reads(validated_tools: Path) -> None:
    docs = render(
        validated_tools,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "service.metrics_bearer_token.existingSecret=prodloop-metrics",
        "--set",
        "service.metrics_bearer_token.key=token",
    )
    assert not by_kind(docs, "Secret")
    assert _env(_container(docs))["PRODLOOP_SERVICE__METRICS_BEARER_TOKEN"] == {
        "secretKeyRef": {"name": "prodloop-metrics", "key": "token"}
    }
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "prodloop-metrics", "key": "token"}
    assert "scheme" not in endpoint  # no TLS: plain http


def test_by_default_every_pod_is_a_static_member_under_its_name(validated_tools: Path) -> None:
    docs = render(validated_tools)
    container = _container(docs)
    env = _env(container)
    assert env["PRODLOOP_KAFKA__GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "PRODLOOP_SERVICE__METRICS_BEARER_TOKEN" not in env
    assert "scheme" not in container["livenessProbe"]["httpGet"]
    (configmap,) = by_kind(docs, "ConfigMap")
    cfg = YAML(typ="safe").load(configmap["data"]["prodloop.yaml"])
    assert cfg["kafka"]["group_instance_id"] == "" and cfg["kafka"]["leave_group_on_stop"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--set",
                "kafka.group_instance_id=x",
                "--set",
                "replicaCount=2",
                "--set",
                "store.dsn=http://ch:8123",
            ],
            "kafka.group_instance_id is set, so every replica would have the same id",
        ),
        (
            ["--set", "service.metrics_tls_cert_file=/a.crt"],
            "metrics_tls_cert_file needs service.metrics_tls_key_file",
        ),
        (
            ["--set", "service.metrics_tls_key_file=/a.key"],
            "metrics_tls_key_file needs service.metrics_tls_cert_file",
        ),
        (
            ["--set", "history.cronjob.enabled=true"],
            "history.cronjob.enabled needs a ClickHouse server",
        ),
    ],
)
def test_the_chart_refuses_ops_settings_that_cannot_work(
    validated_tools: Path, args: list[str], message: str
) -> None:
    proc = helm_template(validated_tools, *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_the_history_cronjob_scans_the_configured_repositories(validated_tools: Path, tmp_path: Path) -> None:
    docs = render(validated_tools, "-f", str(CHART / "ci" / "history-cronjob-values.yaml"))
    (cron,) = by_kind(docs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["history", "scan", "--config", "/etc/prodloop/prodloop.yaml"]
    assert cron["spec"]["schedule"] == "*/30 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["git-tokens"] == "/etc/prodloop-git"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["git-tokens"]["secret"]["secretName"] == "prodloop-git-tokens"
    assert "git-tokens" in {m["name"] for m in _container(docs)["volumeMounts"]}  # prodloop run too
    (configmap,) = by_kind(docs, "ConfigMap")
    (tmp_path / "prodloop.yaml").write_text(configmap["data"]["prodloop.yaml"])
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PRODLOOP_")}
    try:
        settings = load_settings(tmp_path / "prodloop.yaml")
    finally:
        os.environ.update(saved)
    h = settings.history
    assert h.scan_interval_seconds == 0  # the CronJob scans; prodloop run does not
    (repo,) = h.repositories
    assert (repo.name, repo.url, str(repo.token_file)) == (
        "shop",
        "https://github.com/acme/shop.git",
        "/etc/prodloop-git/shop",
    )
    assert h.production_environment == "prod" and h.coupling.min_shared_commits == 5
