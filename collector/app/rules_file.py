"""Reading ``rules.yaml``: the YAML file, validated into a :class:`attribution.rules.schema.RuleSet`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from attribution.rules.errors import RuleError, RulesFileError
from attribution.rules.parse import parse_rules
from attribution.rules.schema import RuleSet
from collector.app.yaml_files import load_yaml, yaml_position
from collector.errors import ConfigError

_RULE_INDEX = re.compile(r"rules\[(\d+)\]")
_FIELD = re.compile(r"[A-Za-z_]+")


def _where(path: Path, data: Any, err: RuleError) -> str:
    """``file:line:column`` of the rule's field (or of the rule, or the file's start)."""
    index = _RULE_INDEX.match(err.rule)
    loc: list[str | int] = ["rules", int(index.group(1))] if index else []
    if err.rule == "defaults":
        loc = ["defaults"]
    field = _FIELD.match(err.field)
    if field:
        loc.append(field.group(0))
    unknown = "unknown" in err.message or "not a field" in err.message
    line, col = yaml_position(data, loc, key=unknown) or (1, 1)
    return f"{path}:{line}:{col}"


def load_rules(path: Path) -> RuleSet:
    """Read and validate ``rules.yaml``; every problem is reported as ``file:line:column: error:``,
    naming rule and field."""
    data = load_yaml(Path(path), "rules file")
    try:
        return parse_rules(data, str(path))
    except RulesFileError as exc:
        lines = []
        for e in exc.errors:
            what = f"{e.rule}: {e.field}: {e.message}" if e.field else f"{e.rule}: {e.message}"
            lines.append(f"{_where(path, data, e)}: error: {what}")
        raise ConfigError("\n".join(lines)) from None
