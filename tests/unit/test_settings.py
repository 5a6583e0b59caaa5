"""Settings (collector/app/settings.py): YAML file < environment (PRODLOOP_, "__" nesting) < flags.

Every test starts from an environment without PRODLOOP_* variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app.settings import Settings, load_settings
from collector.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in list(os.environ):
        if key.upper().startswith("PRODLOOP_"):
            monkeypatch.delenv(key)
    yield monkeypatch


def write(tmp_path: Path, text: str, name: str = "prodloop.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


CONFIG = """\
store:
  dsn: chdb:///var/lib/prodloop
  database: from_file
aggregation:
  window_seconds: 30
  max_groups_per_window: 500
kafka:
  bootstrap_servers: [k1:9092, k2:9092]
  traces_encoding: otlp_json
attribution:
  modules: conf/modules.yaml
  codeowners: /abs/CODEOWNERS
"""


def test_defaults_without_file_or_environment() -> None:
    s = load_settings()
    assert s.aggregation.window_seconds == 60
    assert s.store.database == "prodloop"
    assert s.kafka.bootstrap_servers == []
    assert s.store.password is None


def test_yaml_file_values(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, CONFIG))
    assert s.store.dsn == "chdb:///var/lib/prodloop"
    assert s.store.database == "from_file"
    assert (s.aggregation.window_seconds, s.aggregation.max_groups_per_window) == (30, 500)
    assert s.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert s.kafka.traces_encoding == "otlp_json"
    # relative paths in the file are relative to the file; absolute ones are kept
    assert s.attribution.modules == tmp_path / "conf" / "modules.yaml"
    assert s.attribution.codeowners == Path("/abs/CODEOWNERS")


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == load_settings()


def test_environment_beats_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRODLOOP_AGGREGATION__WINDOW_SECONDS", "45")
    clean_env.setenv("PRODLOOP_STORE__DATABASE", "from_env")
    s = load_settings(write(tmp_path, CONFIG))
    assert s.aggregation.window_seconds == 45
    assert s.store.database == "from_env"
    # keys the environment does not set still come from the file
    assert s.aggregation.max_groups_per_window == 500
    assert s.store.dsn == "chdb:///var/lib/prodloop"


def test_environment_without_a_file(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRODLOOP_RECEIVER__GRPC_PORT", "14317")
    clean_env.setenv("PRODLOOP_SERVICE__LOG_FORMAT", "text")
    s = load_settings()
    assert (s.receiver.grpc_port, s.service.log_format) == (14317, "text")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("k1:9092,k2:9092", ["k1:9092", "k2:9092"]),
        ("k1:9092 k2:9092", ["k1:9092", "k2:9092"]),
        (" k1:9092 , k2:9092 ,", ["k1:9092", "k2:9092"]),
        ('["k1:9092", "k2:9092"]', ["k1:9092", "k2:9092"]),
        ("k1:9092", ["k1:9092"]),
    ],
)
def test_lists_from_the_environment(clean_env: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    clean_env.setenv("PRODLOOP_KAFKA__BOOTSTRAP_SERVERS", raw)
    assert load_settings().kafka.bootstrap_servers == expected


def test_flags_beat_the_environment_and_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRODLOOP_AGGREGATION__WINDOW_SECONDS", "45")
    clean_env.setenv("PRODLOOP_STORE__DATABASE", "from_env")
    s = load_settings(
        write(tmp_path, CONFIG),
        {
            "aggregation": {"window_seconds": 90},
            "store": {"database": None},
            "attribution": {"source_roots": ["/srv/a"]},
        },
    )
    assert s.aggregation.window_seconds == 90  # flag > env > file
    assert s.store.database == "from_env"  # a flag left unset (None) does not override
    assert s.attribution.source_roots == ["/srv/a"]
    assert s.aggregation.max_groups_per_window == 500  # file


def test_environment_beats_the_file_even_when_it_sets_the_default(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("PRODLOOP_AGGREGATION__WINDOW_SECONDS", "60")  # 60 is also the default
    s = load_settings(write(tmp_path, CONFIG))  # the file says 30
    assert s.aggregation.window_seconds == 60


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("yaml_text", "fragments"),
    [
        (
            "aggregation:\n  window_seconds: 0\n",
            ["aggregation.window_seconds", "PRODLOOP_AGGREGATION__WINDOW_SECONDS"],
        ),
        ("store:\n  dsnn: x\n", ["store.dsnn"]),
        ("stor:\n  dsn: x\n", ["stor"]),
        ("kafka:\n  traces_encoding: avro\n", ["kafka.traces_encoding", "PRODLOOP_KAFKA__TRACES_ENCODING"]),
        ("receiver:\n  grpc_port: 70000\n", ["receiver.grpc_port"]),
        ("store:\n  ttl_days: soon\n", ["store.ttl_days"]),
    ],
)
def test_file_errors_name_the_file_and_the_key(tmp_path: Path, yaml_text: str, fragments: list[str]) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("PRODLOOP_STORE__TTL_DAYS", "0", "store.ttl_days"),
        ("PRODLOOP_AGGREGATION__WINDOW_SECONDS", "minute", "aggregation.window_seconds"),
        ("PRODLOOP_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("PRODLOOP_SERVICE__LOG_LEVEL", "LOUD", "service.log_level"),
    ],
)
def test_environment_errors_name_the_key_and_the_variable(
    clean_env: pytest.MonkeyPatch, env: str, value: str, key: str
) -> None:
    clean_env.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert key in str(info.value)
    assert env in str(info.value)


def test_flag_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"aggregation\.max_groups_per_window"):
        load_settings(None, {"aggregation": {"max_groups_per_window": 0}})


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.yaml")
    bad = write(tmp_path, "store: [unclosed\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:1: error: config file is not valid YAML"):
        load_settings(bad)
    top_list = write(tmp_path, "- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(top_list)


# ------------------------------------------------------------------------------ secrets


def test_secrets_are_redacted_in_the_dump(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRODLOOP_KAFKA__SASL_PASSWORD", "env-secret-kafka")
    path = write(tmp_path, "store:\n  password: file-secret-store\n")
    s = load_settings(path, {"receiver": {"bearer_token": "flag-secret-token"}})
    # the values are there for the adapters ...
    assert s.store.password is not None and s.store.password.get_secret_value() == "file-secret-store"
    assert (
        s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == "env-secret-kafka"
    )
    assert (
        s.receiver.bearer_token is not None
        and s.receiver.bearer_token.get_secret_value() == "flag-secret-token"
    )
    # ... and nowhere in the dump, nor in repr/str
    dump = s.redacted_dump()
    text = json.dumps(dump)
    for secret in ("file-secret-store", "env-secret-kafka", "flag-secret-token"):
        assert secret not in text
        assert secret not in repr(s) and secret not in str(s)
    assert dump["store"]["password"] == "**********"
    assert dump["kafka"]["sasl_password"] == "**********"
    assert dump["receiver"]["bearer_token"] == "**********"
    # unset secrets stay visibly unset, other values are shown
    assert dump["receiver"]["github_webhook_secret"] is None
    assert dump["store"]["database"] == "prodloop"


def test_deeply_nested_secret_from_the_environment(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRODLOOP_ALERTS__GITHUB__TOKEN", "ghp-env-secret")
    clean_env.setenv("PRODLOOP_ALERTS__GITHUB__LABELS", "prodloop,oncall")
    path = write(tmp_path, "alerts:\n  rules: rules/prod.yaml\n  webhook:\n    secret: file-hook-secret\n")
    s = load_settings(path)
    assert s.alerts.github.token is not None and s.alerts.github.token.get_secret_value() == "ghp-env-secret"
    assert s.alerts.github.labels == ["prodloop", "oncall"]
    assert s.alerts.rules == tmp_path / "rules" / "prod.yaml"  # relative to the file
    text = json.dumps(s.redacted_dump())
    assert "ghp-env-secret" not in text and "file-hook-secret" not in text
    assert s.redacted_dump()["alerts"]["github"]["token"] == "**********"


def test_redacted_dump_is_json_and_round_trips_non_secret_values(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, CONFIG))
    dump = s.redacted_dump()
    assert json.loads(json.dumps(dump)) == dump
    again = Settings(**{k: v for k, v in dump.items()})
    assert again.aggregation == s.aggregation
    assert again.kafka == s.kafka
