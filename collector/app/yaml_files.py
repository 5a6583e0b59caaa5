"""Config files as every loader reads them: text with errors that name the file, and YAML
round-trip loaded so that errors can name ``file:line:column``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from attribution.codeowners import MAX_CODEOWNERS_BYTES
from collector.errors import ConfigError


def read_config_text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_CODEOWNERS_BYTES and what == "CODEOWNERS":
            # GitHub ignores such files; CodeOwners.parse reports it as a problem
            return path.read_text(errors="replace")
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: error: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: error: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: error: {what} is not UTF-8 text: {exc}") from None


def load_yaml(path: Path, what: str) -> Any:
    """A YAML config file, round-trip loaded (mappings and lists keep their line and column).

    Errors read ``file:line:column: error: ...``."""
    text = read_config_text(path, what)
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: error: {what} is not valid YAML: {problem}") from None


def yaml_position(data: Any, loc: Sequence[str | int], *, key: bool = False) -> tuple[int, int] | None:
    """The 1-based (line, column) of ``loc`` in round-trip loaded YAML: of its value, or with
    ``key`` of its key; the deepest enclosing node found when ``loc`` goes further than the file."""
    found: tuple[int, int] | None = None
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        try:
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part) if key and last else node.lc.value(part)
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
            else:
                break
        except (KeyError, TypeError):
            break
        found = (line + 1, col + 1)
        node = node[part]
    return found
