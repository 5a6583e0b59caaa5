"""What evaluation yields: statuses, finding keys, measurements (the evidence), observations, findings."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from attribution.model import DeployEvent
from attribution.rules.schema import Rule

BREACH: Final = "breach"
OK: Final = "ok"
NO_DATA: Final = "no_data"
Status = Literal["breach", "ok", "no_data"]


@dataclass(frozen=True, order=True)
class FindingKey:
    rule: str
    service: str
    environment: str
    module: str

    def fingerprint(self) -> str:
        """A stable id of (rule, service, environment, module): 16 hex digits of SHA-256."""
        text = "\x1f".join((self.rule, self.service, self.environment, self.module))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Measurement:
    """One number of the evidence; ``before``/``after`` for regressions, ``value`` vs ``threshold``."""

    metric: str
    value: float = math.nan
    threshold: float = math.nan
    before: float = math.nan
    after: float = math.nan
    relative_change: float = math.nan
    p_value: float = math.nan
    test: str = ""
    breached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | str | None:
            if math.isnan(x):
                return None
            if math.isinf(x):
                return "inf"
            return x

        return {
            "metric": self.metric,
            "value": num(self.value),
            "threshold": num(self.threshold),
            "before": num(self.before),
            "after": num(self.after),
            "relative_change": num(self.relative_change),
            "p_value": num(self.p_value),
            "test": self.test or None,
            "breached": self.breached,
            "note": self.note or None,
        }


@dataclass(frozen=True)
class Observation:
    """The rule's verdict for one key at one evaluation instant."""

    status: Status
    summary: str
    measurements: tuple[Measurement, ...] = ()
    samples: int = 0
    owners: tuple[str, ...] = ()
    range_from_unix_nano: int = 0
    range_to_unix_nano: int = 0
    deploy: DeployEvent | None = None
    previous_deploy: DeployEvent | None = None
    incidents: tuple[str, ...] = ()
    repository: str = ""
    # a deploy comparison's [start, end) before and after the deploy (unix ns); None: no comparison
    before_window: tuple[int, int] | None = None
    after_window: tuple[int, int] | None = None


@dataclass(frozen=True)
class Finding:
    """A rule's verdict for one key at ``evaluated_at``, with the history that matters.

    ``firing``: breached at every instant over ``for``.  ``breach_since``: the first instant
    of the current run of breaches (None when not breaching).  ``recovered``: clear at every
    instant over the ticket's ``recover_after``.
    """

    rule: Rule
    key: FindingKey
    evaluated_at_unix_nano: int
    observation: Observation
    firing: bool
    breach_since_unix_nano: int | None
    recovered: bool
    code_paths: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return self.observation.status

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint()

    def to_json(self) -> dict[str, Any]:
        o = self.observation
        return {
            "rule": self.rule.name,
            "kind": self.rule.kind,
            "severity": self.rule.severity,
            "fingerprint": self.fingerprint,
            "service": self.key.service,
            "environment": self.key.environment,
            "module": self.key.module,
            "status": o.status,
            "firing": self.firing,
            "recovered": self.recovered,
            "breach_since_unix_nano": self.breach_since_unix_nano,
            "evaluated_at_unix_nano": self.evaluated_at_unix_nano,
            "summary": o.summary,
            "samples": o.samples,
            "owners": list(o.owners),
            "code_paths": list(self.code_paths),
            "measurements": [m.to_json() for m in o.measurements],
            "deploy": _deploy_json(o.deploy),
            "previous_deploy": _deploy_json(o.previous_deploy),
            "incidents": list(o.incidents),
            "range_from_unix_nano": o.range_from_unix_nano,
            "range_to_unix_nano": o.range_to_unix_nano,
            "condition": self.rule.describe(),
        }


def _deploy_json(d: DeployEvent | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "deploy_id": d.deploy_id,
        "service": d.service,
        "environment": d.environment,
        "commit_sha": d.commit_sha,
        "previous_sha": d.previous_sha,
        "deployed_at_unix_nano": d.deployed_at_unix_nano,
        "repository": d.repository,
        "url": d.url,
    }
