"""Exceptions as the decoders keep them: the ``exception.*`` keys, the bounds, the fallbacks.

Shared by the span decoders (:mod:`collector.codec.otlp`, :mod:`collector.codec.otlp_json`)
and the log decoder (:mod:`collector.codec.otlp_logs`), so all three keep the same thing:

* an ``exception`` span event (or log record) becomes ``ExceptionInfo(type, message, stacktrace)``;
* an event without a stacktrace takes the span's ``code.stacktrace``; an ERROR span with
  ``code.stacktrace`` and no exception event gets one ``ExceptionInfo("", status message, it)``;
* at most :data:`MAX_EXCEPTIONS_PER_SPAN` per span; longer texts are cut (a stacktrace keeps
  its head and its tail: the innermost frame is first in some languages, last in others).
"""

from __future__ import annotations

from typing import Final

from attribution.model import STATUS_ERROR, AttrValue, ExceptionInfo

EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_KEYS: Final = frozenset((EXCEPTION_TYPE, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE))

MAX_EXCEPTIONS_PER_SPAN: Final = 16
MAX_TYPE_CHARS: Final = 1024
MAX_MESSAGE_CHARS: Final = 4096
MAX_STACKTRACE_CHARS: Final = 64 * 1024

NO_EXCEPTIONS: tuple[ExceptionInfo, ...] = ()
_CUT = "\n... [{} characters cut] ...\n"


def _text(value: AttrValue | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


def bounded_stacktrace(text: str, limit: int = MAX_STACKTRACE_CHARS) -> str:
    """A stacktrace of at most ``limit`` characters: its head and its tail around a marker line."""
    if len(text) <= limit:
        return text
    # the marker is sized for the longest count it can hold: the result stays within limit
    keep = limit - len(_CUT.format(len(text)))
    head = keep // 2
    tail = keep - head
    return text[:head] + _CUT.format(len(text) - keep) + text[len(text) - tail :]


def exception_info(
    type_: AttrValue | None, message: AttrValue | None, stacktrace: AttrValue | None
) -> ExceptionInfo:
    """One bounded :class:`ExceptionInfo` from ``exception.*`` attribute values (None: absent)."""
    return ExceptionInfo(
        bounded(_text(type_), MAX_TYPE_CHARS),
        bounded(_text(message), MAX_MESSAGE_CHARS),
        bounded_stacktrace(_text(stacktrace)),
    )


def span_exceptions(
    found: list[ExceptionInfo], code_stacktrace: str, status_code: int, status_message: str
) -> tuple[ExceptionInfo, ...]:
    """A span's exceptions from its exception events (``found``, already bounded in number)
    and its ``code.stacktrace`` attribute ("" when absent)."""
    if code_stacktrace:
        st = bounded_stacktrace(code_stacktrace)
        if found:
            return tuple(e if e.stacktrace else e._replace(stacktrace=st) for e in found)
        if status_code == STATUS_ERROR:
            return (ExceptionInfo("", bounded(status_message, MAX_MESSAGE_CHARS), st),)
    return tuple(found) if found else NO_EXCEPTIONS
