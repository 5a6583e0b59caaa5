"""``GET /openapi.json`` describes the receiver as it answers: schemathesis generates requests
from the served document against a receiver in direct mode on chDB, and every answer must be
no 5xx and conform to the document (status, media type, headers, body schema)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from collector.app.attribution_files import load_attribution
from collector.app.receivers import Receivers, start_receivers
from collector.app.settings import Settings
from collector.exporters.clickhouse.store import ClickHouseStore
from collector.receivers.http import ROUTES
from collector.receivers.openapi import openapi_document
from tests.integration import receiver_app

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def receivers(store: ClickHouseStore, tmp_path: Path) -> Iterator[Receivers]:
    modules, codeowners = receiver_app.write_config(tmp_path)
    loaded = load_attribution(codeowners=codeowners, modules=modules)
    cfg = {
        "grpc_enabled": False,
        "http_port": 0,
        "flush_interval_seconds": 3600,
        "github_webhook_secret": "s",
    }
    r = start_receivers(Settings(receiver=cfg), store=store, repositories=loaded.repositories)
    try:
        yield r
    finally:
        r.stop(5)


def test_every_answer_conforms_to_the_document(receivers: Receivers) -> None:
    api_schema = schemathesis.openapi.from_url(f"{receivers.http_url}/openapi.json")
    # each operation in turn (schemathesis' pytest loader does not run under pytest 9)
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS, timeout=10)

        check()


def test_the_document_covers_every_route(receivers: Receivers) -> None:
    with urllib.request.urlopen(f"{receivers.http_url}/openapi.json", timeout=10) as resp:
        doc = json.load(resp)
    assert doc == openapi_document()
    described = {(path, m.upper()) for path, ops in doc["paths"].items() for m in ops}
    assert described == {(path, m) for path, methods in ROUTES.items() for m in methods}
    assert doc["openapi"] == "3.1.0"
    deploy = doc["components"]["schemas"]["DeployEvent"]
    assert deploy["required"] == ["deploy_id", "service", "environment", "commit_sha", "deployed_at"]
