"""prodloop's settings: one pydantic-settings model, built once in the CLI.

Sources, highest precedence first: command-line flags, environment variables
(``PRODLOOP_`` prefix, nested keys joined by ``__``, e.g. ``PRODLOOP_STORE__DSN``), the YAML
config file (``--config prodloop.yaml``), defaults.  Secrets are ``SecretStr`` and are
redacted in :meth:`Settings.redacted_dump`.

Errors name the key: ``store.dsn: ...`` or ``PRODLOOP_STORE__DSN: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from collector.errors import ConfigError

ENV_PREFIX = "PRODLOOP_"


def _split_list(v: Any) -> Any:
    """Lists from the environment: comma- or whitespace-separated (JSON lists also accepted)."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            import json

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


class KafkaSettings(_Section):
    bootstrap_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    traces_topic: str = "otlp_spans"
    traces_encoding: Literal["otlp_proto", "otlp_json", "auto"] = "otlp_proto"
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

    _split = field_validator("bootstrap_servers", mode="before")(_split_list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    store: StoreSettings = StoreSettings()
    attribution: AttributionSettings = AttributionSettings()
    aggregation: AggregationSettings = AggregationSettings()
    kafka: KafkaSettings = KafkaSettings()

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

    def redacted_dump(self) -> dict[str, Any]:
        """The effective settings, with secrets shown as '**********'."""
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


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        lines.append(f"{source}: {loc} (env {env}): {err['msg']}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from a YAML file, the environment and flag overrides."""
    file_data: dict[str, Any] = {}
    source = "settings"
    if config_file is not None:
        source = str(config_file)
        try:
            text = Path(config_file).read_text()
        except OSError as exc:
            raise ConfigError(f"{config_file}: cannot read config file: {exc.strerror}") from exc
        try:
            loaded = YAML(typ="safe").load(text)
        except YAMLError as exc:
            raise ConfigError(f"{config_file}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: the top level must be a mapping")
        file_data = loaded
        # relative paths in the file are relative to the file
        att = file_data.get("attribution")
        if isinstance(att, dict):
            for key in ("config", "codeowners", "modules"):
                if isinstance(att.get(key), str) and not Path(att[key]).is_absolute():
                    att[key] = str(Path(config_file).parent / att[key])
    try:
        # environment beats the file: let pydantic-settings read env, then lay the file
        # underneath by passing only the file keys the environment does not set.
        env_only = Settings()
        env_set = env_only.model_dump(exclude_defaults=True)
        merged = _deep_merge(_deep_merge(file_data, env_set), overrides or {})
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
