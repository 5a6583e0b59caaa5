"""`make demo`'s long loop end to end (issue 13): the demo builds its git history first (fixed
dates; its deploys carry the real SHAs), ingests two incidents, scans the history, and ends by
writing the report.  Then the queries answer from its store.

Ground truth is the demo's own: the module its regressing deploy breaks (the generator's
``regressed``), the incident it links by hand, the files it wrote that no span runs
(``collector.demo.history.DEAD_FILES``) and the commit that rewrote ``payments/retry``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from collector.demo.history import DEAD_FILES
from tests.conftest import run_prodloop

pytestmark = pytest.mark.e2e

PROD = {"PRODLOOP_HISTORY__PRODUCTION_ENVIRONMENT": "prod"}  # the demo shop's environment


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("demo-longloop")
    done = run_prodloop("demo", cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return cwd, done.stdout


def _query(cwd: Path, *args: str) -> Any:
    store = f"chdb://{cwd / '.prodloop' / 'demo'}"
    done = run_prodloop("query", *args, "--store", store, "--format", "json", cwd=cwd, env=PROD)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_demo_ends_by_writing_the_report(demo: tuple[Path, str]) -> None:
    cwd, out = demo
    (path,) = re.findall(r"^report: (.+)$", out, re.M)
    html = Path(path).read_text()
    assert Path(path).parent == cwd / ".prodloop" / "demo-data"
    for section in ("pain", "hotspots", "coupling", "dora", "incidents", "dead-code", "tickets"):
        assert f'<section id="{section}"' in html
    assert "<script" not in html and 'data-chart="hotspots"' in html


def test_one_incident_is_linked_by_hand_and_one_by_inference(demo: tuple[Path, str]) -> None:
    cwd, _ = demo
    links = {
        x["incident_id"]: x for x in _query(cwd, "incidents", "--since", "2025-12-01T00:00:00Z")["incidents"]
    }
    inferred, explicit = links["INC-101"], links["INC-102"]
    assert inferred["deploy_id"] == "deploy-payments-2.8.0"
    assert inferred["deploy_evidence"].startswith("inferred: last deploy of payments")
    assert inferred["modules"] == ["payments/retry"]  # the module the demo's deploy breaks
    assert inferred["modules_evidence"].startswith("inferred: changed by deploy-payments-2.8.0 and regressed")
    assert (explicit["deploy_id"], explicit["deploy_evidence"]) == (
        "deploy-checkout-1.8.4",
        "explicit deploy_id",
    )
    assert (explicit["modules"], explicit["modules_evidence"]) == (["checkout/pricing"], "explicit")


def test_dora_per_service_and_module_in_the_run(demo: tuple[Path, str]) -> None:
    cwd, _ = demo
    rows = _query(cwd, "dora", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T00:10:01Z")["rows"]
    by = {(r["service"], r["module"]): r for r in rows}
    # the run: every service's initial deploy, then payments 2.8.0 (INC-101, its ticket) and
    # checkout 1.8.4 (INC-102)
    payments, retry = by[("payments", "")], by[("payments", "payments/retry")]
    assert (payments["deploys"], payments["failed_deploys"]) == (2, 1)
    assert payments["incident_ids"] == ["INC-101"]
    assert (retry["deploys"], retry["failed_deploys"], retry["change_failure_rate"]) == (1, 1, 1.0)
    assert by[("checkout", "")]["incident_ids"] == ["INC-102"]
    assert by[("checkout", "checkout/pricing")]["failed_deploys"] == 1
    assert by[("frontend", "")]["failed_deploys"] == 0
    # lead time of the regression: committed 20 min before its deploy, its follow-up 15 min
    assert retry["lead_time_p50_s"] == 20 * 60


def test_suspects_and_dead_code(demo: tuple[Path, str]) -> None:
    cwd, _ = demo
    findings = {(f["kind"], f["key"]): f for f in _query(cwd, "suspects")["findings"]}
    top = findings[("incident", "INC-101")]["suspects"][0]
    assert top["subject"] == "retry: jittered exponential backoff (#231)" and top["touched"]
    dead = {
        d["path"]
        for d in _query(cwd, "dead-code", "--limit", "0", "--as-of", "2026-01-01T00:10:00Z")["files"]
    }
    assert set(DEAD_FILES) <= dead
    assert "services/payments/retry/backoff.py" not in dead  # the regression runs it


def test_deploys_and_tickets(demo: tuple[Path, str]) -> None:
    cwd, _ = demo
    deploys = {
        d["deploy_id"]: d
        for d in _query(cwd, "deploys", "--since", "2025-12-01T00:00:00Z", "--until", "2026-01-02T00:00:00Z")[
            "deploys"
        ]
    }
    # the demo's history: the regression commit rewrote payments/retry and one gateway file, and
    # a gateway logging change followed; checkout 1.8.4 is one pricing commit on a release branch
    payments = deploys["deploy-payments-2.8.0"]
    assert (payments["commits"], payments["modules"]) == (2, ["payments/gateway", "payments/retry"])
    assert payments["previous_deploy_id"] == "deploy-payments-2.7.1"
    assert (deploys["deploy-checkout-1.8.4"]["commits"], deploys["deploy-checkout-1.8.4"]["modules"]) == (
        1,
        ["checkout/pricing"],
    )
    (ticket,) = _query(cwd, "tickets")["tickets"]
    assert (ticket["module"], ticket["kind"], ticket["deploy_id"], ticket["state"]) == (
        "payments/retry",
        "regression_after_deploy",
        "deploy-payments-2.8.0",
        "open",
    )
