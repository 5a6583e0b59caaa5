"""An application that raises real exceptions, logged by the real OpenTelemetry SDK as log records.

Its files are written under a source root and imported from there, so the stack traces the
SDK records name them; ``Generator.truth`` says which module raised how many of which type
(the ground truth).  ``write_app`` also writes the modules.yaml and CODEOWNERS that attribute them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import random
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling

from tests.support.sdk_requests import SeededIds

# file under the source root -> (module, service, exception types it raises)
APP = {
    "services/cart/store.py": ("cart/store", "cart", ("KeyError", "TimeoutError")),
    "services/cart/api.py": ("cart/api", "cart", ("ValueError",)),
    "services/payments/gateway.py": ("payments/gateway", "payments", ("ConnectionError", "ValueError")),
}
MODULES_YAML = """\
source_roots: ["{root}"]
modules:
  - name: cart/store
    paths: ["services/cart/store.py"]
  - name: cart/api
    paths: ["services/cart/api.py"]
  - name: payments/gateway
    paths: ["services/payments/**"]
"""
SOURCE = """\
def fail(kind, depth):
    if depth:
        return fail(kind, depth - 1)
    raise {"KeyError": KeyError, "TimeoutError": TimeoutError, "ValueError": ValueError,
           "ConnectionError": ConnectionError}[kind]("failed in " + __name__)
"""

Truth = Counter[tuple[str, str, str]]  # (service, module, exception type) -> count


def write_app(root: Path) -> dict[str, ModuleType]:
    """The application's files under ``root``, imported from there (their frames name them)."""
    mods = {}
    for rel in APP:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SOURCE)
        spec = importlib.util.spec_from_file_location(f"app_{uuid.uuid4().hex[:8]}", path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods[rel] = mod
    (root / "modules.yaml").write_text(MODULES_YAML.format(root=root))
    (root / "CODEOWNERS").write_text("/services/cart/ @acme/cart\n/services/payments/ @acme/payments\n")
    return mods


@dataclass
class Generator:
    """Log records of two services, one ``LoggerProvider`` (resource) each, with what they carry."""

    mods: dict[str, ModuleType]
    seed: int
    truth: Truth = field(default_factory=Counter)

    def emit(self, n: int, exporters: dict[str, LogRecordExporter]) -> None:
        """``n`` exceptions (and plain records) through each service's ``exporters`` entry."""
        rng = random.Random(self.seed)
        tracer = TracerProvider(
            sampler=sampling.ALWAYS_ON, id_generator=SeededIds(self.seed), shutdown_on_exit=False
        ).get_tracer("app")
        loggers, handlers, providers = {}, [], []
        for service, exporter in exporters.items():
            provider = LoggerProvider(
                resource=Resource(
                    {
                        "service.name": service,
                        "deployment.environment.name": "prod",
                        "telemetry.sdk.language": "python",
                    }
                ),
                shutdown_on_exit=False,
            )
            provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
            with pytest.warns(DeprecationWarning, match="LoggingHandler"):
                handler = LoggingHandler(logger_provider=provider)
            logger = logging.getLogger(f"prodloop.tests.logs_topic.{service}.{uuid.uuid4().hex[:6]}")
            logger.propagate = False
            logger.addHandler(handler)
            loggers[service] = logger
            handlers.append((logger, handler))
            providers.append(provider)
        try:
            for i in range(n):
                rel = rng.choice(list(APP))
                module, service, kinds = APP[rel]
                kind = rng.choice(kinds)
                # most inside a span (a trace id to key by), some outside any
                with tracer.start_as_current_span("op") if i % 3 else contextlib.nullcontext():
                    try:
                        self.mods[rel].fail(kind, rng.randrange(3))
                    except Exception:
                        loggers[service].exception("request failed")
                        self.truth[(service, module, kind)] += 1
                if i % 4 == 0:
                    loggers[service].info("plain record %d", i)  # carries no exception
        finally:
            for logger, handler in handlers:
                logger.removeHandler(handler)
            for provider in providers:
                provider.shutdown()


def requests_of(exporter: InMemoryLogRecordExporter, per_request: int) -> list[bytes]:
    """The exporter's records as OTLP protobuf requests of ``per_request`` records each."""
    records = list(exporter.get_finished_logs())
    return [
        bytes(encode_logs(records[i : i + per_request]).SerializeToString())
        for i in range(0, len(records), per_request)
    ]


def stored_exceptions(dsn: str) -> Truth:
    """What `prodloop query modules` says was thrown, per (service, module, type)."""
    args = ["query", "modules", "--store", dsn, "--from", "-1h", "--format", "json"]
    res = subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    got: Truth = Counter()
    for row in json.loads(res.stdout):
        for t in row["top_exception_types"]:
            got[(row["service"], row["module"], t["type"])] += t["count"]
    return got
