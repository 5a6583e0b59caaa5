"""Reading ``rules.yaml``: the YAML file, validated into a :class:`attribution.rules.schema.RuleSet`."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from attribution.rules.errors import RulesFileError
from attribution.rules.parse import parse_rules
from attribution.rules.schema import RuleSet
from collector.errors import ConfigError


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
