"""The deployment artifacts: Helm chart, docker-compose stack, Dockerfile and Grafana dashboards.

* The chart is linted, rendered and validated (kubeconform, strict, offline schemas) by
  ``scripts/validate_deploy.sh``; the rendered manifests are then checked against prodloop's
  own settings: the ConfigMap's prodloop.yaml loads with ``load_settings``, every environment
  variable names a real setting, every setting has a Helm value.
* docker-compose.yml and the Collector config are checked statically (no Docker engine here).
* Every dashboard query (panels, variables, annotations) is executed, with Grafana's
  variables and the ClickHouse plugin's macros expanded, against the real ClickHouse engine
  (chDB) holding known aggregates, and its numbers are compared with the sketch's own.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel, SecretStr
from ruamel.yaml import YAML

from attribution.aggregate import AggregateRow, NameRow
from attribution.cost import CostEntry
from attribution.model import DeployEvent
from attribution.sketch import bucket_of, merge_bins, quantile
from collector.app.attribution_files import load_attribution
from collector.app.rules_file import load_rules
from collector.app.settings import Settings, load_settings
from collector.cli import commands as cli
from collector.exporters.clickhouse.aggregates import quantile_sql
from collector.exporters.clickhouse.migrations import MIGRATIONS_DIR
from collector.exporters.clickhouse.store import ClickHouseStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "prodloop"
CI_VALUES = CHART / "ci" / "kafka-sasl-alerts-values.yaml"
ALL_DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def _datasource_type(dashboard: Path) -> str:
    return str(json.loads(dashboard.read_text())["templating"]["list"][0]["query"])


# by data source: the ClickHouse dashboards' SQL is checked here; the Prometheus one's
# expressions against a live /metrics in test_self_metrics.py
DASHBOARDS = [d for d in ALL_DASHBOARDS if _datasource_type(d) == "grafana-clickhouse-datasource"]
PROMETHEUS_DASHBOARDS = [d for d in ALL_DASHBOARDS if _datasource_type(d) == "prometheus"]
TOOLS = Path(os.environ.get("PRODLOOP_TOOLS_DIR", str(Path.home() / ".cache" / "prodloop" / "tools")))
K8S_VERSION = "1.36.3"
SETTINGS_SECTIONS = (
    "store",
    "attribution",
    "aggregation",
    "kafka",
    "stream",
    "service",
    "receiver",
    "alerts",
    "cost",
    "history",
)
# values of the chart's own, beside the settings: the history CronJob and its token Secret,
# the write-ahead log's volume claim
CHART_ONLY = {"history": ("cronjob", "gitTokenSecret"), "receiver": ("walSize", "walStorageClass")}
SECRET_KEYS = {"existingSecret", "key", "value"}

yaml_safe = YAML(typ="safe")


# -- settings helpers -------------------------------------------------------------------------


def setting_leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf setting path -> its annotation."""
    out: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(setting_leaves(ann, (*prefix, name)))
        else:
            out[(*prefix, name)] = ann
    return out


LEAVES = setting_leaves(Settings)
SECRET_LEAVES = {path for path, ann in LEAVES.items() if "SecretStr" in str(ann)}


def setting_of_env(name: str) -> tuple[str, ...] | None:
    """PRODLOOP_SECTION__KEY[__SUB] -> the settings path, or None when it names no setting."""
    if not name.startswith("PRODLOOP_"):
        return None
    path = tuple(p.lower() for p in name.removeprefix("PRODLOOP_").split("__"))
    return path if path in LEAVES else None


def value_leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Leaf paths of a values section; a secret entry ({existingSecret, key, value}) is a leaf."""
    out: set[tuple[str, ...]] = set()
    for k, v in values.items():
        path = (*prefix, k)
        if isinstance(v, dict) and path not in LEAVES and set(v) != SECRET_KEYS:
            out |= value_leaves(v, path)
        else:
            out.add(path)
    return out


# -- helm -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def validated_tools() -> Path:
    """Runs scripts/validate_deploy.sh (installing helm and kubeconform if needed) once."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "validate_deploy.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode == 2:
        pytest.fail(f"helm/kubeconform could not be installed:\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, f"validate_deploy.sh failed:\n{proc.stderr[-6000:]}"
    return TOOLS


def helm_template(tools: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(tools / "helm"),
            "template",
            "prodloop",
            str(CHART),
            "--namespace=obs",
            f"--kube-version={K8S_VERSION}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def helm_lint(tools: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "helm"), "lint", "--strict", str(CHART), f"--kube-version={K8S_VERSION}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kubeconform(tools: Path, manifests: str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict over the offline schemas validate_deploy.sh built."""
    schemas = next((tools / "k8s-schemas").glob(f"v{K8S_VERSION}-*"))
    location = f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
    return subprocess.run(
        [str(tools / "kubeconform"), "-strict", "-summary", "-schema-location", location, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def render(tools: Path, *args: str) -> list[dict[str, Any]]:
    proc = helm_template(tools, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml_safe.load_all(proc.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def settings_configmap(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap holding prodloop.yaml (the others hold Grafana dashboards)."""
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if "prodloop.yaml" in d["data"]]
    return configmap


def test_validate_deploy_script_passes(validated_tools: Path) -> None:
    """helm lint --strict, helm template and kubeconform -strict, default and CI values."""
    assert (validated_tools / "helm").exists()
    assert (validated_tools / "kubeconform").exists()


def test_kubeconform_rejects_an_invalid_manifest(validated_tools: Path) -> None:
    """The offline schemas are real: an unknown field and a wrongly typed port are errors."""
    bad = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  bogus: 1\n"
        "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
        "    spec: {containers: [{name: c, image: i, ports: [{containerPort: x}]}]}\n"
    )
    proc = kubeconform(validated_tools, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bogus" in proc.stdout and "containerPort" in proc.stdout


def test_values_mirror_every_setting() -> None:
    """Every setting has a Helm value at the same path, and no more."""
    values = yaml_safe.load((CHART / "values.yaml").read_text())
    expected = set(LEAVES)
    assert {path[0] for path in expected} == set(SETTINGS_SECTIONS)
    got: set[tuple[str, ...]] = set()
    for section in SETTINGS_SECTIONS:
        own = {k: v for k, v in values[section].items() if k not in CHART_ONLY.get(section, ())}
        got |= value_leaves(own, (section,))
    assert got == expected
    for path in SECRET_LEAVES:
        entry: Any = values
        for p in path:
            entry = entry[p]
        assert set(entry) == SECRET_KEYS, path
        assert entry["value"] == "" and entry["existingSecret"] == "", path
    # defaults equal the settings' defaults, except the listen addresses a pod needs
    defaults = Settings().model_dump(mode="json")
    pod_overrides = {
        ("service", "metrics_host"),
        ("receiver", "grpc_host"),
        ("receiver", "http_host"),
    }
    for path in expected - SECRET_LEAVES - pod_overrides:
        want: Any = defaults
        have: Any = values
        for p in path:
            want, have = want[p], have[p]
        assert have == want, path


def test_every_cli_option_of_run_and_schema_apply_has_a_helm_value() -> None:
    """Convention 8: the run/schema-apply options' env vars are settings the chart sets."""
    values = yaml_safe.load((CHART / "values.yaml").read_text())
    schema_group = cli.main.commands["schema"]
    assert isinstance(schema_group, click.Group)
    commands = [cli.main.commands["run"], schema_group.commands["apply"]]
    for command in commands:
        for param in command.params:
            envvar = param.envvar
            if not isinstance(envvar, str) or envvar == "PRODLOOP_CONFIG":
                continue  # the chart passes --config /etc/prodloop/prodloop.yaml
            path = setting_of_env(envvar)
            assert path is not None, envvar
            node: Any = values
            for p in path:
                assert p in node, f"{envvar}: no Helm value {'.'.join(path)}"
                node = node[p]


def _env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def test_rendered_chart_matches_the_settings(validated_tools: Path, tmp_path: Path) -> None:
    docs = render(validated_tools, "-f", str(CI_VALUES))
    values = yaml_safe.load(CI_VALUES.read_text())
    (deployment,) = by_kind(docs, "Deployment")
    configmap = settings_configmap(docs)
    (service,) = by_kind(docs, "Service")
    (job,) = by_kind(docs, "Job")
    assert by_kind(docs, "ServiceMonitor") and by_kind(docs, "PodDisruptionBudget")

    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["args"] == ["run", "--config", "/etc/prodloop/prodloop.yaml"]
    assert pod["terminationGracePeriodSeconds"] > values["service"]["grace_seconds"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 9464}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    assert job_container["args"] == ["schema", "apply"]

    # every PRODLOOP_* variable of the pods is a setting; secrets come from secretKeyRefs
    secret_env = {}
    for c in (container, job_container):
        for e in c["env"]:
            if e["name"].startswith("PRODLOOP_"):
                assert setting_of_env(e["name"]) is not None, e["name"]
            if "secretKeyRef" in e.get("valueFrom", {}):
                secret_env[e["name"]] = e["valueFrom"]["secretKeyRef"]
    assert secret_env["PRODLOOP_KAFKA__SASL_PASSWORD"] == {"name": "prodloop-kafka", "key": "sasl-password"}
    assert secret_env["PRODLOOP_ALERTS__GITHUB__TOKEN"] == {"name": "prodloop-github", "key": "token"}
    assert secret_env["PRODLOOP_ALERTS__JIRA__API_TOKEN"] == {"name": "prodloop", "key": "jira-api-token"}
    assert secret_env["PRODLOOP_STORE__PASSWORD"] == {"name": "prodloop-clickhouse", "key": "password"}
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "prodloop"
    assert set(secret["data"]) == {"jira-api-token", "github-webhook-secret"}
    assert "not-a-real" not in configmap["data"]["prodloop.yaml"]

    # prodloop.yaml + the secret env vars build the intended Settings
    config = tmp_path / "prodloop.yaml"
    config.write_text(configmap["data"]["prodloop.yaml"])
    fake = {name: f"secret-of-{name.lower()}" for name in secret_env}
    saved = {k: v for k, v in os.environ.items() if k.startswith("PRODLOOP_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(fake)
    try:
        settings = load_settings(config)
    finally:
        for k in fake:
            del os.environ[k]
        os.environ.update(saved)
    assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrap_servers"]
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert isinstance(settings.kafka.sasl_password, SecretStr)
    assert settings.kafka.sasl_password.get_secret_value() == fake["PRODLOOP_KAFKA__SASL_PASSWORD"]
    assert settings.alerts.github.token is not None
    assert settings.alerts.github.token.get_secret_value() == fake["PRODLOOP_ALERTS__GITHUB__TOKEN"]
    assert settings.alerts.jira.priorities == {"high": "High", "low": "Low"}
    assert settings.store.dsn == values["store"]["dsn"] and settings.store.ttl_days == 90
    assert settings.service.grace_seconds == 45.5 and settings.service.metrics_host == "0.0.0.0"
    assert settings.receiver.max_request_bytes == 16 * 1024 * 1024
    assert str(settings.attribution.codeowners) == "/etc/prodloop/CODEOWNERS"
    assert str(settings.attribution.modules) == "/etc/prodloop/modules.yaml"
    assert str(settings.alerts.rules) == "/etc/prodloop/rules.yaml"
    assert set(configmap["data"]) == {"prodloop.yaml", "CODEOWNERS", "modules.yaml", "rules.yaml"}
    assert settings.attribution.source_roots == ["/srv/shop", "/app"]

    # the mounted files are what prodloop's own loaders accept
    for key in ("CODEOWNERS", "modules.yaml", "rules.yaml"):
        (tmp_path / key).write_text(configmap["data"][key])
    rules = load_rules(tmp_path / "rules.yaml")
    assert [r.name for r in rules.rules] == ["regression-after-deploy"]
    loaded = load_attribution(
        config=None,
        codeowners=tmp_path / "CODEOWNERS",
        modules=tmp_path / "modules.yaml",
        source_roots=settings.attribution.source_roots,
        repository_url=settings.attribution.repository,
    )
    assert not loaded.codeowners_problems and not loaded.module_problems


def test_default_values_render_a_single_embedded_replica(validated_tools: Path, tmp_path: Path) -> None:
    docs = render(validated_tools)
    assert not by_kind(docs, "Job")  # no ClickHouse server to migrate
    assert not by_kind(docs, "Secret")
    assert not by_kind(docs, "Deployment")  # direct mode with the write-ahead log: a StatefulSet
    (statefulset,) = by_kind(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    configmap = settings_configmap(docs)
    config = tmp_path / "prodloop.yaml"
    config.write_text(configmap["data"]["prodloop.yaml"])
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PRODLOOP_")}
    try:
        settings = load_settings(config)
    finally:
        os.environ.update(saved)
    assert settings.kafka.bootstrap_servers == []
    assert settings.receiver.grpc_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=2"], "replicaCount > 1 needs a ClickHouse server"),
        (["--set", "kafka.security_protocol=SASL_SSL"], "needs kafka.sasl_mechanism"),
        (
            ["--set", "kafka.security_protocol=SASL_SSL", "--set", "kafka.sasl_mechanism=PLAIN"],
            "needs kafka.sasl_password",
        ),
        (["--set", "service.metrics_host=127.0.0.1"], "service.metrics_host must be 0.0.0.0"),
    ],
)
def test_chart_refuses_settings_that_cannot_work(
    validated_tools: Path, args: list[str], message: str
) -> None:
    proc = helm_template(validated_tools, *args)
    assert proc.returncode != 0
    assert message in proc.stderr


# -- docker compose, Collector, Dockerfile ----------------------------------------------------


def test_compose_stack_is_consistent() -> None:
    compose = YAML(typ="rt").load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "kafka-topics",
        "clickhouse",
        "otel-collector",
        "prodloop",
        "prometheus",
        "grafana",
    }
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["grafana"]["environment"]["GF_PLUGINS_PREINSTALL_SYNC"] == "grafana-clickhouse-datasource"

    # every host path mounted exists
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source}"

    # prodloop: env names are settings; values validate; the topics exist
    prodloop = services["prodloop"]
    env = {k: str(v) for k, v in prodloop["environment"].items()}
    for name in env:
        assert setting_of_env(name) is not None, name
    assert "prodloop schema apply" in prodloop["entrypoint"][-1]
    assert "prodloop run" in prodloop["entrypoint"][-1]
    assert prodloop["build"] == "."
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in prodloop["volumes"]}
    for key in (
        "PRODLOOP_ATTRIBUTION__CODEOWNERS",
        "PRODLOOP_ATTRIBUTION__MODULES",
        "PRODLOOP_ALERTS__RULES",
    ):
        assert env[key] in mounted, key
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PRODLOOP_")}
    os.environ.update(env)
    try:
        settings = load_settings(None)
    finally:
        for k in env:
            del os.environ[k]
        os.environ.update(saved)
    assert settings.kafka.bootstrap_servers == ["kafka:9092"]
    assert settings.store.dsn == "http://prodloop@clickhouse:8123/prodloop"
    assert settings.store.password is not None
    assert settings.store.password.get_secret_value() == "prodloop"
    topics_script = services["kafka-topics"]["command"][0]
    k = settings.kafka
    for topic in (k.traces_topic, k.deploys_topic, k.incidents_topic, k.dead_letter_topic):
        assert f"{topic}:" in topics_script, topic
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert prodloop["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    stop = int(str(prodloop["stop_grace_period"]).removesuffix("s"))
    assert stop > settings.service.grace_seconds

    # the Collector writes what prodloop reads
    otel = yaml_safe.load((REPO / "compose" / "otel-collector.yaml").read_text())
    kafka_exporter = otel["exporters"]["kafka"]
    assert kafka_exporter["brokers"] == settings.kafka.bootstrap_servers
    assert kafka_exporter["traces"] == {"topic": k.traces_topic, "encoding": k.traces_encoding}
    assert kafka_exporter["partition_traces_by_id"] is True
    assert otel["service"]["pipelines"]["traces"]["exporters"] == ["kafka"]
    assert set(otel["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}

    # Grafana: the provisioning files and the dashboards folder it points at
    ds = yaml_safe.load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    genv = services["grafana"]["environment"]
    for placeholder in re.findall(r"\$(\w+)", json.dumps(source)):
        assert placeholder in genv, placeholder
    assert genv["CLICKHOUSE_DATABASE"] == settings.store.database
    provider = yaml_safe.load((REPO / "grafana/provisioning/dashboards/prodloop.yaml").read_text())
    grafana_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts[provider["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    for dashboard in DASHBOARDS:
        assert json.loads(dashboard.read_text())["templating"]["list"][0]["current"]["value"] == source["uid"]

    # Prometheus scrapes prodloop; Grafana reads it for the Prometheus dashboards
    scrape = yaml_safe.load((REPO / "grafana/prometheus/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"prodloop:{settings.service.metrics_port}"]}]
    assert "9090:9090" in services["prometheus"]["ports"]
    prom = yaml_safe.load((REPO / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (prom_source,) = prom["datasources"]
    assert prom_source["type"] == "prometheus" and prom_source["url"] == "http://prometheus:9090"
    for dashboard in PROMETHEUS_DASHBOARDS:
        current = json.loads(dashboard.read_text())["templating"]["list"][0]["current"]["value"]
        assert current == prom_source["uid"], dashboard.name


def test_dockerfile_installs_the_cli() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install ." in text
    assert 'ENTRYPOINT ["prodloop"]' in text
    assert re.search(r"^USER 10001", text, re.M)
    for copied in re.findall(r"^COPY (?!--from=)(\S+) ", text, re.M):
        assert (REPO / copied).exists(), copied
    # the native extension: built in a cargo stage, its wheel installed beside prodloop's
    assert re.search(r"^FROM rust:\S+ AS native$", text, re.M)
    assert "maturin build --release --manifest-path /native/Cargo.toml" in text
    assert "COPY --from=native /wheels /wheels" in text and "/wheels/prodloop_native-*.whl" in text
    # from a checkout, the migrations are the repository's own (linked into the package)
    assert MIGRATIONS_DIR.resolve() == REPO / "schemas" / "clickhouse"


def _wheel_installed(src: Path, pattern: str, tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    """Build ``src``'s wheel (named ``pattern``) and install it, alone, into a fresh target."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
        env=env,
    )
    (wheel,) = (tmp_path / "dist").glob(pattern)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


def test_the_wheel_installs_away_from_the_checkout_and_runs(tmp_path: Path) -> None:
    """The built wheel, installed elsewhere: every module imports from it, it carries its
    migrations and event schemas (`schema apply` works, as in the Docker image), and
    `prodloop demo` runs the whole loop there."""
    src = tmp_path / "src"  # build from a copy: no build/ left in the checkout, nothing stale in it
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "attribution", "collector", "schemas"):
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True
            )
        else:
            shutil.copy2(REPO / name, src / name)
    site = _wheel_installed(src, "prodloop-*.whl", tmp_path)
    shipped = site / "collector" / "_schemas"
    for sub in ("clickhouse", "events"):
        assert sorted(p.name for p in (shipped / sub).iterdir()) == sorted(
            p.name for p in (REPO / "schemas" / sub).iterdir()
        ), sub
    assert not (site / "tests").exists()  # test code does not ship
    modules = sorted(
        ".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("attribution", "collector")
        for p in (site / pkg).rglob("*.py")
        if p.name != "__main__.py"
    )
    in_checkout = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("attribution", "collector")
        for p in (REPO / pkg).rglob("*.py")
        if p.name != "__main__.py"
    )
    assert modules == in_checkout  # the wheel carries every module (packages found automatically)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PRODLOOP_CONFIG", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )

    imported = run(
        "-c",
        "import importlib, sys\nfor name in sys.argv[1:]:\n    print(importlib.import_module(name).__file__)",
        *modules,
    )
    assert imported.returncode == 0, imported.stderr
    files = imported.stdout.splitlines()
    assert len(files) == len(modules)
    assert all(Path(f).is_relative_to(site) for f in files), [f for f in files if str(site) not in f]
    # away from the checkout, it applies the migrations it carries
    applied = run("-m", "collector.cli", "schema", "apply", "--store", f"chdb://{tmp_path / 'store'}")
    assert applied.returncode == 0, applied.stderr
    assert "0006_tickets" in applied.stdout + applied.stderr
    demo = run("-m", "collector.cli", "demo", "--minutes", "3", "--store", f"chdb://{tmp_path / 'demo'}")
    assert demo.returncode == 0, demo.stderr
    assert "payments" in demo.stdout


def test_the_native_wheel_installs_and_the_service_reports_it(tmp_path: Path) -> None:
    """The extension's wheel (as the Dockerfile's builder stage makes it), installed elsewhere:
    prodloop finds it, runs its native path, and /metrics says native="true"."""
    if not shutil.which("cargo"):
        pytest.fail("cargo is not on PATH: the native wheel cannot be built here")
    src = tmp_path / "native"
    shutil.copytree(REPO / "native", src, ignore=shutil.ignore_patterns("target"))
    env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "native" / "target")}  # reuse the setup's build
    site = _wheel_installed(src, "prodloop_native-*-abi3-*.whl", tmp_path, env)  # one wheel, CPython >= 3.11
    probe = (
        "import prodloop_native, sys\n"
        "from prometheus_client import generate_latest\n"
        "from collector.processing import native\n"
        "from collector.processing.metrics import service_registry\n"
        "print(prodloop_native.__file__)\n"
        "print(generate_latest(service_registry('direct', native.resolve('native'))).decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    where, metrics = out.stdout.split("\n", 1)
    assert Path(where).is_relative_to(site), where
    (info,) = [line for line in metrics.splitlines() if line.startswith("prodloop_build_info{")]
    assert 'native="true"' in info, info


# -- Grafana dashboards, executed ---------------------------------------------------------------

T0 = int(datetime(2026, 1, 10, 10, 0, tzinfo=UTC).timestamp())  # first window, unix seconds
WINDOWS = 60  # one hour of 60 s windows
DEPLOY_AT = T0 + 30 * 60
OLD_SHA, NEW_SHA = "a" * 40, "b" * 40
# the Grafana time range and $__interval_s used for every query
RANGE_FROM, RANGE_TO, INTERVAL_S = T0 - 600, T0 + WINDOWS * 60 + 600, 300

MODULES = {  # module -> (service, owners, base latency ms, error every n)
    "payments/retry": ("payments", ("@acme/payments", "@carol"), 40, 50),
    "payments/processor": ("payments", ("@acme/payments",), 20, 200),
    "checkout/api": ("checkout", ("@acme/checkout",), 10, 100),
}


def _row(
    window_s: int,
    service: str,
    module: str,
    owners: tuple[str, ...],
    commit: str,
    deploy: str,
    durations_ns: list[int],
    errors: int,
    reason: str = "",
) -> AggregateRow:
    bins: dict[int, int] = {}
    for d in durations_ns:
        b = bucket_of(d)
        bins[b] = bins.get(b, 0) + 1
    n = len(durations_ns)
    return AggregateRow(
        window_s * 1_000_000_000,
        service,
        "prod",
        "https://github.com/acme/shop",
        module,
        owners,
        commit,
        deploy,
        reason,
        n,
        n * 2000,  # sampled 1 in 2
        errors,
        errors * 2000,
        sum(durations_ns),
        2 * sum(durations_ns),
        min(durations_ns),
        max(durations_ns),
        bins,
    )


def _dataset() -> list[AggregateRow]:
    rows = []
    for w in range(WINDOWS):
        start = T0 + 60 * w
        for module, (service, owners, base_ms, err_every) in MODULES.items():
            after = service == "payments" and start >= DEPLOY_AT
            slow = 2.3 if after and module == "payments/retry" else 1.0
            commit, deploy = (
                (NEW_SHA, "deploy-payments-2.8.0") if after else (OLD_SHA, "deploy-payments-2.7.0")
            )
            if service == "checkout":
                commit, deploy = "c" * 40, "deploy-checkout-1.0.0"
            durations = [int((base_ms + (i * 7919 + w * 31) % (base_ms * 2)) * slow * 1e6) for i in range(40)]
            errors = sum(1 for i in range(40) if (w * 40 + i) % err_every == 0) * (
                3 if after and slow > 1 else 1
            )
            rows.append(_row(start, service, module, owners, commit, deploy, durations, errors))
        rows.append(
            _row(start, "payments", "(unattributed)", (), OLD_SHA, "", [1_000_000] * 5, 0, "external")
        )
        rows.append(_row(start, "checkout", "(unattributed)", (), "", "", [2_000_000] * 3, 0, "no_location"))
    return rows


@pytest.fixture
def dashboard_store(store: ClickHouseStore) -> Iterator[ClickHouseStore]:
    rows = _dataset()
    store.write_aggregates(rows, 60_000_000_000, dedup_token="dashboards-1")
    # the span names behind the (unattributed) rows of _dataset: 3 no_location, 5 external a window
    names = [
        NameRow(r.window_start_unix_nano, r.service, r.environment, r.unattributed_reason, name, n)
        for r in rows
        if r.unattributed_reason
        for name, n in (
            (("GET /healthz", 2), ("GET /metrics", 1)) if r.service == "checkout" else (("redis SET", 5),)
        )
    ]
    store.write_names(names, 60_000_000_000, dedup_token="dashboards-names-1")
    day = (T0 - T0 % 86_400) * 10**9  # the charge day holding the data (cost-vs-traffic.json)
    store.write_costs(
        [
            CostEntry("payments", "prod", day, day + 86_400 * 10**9, 120_000_000),
            CostEntry("checkout", "prod", day, day + 86_400 * 10**9, 30_000_000),
        ],
        source="bill.csv",
        imported_at_unix_nano=(T0 + 4000) * 10**9,
    )
    store.write_deploys(
        [
            DeployEvent("deploy-payments-2.7.0", "payments", "prod", OLD_SHA, (T0 - 3600) * 10**9),
            DeployEvent(
                "deploy-payments-2.8.0", "payments", "prod", NEW_SHA, DEPLOY_AT * 10**9, previous_sha=OLD_SHA
            ),
            DeployEvent("deploy-checkout-1.0.0", "checkout", "prod", "c" * 40, (T0 - 7200) * 10**9),
            DeployEvent(
                "deploy-payments-2.8.1", "payments", "prod", "d" * 40, (T0 + 3000) * 10**9, status="failed"
            ),
        ],
        received_at_unix_nano=(T0 + 4000) * 10**9,
    )
    store.command(
        "INSERT INTO tickets (fingerprint, sink, generation, rule, service, environment, module, state, "
        "ticket_key, ticket_url, opened_at, last_comment_at, summary, updated_at, version) VALUES "
        "('0123456789abcdef', 'github', 1, 'regression-after-deploy', 'payments', 'prod', 'payments/retry', "
        "'open', '#42', 'https://github.com/acme/shop/issues/42', toDateTime64({t:Int64}, 3), "
        "toDateTime64({t:Int64}, 3), 'p95 2.3x after deploy-payments-2.8.0', toDateTime64({t:Int64}, 3), 1)",
        {"t": DEPLOY_AT + 600},
    )
    yield store


def _grafana_format(values: list[str] | None, fmt: str | None) -> str:
    """Grafana's interpolation of a (multi-value) variable; None: All with allValue '__all'."""
    if values is None:
        return "'__all'"  # a custom allValue is inserted as is, whatever the format
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    return ",".join(values)


def expand(sql: str, variables: dict[str, list[str] | None]) -> str:
    """Grafana's template variables, then the ClickHouse plugin's macros (pkg/macros)."""

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in variables:
            raise AssertionError(f"unknown variable ${name} in {sql[:80]}")
        return _grafana_format(variables[name], m.group(2))

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", var, sql)
    sql = re.sub(
        r"\$__timeFilter\(\s*([^)]+?)\s*\)",
        lambda m: f"{m[1]} >= toDateTime({RANGE_FROM}) AND {m[1]} <= toDateTime({RANGE_TO})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(\s*([^)]+?)\s*\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {INTERVAL_S} second)",
        sql,
    )
    sql = sql.replace("$__interval_s", str(INTERVAL_S))
    sql = sql.replace("$__fromTime", f"toDateTime({RANGE_FROM})").replace(
        "$__toTime", f"toDateTime({RANGE_TO})"
    )
    assert "$" not in sql, f"unexpanded placeholder in: {sql}"
    return sql


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, SQL) of every panel target, variable and annotation."""
    panels = list(dashboard["panels"])
    for p in list(panels):
        panels.extend(p.get("panels", []))
    for p in panels:
        for t in p.get("targets", []):
            yield f"panel {p['title']!r}", t["rawSql"]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            yield f"variable {v['name']}", v["query"]["rawSql"]
    for a in dashboard["annotations"]["list"]:
        if "target" in a:
            yield f"annotation {a['name']}", a["target"]["rawSql"]


SELECTIONS: dict[str, dict[str, list[str] | None]] = {
    "all": {
        "service": None,
        "environment": None,
        "module": None,
        "owner": None,
        "deploy": None,
        "window": ["1800"],
    },
    "one": {
        "service": ["payments"],
        "environment": ["prod"],
        "module": ["payments/retry"],
        "owner": ["@carol"],
        "deploy": ["deploy-payments-2.8.0"],
        "window": ["1800"],
    },
}


def test_dashboards_are_well_formed() -> None:
    assert sorted(DASHBOARDS + PROMETHEUS_DASHBOARDS) == ALL_DASHBOARDS, "a dashboard of another data source"
    assert [d.stem for d in PROMETHEUS_DASHBOARDS] == ["prodloop-self"]
    assert {d.stem for d in DASHBOARDS} == {
        "modules-overview",
        "module-detail",
        "deploy-impact",
        "tickets",
        "coverage",
        "ownership",
        "cost-vs-traffic",
    }
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
            for t in p["targets"]:
                assert t["editorType"] == "sql" and t["datasource"] == p["datasource"]
                assert t["queryType"] == ("timeSeries" if p["type"] == "timeseries" else "table")
    assert len(uids) == len(DASHBOARDS)


def test_dashboards_use_the_exact_quantile_sql() -> None:
    """p50/p95/p99 over a time range: collector.exporters.clickhouse.aggregates.quantile_sql over sumMap(latency_bins)."""
    overview = (REPO / "grafana/dashboards/modules-overview.json").read_text()
    for q in (0.5, 0.95, 0.99):
        assert (
            json.dumps(quantile_sql("bins", "spans", "duration_min_ns", "duration_max_ns", q))[1:-1]
            in overview
        )
    impact = (REPO / "grafana/dashboards/deploy-impact.json").read_text()
    for side in ("before", "after"):
        expr = quantile_sql(f"bins_{side}", f"spans_{side}", f"min_{side}", f"max_{side}", 0.95)
        assert json.dumps(expr)[1:-1] in impact
    assert "quantile(" not in overview and "quantileTDigest" not in overview


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_every_dashboard_query_runs_on_clickhouse(dashboard_store: ClickHouseStore, selection: str) -> None:
    tables = {
        r[0]
        for r in dashboard_store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    }
    empty = []
    count = 0
    for path in DASHBOARDS:
        for where, raw in _queries(json.loads(path.read_text())):
            for table in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)", raw, re.I):
                assert table in tables or table == "d", f"{path.name} {where}: unknown table {table}"
            sql = expand(raw, SELECTIONS[selection])
            try:
                rows = dashboard_store.query(sql)
            except Exception as exc:
                raise AssertionError(f"{path.name} {where}:\n{sql}\n{exc}") from exc
            count += 1
            if not rows:
                empty.append(f"{path.name} {where}")
    assert count >= 40
    # the data covers every selection: a query that finds nothing filters wrongly (e.g. a
    # SELECT alias shadowing the column a WHERE clause means)
    assert empty == []


def _run(store: ClickHouseStore, dashboard: str, title: str, selection: str) -> list[dict[str, Any]]:
    d = json.loads((REPO / "grafana/dashboards" / dashboard).read_text())
    (panel,) = [p for p in d["panels"] if p["title"] == title]
    sql = expand(panel["targets"][0]["rawSql"], SELECTIONS[selection])
    result = store.client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_module_table_agrees_with_the_sketch(dashboard_store: ClickHouseStore) -> None:
    """The overview's numbers are the sketch's: p50/p95/p99, error rate, adjusted spans."""
    rows = _run(dashboard_store, "modules-overview.json", "Modules: who hurts, who owns it", "all")
    data = _dataset()
    assert len(rows) == 5  # 3 modules + 2 (unattributed) rows
    for r in rows:
        mine = [x for x in data if x.service == r["service"] and x.module == r["module"]]
        bins: dict[int, int] = {}
        for x in mine:
            bins = merge_bins(bins, x.latency_bins)
        lo, hi = min(x.duration_min_ns for x in mine), max(x.duration_max_ns for x in mine)
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert r[col] == pytest.approx(
                round(quantile(bins, q, minimum=lo, maximum=hi) / 1e6, 3), abs=1e-3
            )
        spans = sum(x.spans for x in mine)
        assert r["spans"] == spans and r["spans_adjusted"] == 2 * spans
        assert r["error_rate"] == pytest.approx(sum(x.errors for x in mine) / spans)
        assert r["owners"] == " ".join(mine[0].owners)
    assert rows[0]["module"] == "payments/retry"  # slowest p95 first
    assert not any(math.isnan(r["p95_ms"]) for r in rows)


def test_deploy_impact_shows_the_regression(dashboard_store: ClickHouseStore) -> None:
    rows = _run(dashboard_store, "deploy-impact.json", "Per deploy and module: before vs after", "one")
    by_module = {r["module"]: r for r in rows}
    assert set(by_module) == {"payments/retry", "payments/processor"}
    retry = by_module["payments/retry"]
    assert retry["deploy_id"] == "deploy-payments-2.8.0"
    assert retry["before_commit"] == OLD_SHA[:12] and retry["after_commit"] == NEW_SHA[:12]
    assert 2.0 < retry["p95_ratio"] < 2.6  # made 2.3x slower
    assert retry["error_rate_after"] > retry["error_rate_before"]
    assert retry["spans_before"] == retry["spans_after"] == 30 * 40 * 2  # 30 windows each side, adjusted
    assert 0.9 < by_module["payments/processor"]["p95_ratio"] < 1.1
    assert rows[0]["module"] == "payments/retry"


def test_deploy_annotations_and_unattributed_reasons(dashboard_store: ClickHouseStore) -> None:
    d = json.loads((REPO / "grafana/dashboards/module-detail.json").read_text())
    (annotation,) = [a for a in d["annotations"]["list"] if "target" in a]
    result = dashboard_store.client.query(expand(annotation["target"]["rawSql"], SELECTIONS["all"]))
    texts = [dict(zip(result.column_names, r, strict=True))["text"] for r in result.result_rows]
    assert len(texts) == 1 and "deploy-payments-2.8.0" in texts[0]  # the failed deploy is no annotation
    rows = _run(dashboard_store, "modules-overview.json", "Unattributed spans per service", "all")
    assert {(r["service"], r["reason"]) for r in rows} == {
        ("payments", "external"),
        ("checkout", "no_location"),
    }
    tickets = _run(dashboard_store, "tickets.json", "Tickets", "all")
    assert [(t["module"], t["state"], t["ticket_key"]) for t in tickets] == [
        ("payments/retry", "open", "#42")
    ]
