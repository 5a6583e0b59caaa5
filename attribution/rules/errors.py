"""The errors of a rules file: one problem (naming file, rule and field), and all of them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def unknown_key(key: str, known: Iterable[str]) -> str:
    """The message for an unknown key: the closest known one, else all of them."""
    real = sorted(known)
    close = difflib.get_close_matches(key, real, n=1)
    return (
        f"unknown field; did you mean {close[0]!r}?"
        if close
        else f"unknown field (expected {', '.join(real)})"
    )


class RuleError(ValueError):
    """One problem in a rules file.  Names the rule (index and name) and the field."""

    def __init__(self, source: str, rule: str, field_name: str, message: str) -> None:
        self.source = source
        self.rule = rule
        self.field = field_name
        self.message = message
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}{rule}: {field_name}: {message}" if field_name else f"{where}{rule}: {message}"
        )


class RulesFileError(ValueError):
    """Every problem found in a rules file (validation does not stop at the first)."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class Problems:
    """The problems found so far in one rules file (validation does not stop at the first)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[RuleError] = []

    def add(self, rule: str, field_name: str, message: str) -> None:
        self.errors.append(RuleError(self.source, rule, field_name, message))
