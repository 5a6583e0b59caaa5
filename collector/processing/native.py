"""The native hot path: the ``prodloop_native`` extension (``native/``, Rust with PyO3), and
which path runs.

The pure-Python code in :mod:`attribution` is the reference and the fallback; each native piece
is a twin of one Python seam, and ``tests/unit/test_native.py`` proves both give identical
results.  Today's pieces: the ``otlp_proto`` decoder (the twin of
:meth:`collector.codec.otlp.OtlpDecoder.decode_proto`), the dedup window (the twin of
:class:`collector.processing.dedup.DedupWindow`), the group lookup (the twin of
:meth:`attribution.attribute.Attributor.group_ids`'s loop), the Aggregator's per-span loop and fold
(the twin of :class:`attribution.aggregate.Aggregator`'s), and the trace buffer's core: its
entries, completion rules, rebuild state, self times, own errors and orphans (the twin of
:class:`attribution.tracebuffer.TraceCore`).

``aggregation.hot_path``: ``auto`` runs the extension when it is installed (``make setup`` builds
it where ``cargo`` exists), ``native`` refuses to start without it, ``python`` runs the Python path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Literal

from attribution.aggregate import MAX_WEIGHT_MILLI, NativeWindows
from attribution.attribute import NativeGroupIds
from attribution.model import STATUS_ERROR
from attribution.sketch import INV_LOG_GAMMA
from attribution.tracebuffer import Core, CoreFactory, TraceCore
from collector.codec.otlp import NativeProtoDecoder
from collector.errors import ConfigError
from collector.processing.dedup import DedupWindow, SpanWindow

HotPath = Literal["auto", "native", "python"]

# every piece the factories below take: an extension built from an older native/ lacks some,
# and is not used at all
NEEDED = ("DedupWindow", "ProtoDecoder", "TraceCore", "Windows", "group_ids")


def usable(ext: ModuleType) -> bool:
    """Whether ``ext`` has every native piece this checkout runs."""
    return all(hasattr(ext, name) for name in NEEDED)


def _load() -> ModuleType | None:
    try:
        ext = importlib.import_module("prodloop_native")
    except ImportError:
        return None
    return ext if usable(ext) else None


EXTENSION = _load()
AVAILABLE = EXTENSION is not None


def _extension() -> ModuleType:
    """The extension, for a factory asked for the native path (after :func:`resolve`)."""
    assert EXTENSION is not None, "resolve() said the extension runs"
    return EXTENSION


def resolve(hot_path: HotPath) -> bool:
    """Whether the native path runs; ConfigError when it must and the extension is missing."""
    if hot_path == "native" and not AVAILABLE:
        raise ConfigError(
            "aggregation.hot_path is native, but the prodloop_native extension is not installed: "
            "run `make setup` where cargo is on PATH (or `pip install ./native`), or set it to auto"
        )
    return AVAILABLE and hot_path != "python"


def describe(native: bool) -> str:
    """The start-up line that says which path runs, and why."""
    if native:
        return (
            "hot path: native (prodloop_native: the otlp_proto decoder, the dedup window, the group "
            "lookup, the aggregation loop, the trace buffer)"
        )
    if AVAILABLE:
        return "hot path: pure Python (aggregation.hot_path is python)"
    return (
        "hot path: pure Python (the prodloop_native extension is not installed, or older than this "
        "checkout; make setup builds it where cargo exists)"
    )


def trace_core(native: bool) -> CoreFactory:
    """What makes a trace buffer's core: the extension's, or the Python reference."""
    if not native:
        return TraceCore
    cls = _extension().TraceCore

    def make(window_ns: int, wait_ms: int, max_spans: int, exact: bool) -> Core:
        core: Core = cls(
            window_ns,
            wait_ms,
            max_spans,
            exact,
            inv_log_gamma=INV_LOG_GAMMA,
            status_error=STATUS_ERROR,
            max_weight_milli=MAX_WEIGHT_MILLI,
        )
        return core

    return make


def proto_decoder(native: bool) -> Callable[..., NativeProtoDecoder] | None:
    """The native ``otlp_proto`` decoder's class for :class:`~collector.codec.otlp.OtlpDecoder`,
    or None for the Python path."""
    if native:
        cls: Callable[..., NativeProtoDecoder] = _extension().ProtoDecoder
        return cls
    return None


def windows(native: bool) -> Callable[[int, int, str], NativeWindows] | None:
    """The native twin of the Aggregator's windows, as :class:`~attribution.aggregate.Aggregator`
    takes it (``native_windows``), or None for the Python path."""
    if not native:
        return None
    ext = _extension()

    def make(window_ns: int, max_groups_per_window: int, cpu_time_attribute: str) -> NativeWindows:
        acc: NativeWindows = ext.Windows(
            window_ns,
            max_groups_per_window,
            status_error=STATUS_ERROR,
            max_weight_milli=MAX_WEIGHT_MILLI,
            inv_log_gamma=INV_LOG_GAMMA,
            cpu_time_attribute=cpu_time_attribute,
        )
        return acc

    return make


def group_ids(native: bool) -> NativeGroupIds | None:
    """The native group lookup for :class:`~attribution.attribute.Attributor`
    (``native_group_ids``), or None for the Python loop."""
    if not native:
        return None
    fn: NativeGroupIds = _extension().group_ids
    return fn


def dedup_window(horizon: int, native: bool) -> SpanWindow:
    """A partition's dedup window: the extension's (24-byte keys held inline), or the Python one."""
    if native:
        window: SpanWindow = _extension().DedupWindow(horizon)
        return window
    return DedupWindow(horizon)
