"""prodloop's settings: one pydantic-settings model, built once in the CLI.

Sources, highest precedence first: command-line flags, environment variables
(``PRODLOOP_`` prefix, nested keys joined by ``__``, e.g. ``PRODLOOP_STORE__DSN``), the YAML
config file (``--config prodloop.yaml``), defaults.  Secrets are ``SecretStr`` and are
redacted in :meth:`Settings.redacted_dump`.

Errors name the key: ``store.dsn: ...`` or ``PRODLOOP_STORE__DSN: ...``.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from attribution.cost import CostRate, rate_micro_usd_per_hour
from attribution.model import TimeBounds
from collector.app.history_settings import HistorySettings
from collector.app.yaml_files import load_yaml, yaml_position
from collector.errors import ConfigError

ENV_PREFIX = "PRODLOOP_"


def _split_list(v: Any) -> Any:
    """Lists from the environment: comma- or whitespace-separated (JSON lists also accepted)."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            return json.loads(text)
        return [p for p in text.replace(",", " ").split() if p]
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Section):
    dsn: str = Field(
        "",
        description="chdb:///path (embedded, default ./.prodloop/store) or http(s)://user:pass@host:8123/db",
    )
    database: str = Field("prodloop", description="ClickHouse database holding prodloop's tables")
    ttl_days: int | None = Field(None, ge=1, description="expire aggregates after N days (off by default)")
    password: SecretStr | None = Field(None, description="password for http(s) DSNs, if not in the DSN")


class AttributionSettings(_Section):
    config: Path | None = Field(None, description="multi-repository attribution file (repositories: ...)")
    codeowners: Path | None = Field(None, description="CODEOWNERS file (one-repository shorthand)")
    modules: Path | None = Field(None, description="modules.yaml (one-repository shorthand)")
    source_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="prefixes stripped from absolute code.file.path values"
    )
    repository: str = Field("", description="repository URL for the one-repository shorthand")
    sample_rate_attribute: str = Field("", description="span attribute holding '1 in N' (e.g. SampleRate)")

    _split = field_validator("source_roots", mode="before")(_split_list)


class AggregationSettings(_Section):
    window_seconds: int = Field(60, ge=1, le=86400, description="tumbling window length")
    max_groups_per_window: int = Field(
        10_000, ge=1, description="cardinality cap; the rest goes to (overflow)"
    )
    max_future_seconds: int | None = Field(
        86_400,
        ge=0,
        description="reject spans (time_out_of_range) ending more than this after their Kafka record's "
        "timestamp or their request's arrival; null: no limit but the store's (2106)",
    )
    max_age_seconds: int | None = Field(
        None,
        ge=1,
        description="reject spans (time_out_of_range) starting more than this before their record's "
        "timestamp or arrival; null: store.ttl_days when set, else no limit but the store's (1970)",
    )
    trace_wait_ms: int = Field(
        10_000,
        ge=0,
        description="a trace's self time is computed this long (in record timestamps) after its first "
        "record; later spans keep their whole duration (counted as late)",
    )
    max_buffered_spans: int = Field(
        200_000,
        ge=1,
        description="the trace buffer's cap, per partition (or receiver pipeline, or file): past it the "
        "oldest traces complete early (counted)",
    )
    max_exception_types: int = Field(
        10, ge=1, description="exception types kept per module and window; the rest count as (other)"
    )
    hot_path: Literal["auto", "native", "python"] = Field(
        "auto",
        description="auto runs the native hot path (the prodloop_native extension) when it is installed, "
        "native refuses to start without it, python runs the pure-Python path",
    )


class KafkaSettings(_Section):
    bootstrap_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    traces_topic: str = "otlp_spans"
    traces_encoding: Literal["otlp_proto", "otlp_json", "auto"] = "otlp_proto"
    logs_topic: str = Field(
        "otlp_logs", description="OTLP logs, consumed for the exceptions their records carry"
    )
    logs_encoding: Literal["otlp_proto", "otlp_json", "auto"] = "otlp_proto"
    deploys_topic: str = "prodloop_deploys"
    incidents_topic: str = "prodloop_incidents"
    dead_letter_topic: str = "prodloop_dead_letters"
    group_id: str = "prodloop"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    startup_timeout_seconds: float = Field(
        300.0, gt=0, description="prodloop run waits this long for a reachable broker at start, then fails"
    )
    group_instance_id: str = Field(
        "",
        max_length=249,
        pattern=r"^[a-zA-Z0-9._-]*$",  # Kafka's rule for group.instance.id
        description="static group membership (KIP-345): this replica's id in the group, kept across "
        "restarts (the pod name); a restarted replica gets its partitions back at once instead of "
        "waiting session_timeout_ms for its dead predecessor; unique per replica; empty: off",
    )
    leave_group_on_stop: bool = Field(
        True,
        description="with group_instance_id: leave the group on SIGTERM so others take the partitions at "
        "once (scale-down, rollouts); false: they wait up to session_timeout_ms for this id to return",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        le=1_800_000,
        description="a replica that stops heartbeating leaves the group after this (within the broker's "
        "group.min/max.session.timeout.ms, 6 s to 30 min by default); heartbeats every quarter of it, at most 3 s",
    )

    _split = field_validator("bootstrap_servers", mode="before")(_split_list)


class StreamSettings(_Section):
    batch_records: int = Field(
        1000, ge=1, description="records per batch and partition (write + commit unit)"
    )
    linger_ms: int = Field(1000, ge=0, description="write a partial batch after this long")
    max_buffered_records: int = Field(2000, ge=1, description="per partition; a full partition is paused")
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="records buffered over all partitions; past it fetching pauses"
    )
    dedup_horizon: int = Field(
        1000, ge=0, description="offsets within which a repeated span id is a duplicate"
    )
    deploy_skew_ms: int = Field(
        10_000, ge=0, description="a batch is tagged with deploys up to its last record time + this"
    )
    write_chunk_rows: int = Field(5000, ge=1, description="aggregate rows per insert")
    workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = Field(
        "auto",
        description="processes that decode, deduplicate, attribute and aggregate (0: in the consumer "
        "process; auto: one per core of the CPU affinity and cgroup limit, at most 8, when two or more)",
    )
    backoff_max_seconds: float = Field(10.0, gt=0, description="cap of the store retry backoff")


class ServiceSettings(_Section):
    metrics_host: str = Field(
        "127.0.0.1",
        description="address of /metrics, /healthz and /readyz (loopback only by default; 0.0.0.0 exposes "
        "them: set metrics_bearer_token and TLS when others can reach it)",
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="port of /metrics, /healthz and /readyz (0: any)"
    )
    metrics_bearer_token: SecretStr | None = Field(
        None,
        description="require 'Authorization: Bearer TOKEN' on /metrics; /healthz and /readyz stay open "
        "for probes; unset: /metrics is open",
    )
    metrics_tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain): serve /metrics, /healthz and /readyz over HTTPS"
    )
    metrics_tls_key_file: Path | None = Field(
        None, description="PEM private key of metrics_tls_cert_file (both or neither)"
    )
    grace_seconds: float = Field(20.0, gt=0, description="SIGTERM: flush, commit and exit within this")
    log_format: Literal["json", "text"] = Field("json", description="structured JSON logs, or text")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ReceiverSettings(_Section):
    """The OTLP receivers (gRPC and HTTP) and the event/webhook/query HTTP API (collector/receivers/http.py)."""

    mode: Literal["auto", "direct", "gateway"] = Field(
        "auto",
        description="direct: aggregate in process and flush to the store; gateway: produce to Kafka; "
        "auto: gateway when kafka.bootstrap_servers is set, else direct",
    )
    grpc_enabled: bool = Field(True, description="serve OTLP/gRPC")
    grpc_host: str = Field("127.0.0.1", description="OTLP/gRPC listen address (0.0.0.0: every interface)")
    grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC port (0: any free port)")
    http_enabled: bool = Field(
        True, description="serve OTLP/HTTP, /v1/deploys, /v1/incidents, webhooks, /api/v1"
    )
    http_host: str = Field("127.0.0.1", description="HTTP listen address (0.0.0.0: every interface)")
    http_port: int = Field(4318, ge=0, le=65535, description="HTTP port (0: any free port)")
    max_request_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="largest accepted request body, after gunzip (413 / RESOURCE_EXHAUSTED)",
    )
    grpc_workers: int = Field(8, ge=1, le=256, description="gRPC handler threads")
    http_workers: int = Field(
        16, ge=1, le=256, description="HTTP: threads for the blocking sink calls (WAL fsync, broker acks)"
    )
    http_max_connections: int = Field(
        1000, ge=1, description="HTTP: open connections; at this many, requests get 503"
    )
    http_max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="HTTP: largest request line and headers; past it 431 (400 while it arrives)",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="HTTP: a request's line and headers must arrive within this, else the connection is closed",
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, description="HTTP: the longest wait for the next part of a request body (408)"
    )
    http_idle_timeout_seconds: int = Field(
        60, ge=1, description="HTTP: a keep-alive connection idle this long is closed"
    )
    flush_interval_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="direct mode: write aggregates to the store this often (a crash loses at most this)",
    )
    queue_max_spans: int = Field(
        200_000,
        ge=1,
        description="direct mode, durability memory: spans accepted but not yet aggregated; beyond it 429",
    )
    durability: Literal["wal", "memory"] = Field(
        "wal",
        description="direct mode: wal = answer a request once an fsync of the write-ahead log covers it "
        "(nothing acknowledged is lost on a crash); memory = aggregate in memory, flush every "
        "flush_interval_seconds (a crash loses what was not flushed)",
    )
    wal_dir: Path | None = Field(
        None,
        description="direct mode, durability wal: the write-ahead log's directory "
        "(default: beside the embedded store, STORE.wal; with a server store, .prodloop/wal)",
    )
    wal_max_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="direct mode, durability wal: the log's bound; full, requests get 429 until the store catches up",
    )
    gateway_max_inflight_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="gateway mode: request bytes awaiting broker acks; beyond it 429",
    )
    gateway_ack_timeout_seconds: float = Field(
        10.0, gt=0, description="gateway mode: wait this long for broker acks, then answer 503"
    )
    retry_after_seconds: int = Field(
        2, ge=1, le=3600, description="Retry-After / RetryInfo sent when overloaded"
    )
    bearer_token: SecretStr | None = Field(
        None, description="require 'Authorization: Bearer TOKEN' on every endpoint but the GitHub webhook"
    )
    github_webhook_secret: SecretStr | None = Field(
        None, description="secret of the GitHub webhook (X-Hub-Signature-256); unset: the webhook is off"
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain): serve gRPC and HTTP over TLS"
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")


class GitHubSinkSettings(_Section):
    repository: str = Field(
        "", description="OWNER/NAME of the repository for issues; empty: the GitHub sink is off"
    )
    api_url: str = Field(
        "https://api.github.com", description="REST API root (GitHub Enterprise: https://HOST/api/v3)"
    )
    token: SecretStr | None = Field(None, description="token with issues:write (or token_file)")
    token_file: Path | None = Field(None, description="file holding the token (e.g. a mounted secret)")
    labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["prodloop"],
        description="labels on every issue (plus the rule's and a fingerprint label)",
    )

    _split = field_validator("labels", mode="before")(_split_list)


class JiraSinkSettings(_Section):
    base_url: str = Field("", description="https://SITE.atlassian.net; empty: the Jira sink is off")
    email: str = Field("", description="the account of the API token")
    api_token: SecretStr | None = Field(None, description="Atlassian API token (or api_token_file)")
    api_token_file: Path | None = Field(None, description="file holding the API token")
    project: str = Field("", description="project key, e.g. OPS")
    issue_type: str = Field("Task", description="issue type name")
    labels: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["prodloop"])
    priorities: dict[str, str] = Field(
        default_factory=dict, description="rule severity -> Jira priority name (e.g. high: High)"
    )

    _split = field_validator("labels", mode="before")(_split_list)


class WebhookSinkSettings(_Section):
    url: str = Field("", description="POST ticket events here (JSON); empty: the webhook sink is off")
    secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of X-Prodloop-Signature-256 (or secret_file)"
    )
    secret_file: Path | None = Field(None, description="file holding the webhook secret")


class FileSinkSettings(_Section):
    path: Path | None = Field(None, description="append ticket events to this JSON-lines file")


class AlertSettings(_Section):
    """Alert rules and the sinks their tickets go to (collector/pipelines/alerts.py, docs/rules.md)."""

    rules: Path | None = Field(None, description="rules.yaml; unset: no alerting")
    interval_seconds: int = Field(
        60, ge=1, le=86400, description="prodloop run evaluates the rules this often"
    )
    settle_seconds: int = Field(
        120, ge=0, le=86400, description="ignore the newest data for this long (windows still being written)"
    )
    dashboard_url: str = Field(
        "",
        description="link in tickets; placeholders {service} {environment} {module} {rule} {fingerprint} "
        "{from_ms} {to_ms} {from_s} {to_s} {from} {to}",
    )
    lease_ttl_seconds: int = Field(0, ge=0, description="evaluation lease length (0: 3 x interval)")
    replica_id: str = Field("", description="this replica's name in the lease (default: host-pid-random)")
    max_rate_limit_wait_seconds: float = Field(
        900.0, gt=0, description="wait out sink rate limits up to this long; longer: retry next evaluation"
    )
    github: GitHubSinkSettings = GitHubSinkSettings()
    jira: JiraSinkSettings = JiraSinkSettings()
    webhook: WebhookSinkSettings = WebhookSinkSettings()
    file: FileSinkSettings = FileSinkSettings()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CPU_UNITS_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


class CostRateSettings(_Section):
    """One (service, environment): usd_per_cpu_hour x cpus_per_instance x instances, or usd_per_hour."""

    service: str = Field(min_length=1, description="the spans' service.name")
    environment: str = Field("", description="the spans' deployment.environment.name (exact)")
    usd_per_cpu_hour: Decimal | None = Field(None, ge=0, description="price of one CPU (vCPU) hour")
    cpus_per_instance: Decimal = Field(Decimal(1), ge=0, description="CPUs per instance (pod request)")
    instances: Decimal = Field(Decimal(1), ge=0, description="instances (an average may be fractional)")
    usd_per_hour: Decimal | None = Field(None, ge=0, description="a flat price per hour instead")
    since: AwareDatetime | None = Field(None, description="applies from this time on (RFC 3339)")
    until: AwareDatetime | None = Field(None, description="applies before this time")

    @model_validator(mode="after")
    def _one_price(self) -> CostRateSettings:
        self.rate()  # ValueError unless exactly one price is given
        return self

    def rate(self) -> CostRate:
        per_hour = rate_micro_usd_per_hour(
            usd_per_cpu_hour=self.usd_per_cpu_hour,
            cpus_per_instance=self.cpus_per_instance,
            instances=self.instances,
            usd_per_hour=self.usd_per_hour,
        )
        since, until = (
            None if t is None else (t - _EPOCH) // timedelta(microseconds=1) * 1_000
            for t in (self.since, self.until)
        )
        return CostRate(self.service, self.environment, per_hour, since, until)


class CostSettings(_Section):
    """Cost per module (attribution/cost.py, docs/cost.md): rates, and the span CPU-time attribute."""

    rates: list[CostRateSettings] = Field(
        default_factory=list,
        description="per (service, environment): usd_per_cpu_hour x cpus_per_instance x instances, or "
        "usd_per_hour; used on the days no imported billing entry covers",
    )
    cpu_time_attribute: str = Field(
        "",
        description="span attribute holding the span's CPU time (there is no standard one); "
        "empty: off, costs are split by self time",
    )
    cpu_time_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of cpu_time_attribute")

    @property
    def cpu_time_unit_ns(self) -> int:
        return _CPU_UNITS_NS[self.cpu_time_unit]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    store: StoreSettings = StoreSettings()
    attribution: AttributionSettings = AttributionSettings()
    aggregation: AggregationSettings = AggregationSettings()
    kafka: KafkaSettings = KafkaSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    stream: StreamSettings = StreamSettings()
    service: ServiceSettings = ServiceSettings()
    alerts: AlertSettings = AlertSettings()
    cost: CostSettings = CostSettings()
    history: HistorySettings = HistorySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) > environment > YAML (passed as init defaults by load()) > defaults
        return (init_settings, env_settings, file_secret_settings)

    def time_bounds(self) -> TimeBounds:
        """Which span times the decoders accept (aggregation.max_future_seconds, max_age_seconds)."""
        a = self.aggregation
        age_s = a.max_age_seconds
        if age_s is None and self.store.ttl_days is not None:
            age_s = self.store.ttl_days * 86_400
        return TimeBounds(
            max_future_ns=None if a.max_future_seconds is None else a.max_future_seconds * 1_000_000_000,
            max_age_ns=None if age_s is None else age_s * 1_000_000_000,
        )

    def cost_rates(self) -> tuple[CostRate, ...]:
        """The configured cost rates (cost.rates), in micro-USD per hour."""
        return tuple(r.rate() for r in self.cost.rates)

    def redacted_dump(self) -> dict[str, Any]:
        """The effective settings, with secrets shown as '**********' (URLs as they are: see
        :func:`collector.app.build.shown_settings`)."""
        data: dict[str, Any] = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        elif v is not None:
            out[k] = v
    return out


def _explicitly_set(model: BaseModel) -> dict[str, Any]:
    """The fields a source set explicitly (even to their default value), nested."""
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _explicitly_set(value)
        elif isinstance(value, SecretStr):
            out[name] = value.get_secret_value()
        else:
            out[name] = value
    return out


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The real keys of the section at ``loc`` (for 'did you mean')."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            continue  # list indexes keep the item's model
        model = _model_in(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_set(data: Any, loc: tuple[str | int, ...]) -> bool:
    for part in loc:
        in_map = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_map or in_list):
            return False
        data = data[part]
    return True


_SECRET_WORDS = ("password", "token", "secret", "dsn", "url")


def _describe(err: ErrorDetails) -> str:
    """What is wrong, without where; never echoes a value that may be a secret."""
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        real = _fields_at(loc[:-1])
        section = ".".join(str(p) for p in loc[:-1]) or "the top level"
        hint = difflib.get_close_matches(str(loc[-1]), real, n=1)
        tail = f"did you mean {hint[0]!r}?" if hint else f"expected one of {', '.join(real)}"
        return f"unknown key {str(loc[-1])!r} in {section}; {tail}"
    key = ".".join(str(p) for p in loc)
    value = err["input"]
    # only a plain value under a key that names no secret, and no string that may hold a URL's credentials
    plain = isinstance(value, int | float) or (
        isinstance(value, str) and len(value) <= 100 and "@" not in value and "://" not in value
    )
    shown = f", got {value!r}" if plain and not any(w in key for w in _SECRET_WORDS) else ""
    return f"{err['msg']}{shown}"


def _format_validation_error(
    exc: ValidationError, source: str, file_data: Any, elsewhere: dict[str, Any] | None = None
) -> str:
    """One line per error: ``file:line:column: error: key (env VAR): ...`` where the file set the
    key (and ``elsewhere``, the environment and flags, did not), else ``source: key (env VAR): ...``."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        key = ".".join(str(p) for p in loc)
        unknown = err["type"] == "extra_forbidden"
        env = "" if unknown else f" (env {ENV_PREFIX}{'__'.join(str(p).upper() for p in loc)})"
        from_file = not _is_set(elsewhere or {}, loc)
        pos = yaml_position(file_data, loc, key=unknown) if from_file else None
        if pos is not None:
            lines.append(f"{source}:{pos[0]}:{pos[1]}: error: {key}{env}: {_describe(err)}")
        else:
            lines.append(f"{source}: {key}{env}: {_describe(err)}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from a YAML file, the environment and flag overrides."""
    file_data: dict[str, Any] = {}
    source = "settings"
    if config_file is not None:
        source = str(config_file)
        loaded = load_yaml(Path(config_file), "config file")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}:1:1: error: the top level must be a mapping")
        file_data = loaded
        # relative paths in the file are relative to the file
        att = file_data.get("attribution")
        if isinstance(att, dict):
            for key in ("config", "codeowners", "modules"):
                if isinstance(att.get(key), str) and not Path(att[key]).is_absolute():
                    att[key] = str(Path(config_file).parent / att[key])
        alerts = file_data.get("alerts")
        rules_file = alerts.get("rules") if isinstance(alerts, dict) else None
        if isinstance(alerts, dict) and isinstance(rules_file, str) and not Path(rules_file).is_absolute():
            alerts["rules"] = str(Path(config_file).parent / rules_file)
    try:
        # environment beats the file: let pydantic-settings read env, then lay the file
        # underneath by passing only the file keys the environment does not set.
        env_set = _explicitly_set(Settings())
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "settings", None)) from None
    elsewhere = _deep_merge(env_set, overrides or {})
    try:
        return Settings(**_deep_merge(file_data, elsewhere))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, file_data, elsewhere)) from None
