"""The composition root (collector/app/build.py): the settings' defaults are the only defaults.

The pipelines' config dataclasses and constructors keep defaults for tests and benchmarks;
these tests fail when one drifts from the value ``prodloop`` gets from its settings.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from collector.app import build
from collector.app.settings import Settings, StoreSettings
from collector.pipelines.direct import DirectPipeline
from collector.pipelines.files import ingest
from collector.pipelines.stream import StreamConfig
from collector.processing.batch import ProcessorConfig


def _defaults() -> Settings:
    return Settings.model_construct()  # the defaults, not the environment


def test_stream_config_defaults_are_the_settings_defaults() -> None:
    built = build.stream_config(_defaults())
    plain = StreamConfig()
    mapped = {f.name for f in dataclasses.fields(StreamConfig)} - {"workers"}  # auto: the cores
    drifted = {
        name: (getattr(plain, name), getattr(built, name))
        for name in mapped
        if getattr(plain, name) != getattr(built, name)
        and name not in {"backoff_initial_s", "max_inflight_batches"}  # not settings
    }
    assert drifted == {}
    assert built.deploy_skew_ms == 10_000


def test_the_unread_deploy_wait_is_gone() -> None:
    assert "deploy_wait_max_ms" not in {f.name for f in dataclasses.fields(StreamConfig)}


def _signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (
            DirectPipeline.__init__,
            {
                "processing": lambda s: build.processor_config(s),
                "flush_interval_s": lambda s: s.receiver.flush_interval_seconds,
                "queue_max_spans": lambda s: s.receiver.queue_max_spans,
                "retry_after_s": lambda s: s.receiver.retry_after_seconds,
            },
        ),
        (ingest, {"processing": lambda s: build.processor_config(s)}),
    ],
    ids=["direct", "files"],
)
def test_pipeline_defaults_are_the_settings_defaults(
    fn: Callable[..., Any], expected: dict[str, Callable[[Settings], Any]]
) -> None:
    defaults = _signature_defaults(fn)
    settings = _defaults()
    assert {k: defaults[k] for k in expected} == {k: f(settings) for k, f in expected.items()}


def test_the_processing_config_has_one_home() -> None:
    built = build.processor_config(_defaults())
    assert built == ProcessorConfig()  # every default is the settings' default
    assert built.trace_wait_ms == 10_000
    assert build.stream_config(_defaults()).processing == built


def test_the_store_dsn_and_password_have_one_home(tmp_path: Path) -> None:
    settings = Settings.model_construct(
        store=StoreSettings(dsn=f"chdb://{tmp_path}/s", password=SecretStr("pw"))
    )
    assert build.store_dsn(settings) == f"chdb://{tmp_path}/s"
    assert build.store_password(settings) == "pw"
    assert build.store_dsn(_defaults()).startswith("chdb://")
    assert build.store_password(_defaults()) is None
