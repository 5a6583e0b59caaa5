"""Writes the Python stack-trace fixtures of tests/data/stacktraces/python/.

Each scenario raises a real exception, records it on a span with the OpenTelemetry SDK
(``span.record_exception``), takes the recorded ``exception.*`` attributes from an in-memory
exporter and writes them to ``<name>.exception.json``.  ``<name>.truth.json`` says where the
root cause was raised, from the traceback objects of the exception itself (the innermost
frame inside this program's directory), not from any parser.

Run: .venv/bin/python tests/data/stacktraces/programs/python/write_fixtures.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "python"
sys.path.insert(0, str(HERE))

from shop.payments import retry  # noqa: E402


def root_cause(exc: BaseException) -> BaseException:
    """The exception Python prints first: follow __cause__, else unsuppressed __context__."""
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None:
            return exc
        exc = nxt


def truth_of(exc: BaseException) -> dict[str, object]:
    cause = root_cause(exc)
    tb = cause.__traceback__
    site: tuple[str, int, str] | None = None
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename).resolve()
        if HERE in path.parents:
            site = (path.relative_to(HERE).as_posix(), tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert site is not None
    return {
        "source_root": str(HERE),
        "file": site[0],
        "function": site[2],
        "qualified": "",
        "line": site[1],
        "root_cause_type": type(cause).__name__,
    }


SCENARIOS: dict[str, Callable[[], object]] = {
    # raise ... from ...: the JSONDecodeError inside json is the root cause
    "direct_cause": lambda: retry.charge_with_retry("{not json"),
    # an error while handling another: the first one printed is the root cause
    "during_handling": lambda: retry.refund("[1, 2"),
    # raised in the program's own code, no chain
    "plain": lambda: retry.validate(-5),
}


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("stacktrace-fixtures")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, run in SCENARIOS.items():
        exporter.clear()
        with tracer.start_as_current_span(name, record_exception=False) as span:
            try:
                run()
            except Exception as exc:
                span.record_exception(exc)
                truth = truth_of(exc)
            else:
                raise AssertionError(f"{name} did not raise")
        (finished,) = exporter.get_finished_spans()
        (event,) = [e for e in finished.events if e.name == "exception"]
        attrs = dict(event.attributes or {})
        record = {
            "language": "python",
            "type": attrs["exception.type"],
            "message": attrs["exception.message"],
            "stacktrace": attrs["exception.stacktrace"],
        }
        (OUT / f"{name}.exception.json").write_text(json.dumps(record, indent=2) + "\n")
        (OUT / f"{name}.truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        print(f"wrote {name}: {truth['file']}:{truth['line']} {truth['root_cause_type']}")


if __name__ == "__main__":
    main()
