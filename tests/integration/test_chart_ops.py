"""The Helm chart's wiring of the ops settings: the metrics bearer token and TLS (Secret, env,
ServiceMonitor, probes), static group membership (the pod name as kafka.group_instance_id), the
write-ahead log's StatefulSet, the Grafana dashboards' ConfigMaps and values.schema.json.

Rendered with the real helm (scripts/validate_deploy.sh installs it and validates every
ci/*-values.yaml with kubeconform); the rendered prodloop.yaml and env load with prodloop's own
``load_settings``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from collector.app.settings import Settings, load_settings
from tests.integration import test_deploy_artifacts as artifacts
from tests.integration.test_deploy_artifacts import (
    CHART,
    CHART_ONLY,
    LEAVES,
    REPO,
    SECRET_KEYS,
    by_kind,
    helm_lint,
    helm_template,
    kubeconform,
    render,
    settings_configmap,
)

pytestmark = pytest.mark.integration

validated_tools = artifacts.validated_tools  # the fixture: validate_deploy.sh ran, helm is installed

TLS_VALUES = CHART / "ci" / "metrics-tls-token-values.yaml"


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    (container,) = workload["spec"]["template"]["spec"]["containers"]
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
    configmap = settings_configmap(docs)
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
    configmap = settings_configmap(docs)
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
    configmap = settings_configmap(docs)
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


def _render_valid(tools: Path, *args: str) -> list[dict[str, Any]]:
    """helm template with these values, checked by kubeconform -strict."""
    proc = helm_template(tools, *args)
    assert proc.returncode == 0, proc.stderr
    checked = kubeconform(tools, proc.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return [d for d in YAML(typ="safe").load_all(proc.stdout) if d]


def _settings_of_pod(docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What prodloop run loads in the pod: the ConfigMap's prodloop.yaml and the plain env."""
    configmap = settings_configmap(docs)
    (tmp_path / "prodloop.yaml").write_text(configmap["data"]["prodloop.yaml"])
    for name in [k for k in os.environ if k.startswith("PRODLOOP_")]:
        monkeypatch.delenv(name)
    for name, value in _env(_container(docs)).items():
        if name.startswith("PRODLOOP_") and isinstance(value, str):
            monkeypatch.setenv(name, value)
    return load_settings(tmp_path / "prodloop.yaml")


# -- the write-ahead log ------------------------------------------------------------------------


def test_direct_mode_with_the_wal_runs_a_statefulset_with_a_volume_claim_per_pod(
    validated_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _render_valid(
        validated_tools,
        *("--set", "store.dsn=http://clickhouse:8123", "--set", "replicaCount=3"),
        *("--set", "receiver.walSize=20Gi", "--set", "receiver.walStorageClass=fast-ssd"),
    )
    assert not by_kind(docs, "Deployment")
    (statefulset,) = by_kind(docs, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3 and spec["serviceName"] == "prodloop"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "wal"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert "wal" not in {v["name"] for v in spec["template"]["spec"]["volumes"]}  # each pod's own claim
    container = _container(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _env(container)
    assert env["PRODLOOP_RECEIVER__DURABILITY"] == "wal"
    assert env["PRODLOOP_RECEIVER__WAL_DIR"] == mounts["wal"] == "/var/lib/prodloop-wal"
    settings = _settings_of_pod(docs, tmp_path, monkeypatch)
    assert settings.receiver.durability == "wal" and str(settings.receiver.wal_dir) == mounts["wal"]

    # a relative wal_dir is under the working directory; no storage class: the cluster's default
    docs = _render_valid(validated_tools, "--set", "receiver.wal_dir=.prodloop/wal")
    (statefulset,) = by_kind(docs, "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    container = _container(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert _env(container)["PRODLOOP_RECEIVER__WAL_DIR"] == mounts["wal"] == "/var/lib/prodloop/.prodloop/wal"


@pytest.mark.parametrize(
    "args",
    [["--set", "receiver.durability=memory"], ["--set", "kafka.bootstrap_servers={kafka-0:9092}"]],
    ids=["direct-memory", "kafka"],
)
def test_without_the_wal_the_pods_are_a_deployment(validated_tools: Path, args: list[str]) -> None:
    docs = _render_valid(validated_tools, *args)
    assert not by_kind(docs, "StatefulSet")
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # the embedded store: one pod at a time
    container = _container(docs)
    assert "wal" not in {m["name"] for m in container["volumeMounts"]}
    assert not {"PRODLOOP_RECEIVER__DURABILITY", "PRODLOOP_RECEIVER__WAL_DIR"} & set(_env(container))


# -- the Grafana dashboards ---------------------------------------------------------------------


def test_the_charts_dashboards_are_copies_of_grafanas() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    copies = {p.name: p.read_bytes() for p in (CHART / "dashboards").glob("*.json")}
    fix = "re-sync them: .venv/bin/python scripts/sync_chart_dashboards.py"
    assert source
    assert sorted(copies) == sorted(source), f"helm/prodloop/dashboards/ is not grafana/dashboards/: {fix}"
    differ = sorted(name for name in source if copies[name] != source[name])
    assert not differ, f"helm/prodloop/dashboards/ {differ} differ from grafana/dashboards/: {fix}"


def test_each_dashboard_is_a_configmap_for_the_grafana_sidecar(validated_tools: Path) -> None:
    dashboards = {p.name: json.loads(p.read_text()) for p in (CHART / "dashboards").glob("*.json")}
    default = _render_valid(validated_tools)
    custom = _render_valid(
        validated_tools,
        *("--set", "dashboards.labelKey=grafana.com/dashboard", "--set-string", "dashboards.labelValue=yes"),
        *("--set", "dashboards.annotations.grafana_folder=prodloop"),
    )
    for docs, key, value, folder in (
        (default, "grafana_dashboard", "1", None),
        (custom, "grafana.com/dashboard", "yes", {"grafana_folder": "prodloop"}),
    ):
        maps = [d for d in by_kind(docs, "ConfigMap") if key in d["metadata"]["labels"]]
        rendered = {}
        for m in maps:  # one per dashboard: a ConfigMap holds at most 1 MiB
            ((name, text),) = m["data"].items()
            rendered[name] = json.loads(text)
            assert m["metadata"]["labels"][key] == value
            assert m["metadata"]["name"] == "prodloop-dashboard-" + name.removesuffix(".json")
            assert m["metadata"].get("annotations") == folder
        assert len(maps) == len(rendered) and rendered == dashboards
    off = render(validated_tools, "--set", "dashboards.enabled=false")
    assert [d["metadata"]["name"] for d in by_kind(off, "ConfigMap")] == ["prodloop"]


def test_a_dashboard_too_big_for_a_configmap_is_refused(validated_tools: Path, tmp_path: Path) -> None:
    chart = tmp_path / "prodloop"
    shutil.copytree(CHART, chart)
    (chart / "dashboards" / "huge.json").write_text(json.dumps({"title": "x" * 1_100_000}))
    proc = subprocess.run(
        [str(validated_tools / "helm"), "template", "prodloop", str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert (
        "dashboards/huge.json is 1100013 bytes, over 1000000: a ConfigMap holds at most 1 MiB" in proc.stderr
    ), proc.stderr


# -- values.schema.json -------------------------------------------------------------------------

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# values whose keys are Kubernetes' (kubeconform checks them) or free (maps), not the chart's
OPEN_OBJECTS = {
    ("alerts", "jira", "priorities"),
    ("history", "cronjob", "resources"),
    ("dashboards", "annotations"),
    ("podAnnotations",),
    ("podLabels",),
    ("podSecurityContext",),
    ("securityContext",),
    ("resources",),
    ("livenessProbe",),
    ("readinessProbe",),
    ("kubernetesService", "annotations"),
    ("schemaJob", "resources"),
    ("serviceMonitor", "labels"),
    ("serviceMonitor", "tlsConfig"),
    ("nodeSelector",),
    ("affinity",),
}
OPTIONAL_VALUES = {("podDisruptionBudget", "minAvailable")}  # in the schema, not in values.yaml


def test_the_schema_covers_every_value_and_every_setting() -> None:
    """Every key of values.yaml has a schema, and only those; an object with fixed keys admits
    no other (a typo fails); a settings section's keys are the settings' and the chart's own."""
    values = YAML(typ="safe").load((CHART / "values.yaml").read_text())
    assert SCHEMA["additionalProperties"] is False

    def walk(node: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...]) -> None:
        if path in OPEN_OBJECTS:
            assert schema["type"] == "object" and "properties" not in schema, path
            return
        schema = SCHEMA["definitions"]["secret"] if "$ref" in schema else schema
        assert schema.get("additionalProperties") is False, f"{'.'.join(path)}: admits unknown keys"
        props = schema["properties"]
        for key, value in node.items():
            assert key in props, f"values.yaml {'.'.join((*path, key))}: not in values.schema.json"
            if isinstance(value, dict):
                walk(value, props[key], (*path, key))
        extra = {(*path, k) for k in props if k not in node} - OPTIONAL_VALUES
        assert not extra, f"values.schema.json has keys values.yaml lacks: {extra}"

    walk(values, SCHEMA, ())
    for section in {path[0] for path in LEAVES} - {"testing"}:
        props = set(SCHEMA["properties"][section]["properties"])
        settings = {path[1] for path in LEAVES if path[0] == section}
        assert props == settings | set(CHART_ONLY.get(section, ())), section
    assert set(SCHEMA["definitions"]["secret"]["properties"]) == SECRET_KEYS


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--set", "stream.workers=lots"], "at '/stream/workers': 'anyOf' failed"),
        (["--set", "replicaCont=2"], "additional properties 'replicaCont' not allowed"),
        (["--set", "stream.wokers=2"], "at '/stream': additional properties 'wokers' not allowed"),
        (["--set", "kafka.security_protocol=TLS"], "at '/kafka/security_protocol': value must be one of"),
        (["--set", "receiver.durability=disk"], "at '/receiver/durability': value must be one of"),
        (["--set", "replicaCount=-1"], "at '/replicaCount': minimum: got -1, want 0"),
    ],
)
def test_the_schema_rejects_bad_values_in_lint_and_template(
    validated_tools: Path, args: list[str], error: str
) -> None:
    for proc in (helm_lint(validated_tools, *args), helm_template(validated_tools, *args)):
        assert proc.returncode != 0 and error in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_schema_accepts_what_the_settings_accept(
    validated_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forms beside the defaults' (which validate_deploy.sh lints with every ci/*-values.yaml):
    lists as one string, decimals as strings, timestamps; prodloop loads the result."""
    values = tmp_path / "values.yaml"
    values.write_text(
        "kafka: {bootstrap_servers: 'kafka-0:9092, kafka-1:9092'}\n"
        "stream: {workers: 0}\n"
        "store: {ttl_days: 30}\n"
        "alerts: {github: {labels: 'prodloop,debt'}}\n"
        "cost:\n  rates:\n"
        "    - {service: payments, usd_per_hour: '1.25', since: 2026-01-01T00:00:00Z}\n"
        "    - {service: checkout, usd_per_cpu_hour: 0.0464, cpus_per_instance: 2, instances: 1.5}\n"
        "history: {repositories: [{name: shop, path: /srv/shop}]}\n"
        "podDisruptionBudget: {minAvailable: 50%}\n"
    )
    lint = helm_lint(validated_tools, "-f", str(values))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = _render_valid(validated_tools, "-f", str(values))
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == "50%"
    settings = _settings_of_pod(docs, tmp_path, monkeypatch)
    assert settings.kafka.bootstrap_servers == ["kafka-0:9092", "kafka-1:9092"]
    assert settings.stream.workers == 0 and settings.store.ttl_days == 30
    assert settings.alerts.github.labels == ["prodloop", "debt"]
    assert [r.service for r in settings.cost.rates] == ["payments", "checkout"]
    assert settings.history.repositories[0].path == Path("/srv/shop")
    # and an integer worker count, as --set gives it
    proc = helm_template(
        validated_tools, "--set", "stream.workers=4", "--show-only", "templates/configmap.yaml"
    )
    assert proc.returncode == 0, proc.stderr
    assert "workers: 4\n" in proc.stdout


def test_plain_helm_template_needs_no_kube_version(validated_tools: Path) -> None:
    """helm is linked with its Makefile's Kubernetes version (validate_deploy.sh), not v1.20."""
    proc = subprocess.run(
        [str(validated_tools / "helm"), "template", str(CHART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
