"""The core's data model.

``Span`` is the hot path: one instance per span, so it is a ``__slots__`` class, not a
dataclass.  It carries only what attribution and aggregation read; the decoder projects
the span attributes down to :data:`WANTED_ATTRIBUTES` (plus any configured sample-rate
attribute) so that nothing else is materialised.

``Resource`` is shared by every span of one OTLP ``ResourceSpans``.  Config and events
(``DeployEvent``, ``Attribution``, ``Unattributed``) are frozen dataclasses: there are few
of them, and the attributor hands out cached instances, so no span allocates one.

All timestamps inside the core are ``*_unix_nano: int``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple

AttrValue = str | bool | int | float

# Span attributes the core reads.  Semantic-convention names first, deprecated ones after.
CODE_FILE_PATH: Final = "code.file.path"
CODE_FILEPATH_OLD: Final = "code.filepath"
CODE_FUNCTION_NAME: Final = "code.function.name"
CODE_FUNCTION_OLD: Final = "code.function"
CODE_NAMESPACE: Final = "code.namespace"
CODE_LINE_NUMBER: Final = "code.line.number"
CODE_LINENO_OLD: Final = "code.lineno"
HTTP_ROUTE: Final = "http.route"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
CODE_STACKTRACE: Final = "code.stacktrace"

WANTED_ATTRIBUTES: Final[tuple[str, ...]] = (
    CODE_FILE_PATH,
    CODE_FILEPATH_OLD,
    CODE_FUNCTION_NAME,
    CODE_FUNCTION_OLD,
    CODE_NAMESPACE,
    CODE_LINE_NUMBER,
    CODE_LINENO_OLD,
    HTTP_ROUTE,
    RPC_SERVICE,
    RPC_METHOD,
)

# Resource attributes.
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
DEPLOYMENT_ENVIRONMENT_OLD: Final = "deployment.environment"
VCS_REF_HEAD_REVISION: Final = "vcs.ref.head.revision"
VCS_REPOSITORY_URL_FULL: Final = "vcs.repository.url.full"
TELEMETRY_SDK_LANGUAGE: Final = "telemetry.sdk.language"

STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2

_EMPTY: Mapping[str, AttrValue] = MappingProxyType({})

UNATTRIBUTED_MODULE: Final = "(unattributed)"
OVERFLOW_MODULE: Final = "(overflow)"


@dataclass(frozen=True, slots=True)
class Resource:
    """What every span of one ``ResourceSpans`` shares."""

    service: str
    environment: str = ""
    service_version: str = ""
    vcs_revision: str = ""
    repository: str = ""
    attributes: Mapping[str, AttrValue] = field(default_factory=dict, hash=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False, hash=False, default=0)

    def __post_init__(self) -> None:
        # Resources are dict keys in the hot path: hash once.
        object.__setattr__(
            self,
            "_hash",
            hash((self.service, self.environment, self.service_version, self.vcs_revision, self.repository)),
        )

    def __hash__(self) -> int:
        return self._hash

    @staticmethod
    def from_attributes(attributes: Mapping[str, AttrValue]) -> Resource:
        def s(key: str) -> str:
            v = attributes.get(key)
            return v if isinstance(v, str) else ("" if v is None else str(v))

        return Resource(
            service=s(SERVICE_NAME) or "unknown_service",
            environment=s(DEPLOYMENT_ENVIRONMENT_NAME) or s(DEPLOYMENT_ENVIRONMENT_OLD),
            service_version=s(SERVICE_VERSION),
            vcs_revision=s(VCS_REF_HEAD_REVISION),
            repository=s(VCS_REPOSITORY_URL_FULL),
            attributes=dict(attributes),
        )


class ExceptionInfo(NamedTuple):
    """One exception recorded on a span: an ``exception`` span event (``exception.type``,
    ``exception.message``, ``exception.stacktrace``), the span attribute ``code.stacktrace``,
    or an OTLP log record carrying ``exception.*``."""

    type: str
    message: str = ""
    stacktrace: str = ""


_NO_EXCEPTIONS: tuple[ExceptionInfo, ...] = ()


class Span(NamedTuple):
    """One decoded span.  ``attributes`` holds only the projected keys.

    A ``NamedTuple``: the decoder builds one per span, and a tuple is the cheapest object
    CPython can build with named, C-level field access.
    """

    resource: Resource
    trace_id: bytes
    span_id: bytes
    name: str
    start_unix_nano: int
    end_unix_nano: int
    status_code: int = STATUS_UNSET
    attributes: Mapping[str, AttrValue] = _EMPTY
    kind: int = 0
    parent_span_id: bytes = b""
    sample_probability: float = 1.0
    exceptions: tuple[ExceptionInfo, ...] = _NO_EXCEPTIONS

    @property
    def duration_nano(self) -> int:
        return self.end_unix_nano - self.start_unix_nano

    def __repr__(self) -> str:
        return (
            f"Span(service={self.resource.service!r}, name={self.name!r}, "
            f"trace_id={self.trace_id.hex()}, span_id={self.span_id.hex()}, "
            f"start={self.start_unix_nano}, end={self.end_unix_nano}, status={self.status_code})"
        )


class LogException(NamedTuple):
    """An exception recorded as an OTLP log record carrying ``exception.*`` attributes (OTEP
    4430 moves span events to log records), with its trace and span when the record names them."""

    resource: Resource
    time_unix_nano: int
    exception: ExceptionInfo
    trace_id: bytes = b""
    span_id: bytes = b""


@dataclass(frozen=True, slots=True)
class CodeLocation:
    file_path: str = ""
    function: str = ""
    namespace: str = ""
    line: int = 0

    @staticmethod
    def of(attributes: Mapping[str, AttrValue]) -> CodeLocation:
        def s(*keys: str) -> str:
            for k in keys:
                v = attributes.get(k)
                if v is not None and v != "":
                    return str(v)
            return ""

        line_raw = attributes.get(CODE_LINE_NUMBER, attributes.get(CODE_LINENO_OLD, 0))
        try:
            line = int(line_raw)
        except (TypeError, ValueError):
            line = 0
        return CodeLocation(
            file_path=s(CODE_FILE_PATH, CODE_FILEPATH_OLD),
            function=s(CODE_FUNCTION_NAME, CODE_FUNCTION_OLD),
            namespace=s(CODE_NAMESPACE),
            line=line,
        )


@dataclass(frozen=True, slots=True)
class Attribution:
    """Where a span comes from.  Instances are shared between spans of the same location."""

    repository: str
    path: str  # repo-relative, normalised; "" when the module came from a non-path rule
    module: str
    module_rule: str  # a human description of the rule that decided the module
    owners: tuple[str, ...]  # sorted
    codeowners_line: int = 0  # 0: no CODEOWNERS line matched


@dataclass(frozen=True, slots=True)
class Unattributed:
    """A span that could not be attributed, and why.  Stored and counted per service."""

    reason: str  # "external" | "no_location" | "no_rule" | ...
    detail: str = ""
    module: str = UNATTRIBUTED_MODULE
    owners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """A deployment, as in ``schemas/events/deploy.schema.json``."""

    deploy_id: str
    service: str
    environment: str
    commit_sha: str
    deployed_at_unix_nano: int
    repository: str = ""
    previous_sha: str = ""
    status: str = "succeeded"
    url: str = ""
    status_at_unix_nano: int = 0  # when this status was set at its source; 0: not given
    status_id: int = 0  # the source's id of this status (GitHub: deployment_status.id); 0: not given

    @property
    def live(self) -> bool:
        return self.status != "failed"

    @property
    def status_order(self) -> tuple[int, int]:
        """Orders the events of one ``deploy_id``: one with a lower order never replaces one
        with a higher order; between equal orders the last one received wins."""
        return (self.status_at_unix_nano, self.status_id)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """An incident, as in ``schemas/events/incident.schema.json``."""

    incident_id: str
    services: tuple[str, ...]
    started_at_unix_nano: int
    severity: str
    resolved_at_unix_nano: int = 0
    deploy_id: str = ""
    commit_sha: str = ""
    modules: tuple[str, ...] = ()
    postmortem_url: str = ""
    title: str = ""


# The last instant ClickHouse's ``DateTime`` (the aggregates' ``window_start``) holds: 2106-02-07T06:28:15Z.
STORE_MAX_UNIX_NANO: Final = 2**32 * 1_000_000_000 - 1


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Which span times are plausible around a reference time: the Kafka record's timestamp,
    or the request's arrival.  Spans outside are rejected as ``time_out_of_range``.

    ``None`` turns a side off.  Without a reference (files) only the store's own range holds:
    1970-01-01 up to :data:`STORE_MAX_UNIX_NANO`.
    """

    max_future_ns: int | None = 86_400 * 1_000_000_000
    max_age_ns: int | None = None

    def window(self, reference_unix_nano: int | None) -> tuple[int, int]:
        """``(lo, hi)``: a span is accepted when ``lo <= start <= end <= hi``."""
        lo, hi = 0, STORE_MAX_UNIX_NANO
        if reference_unix_nano is not None:
            if self.max_age_ns is not None:
                lo = max(lo, reference_unix_nano - self.max_age_ns)
            if self.max_future_ns is not None:
                hi = min(hi, reference_unix_nano + self.max_future_ns)
        return lo, hi


DEFAULT_TIME_BOUNDS: Final = TimeBounds()
