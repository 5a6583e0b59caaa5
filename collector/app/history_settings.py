"""The ``history`` section of the settings: git repositories to scan, and the thresholds of
the analyses over history (change coupling, DORA, incident links, hotspots, dead code)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from collector.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryRepository(_Section):
    """One repository to scan: a local checkout (``path``) or a clone URL (``url``)."""

    name: str = Field(description="the repository's name in prodloop (as in the attribution file)")
    path: Path | None = Field(None, description="a local git checkout")
    url: str = Field("", description="a clone URL (https); cloned and fetched under history.clone_dir")
    token: SecretStr | None = Field(None, description="token for the clone URL (never printed)")
    token_file: Path | None = Field(None, description="a file holding the token (a mounted secret)")
    branch: str = Field("", description="the branch to follow; empty: the remote's default (HEAD)")

    @model_validator(mode="after")
    def _one_source(self) -> HistoryRepository:
        if (self.path is None) == (not self.url):
            raise ValueError(f"history repository {self.name!r}: give exactly one of path and url")
        if self.url and "@" in self.url.partition("://")[2].split("/", 1)[0]:
            raise ValueError(
                f"history repository {self.name!r}: the url carries credentials; "
                "give the token as token or token_file (never printed) instead"
            )
        if self.token is not None and self.token_file is not None:
            raise ValueError(f"history repository {self.name!r}: give token or token_file, not both")
        return self

    def token_value(self) -> str:
        """The token (from ``token`` or ``token_file``), "" without one."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"history repository {self.name!r}: token_file {self.token_file}: {exc.strerror}"
                ) from None
        return ""


class CouplingSettings(_Section):
    """CodeScene's change coupling thresholds (Code Maat's defaults)."""

    min_revisions: int = Field(5, ge=1, description="a module needs this many changesets to be coupled")
    min_shared_commits: int = Field(5, ge=1, description="a pair needs this many shared changesets")
    min_coupling: float = Field(0.3, ge=0, le=1, description="shared / mean of the two change counts")
    max_changeset_files: int = Field(30, ge=1, description="commits touching more files are ignored")


class HotspotWeights(_Section):
    """Production pain = the weighted sum of these (docs/history.md)."""

    incidents: float = Field(3.0, ge=0, description="per linked incident")
    findings: float = Field(1.0, ge=0, description="per firing threshold or regression finding")
    self_time_regression: float = Field(2.0, ge=0, description="per self-time regression finding")
    cost_excess: float = Field(10.0, ge=0, description="times (cost share - traffic share), if positive")


class HistorySettings(_Section):
    repositories: list[HistoryRepository] = Field(default_factory=list)
    scan_interval_seconds: int = Field(
        3600, ge=0, description="prodloop run re-scans the repositories this often (0: never)"
    )
    clone_dir: Path = Field(Path(".prodloop/repos"), description="where clone URLs are cloned")
    production_environment: str = Field("production", description="the environment DORA and lead time use")
    failure_window_seconds: int = Field(
        86400,
        ge=1,
        description="a deploy failed if an incident, rollback, revert or ticket follows within this",
    )
    incident_deploy_window_seconds: int = Field(
        86400, ge=1, description="an incident is linked to its service's last deploy within this before it"
    )
    dead_code_days: int = Field(
        30, ge=1, description="files with no spans for this long are dead-code candidates"
    )
    coupling: CouplingSettings = CouplingSettings()
    hotspot_weights: HotspotWeights = HotspotWeights()
