"""No output shows a secret: ``prodloop config``, failing ``query`` and ``run``, and a working ``run``.

Each secret is set once, through the environment, the YAML file or a DSN, and then looked for
in every output plain, URL-encoded and as the base64 of ``user:secret`` (HTTP basic auth).
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from pydantic import SecretStr

from collector.errors import TicketError
from collector.exporters.tickets.http import HttpClient
from collector.exporters.tickets.webhook import WebhookSink
from tests.conftest import REPO, run_prodloop
from tests.support.streaming import RunProcess, free_port

USER = "alice"
SECRETS = {
    "dsn": "dsnPw-7f3Q+z/1",
    "store": "storePw-K9x@2",
    "webhook_token": "whTok-L4v&8",
    "webhook_userinfo": "whPw-Q2m:5",
    "github": "ghp_Tok3nZ9",
    "jira": "jiraTok-R7w",
    "bearer": "bearTok-P1n",
    "sasl": "saslPw-U6y",
}


def _encodings(secret: str) -> set[str]:
    out = {secret, quote(secret, safe=""), quote_plus(secret)}
    for user in (USER, "hook", "me@acme.example", ""):
        out.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return out


def _assert_no_secret(what: str, text: str) -> None:
    for name, secret in SECRETS.items():
        for form in _encodings(secret):
            assert form not in text, f"{what} shows the {name} secret ({form!r})"


def _config(tmp_path: Path, dsn: str) -> Path:
    cfg = tmp_path / "prodloop.yaml"
    hook = f"https://hook:{quote(SECRETS['webhook_userinfo'], safe='')}@hooks.example.com/p"
    cfg.write_text(
        f"store:\n  dsn: {dsn!r}\n"
        "kafka:\n  sasl_mechanism: PLAIN\n  sasl_username: prodloop\n"
        f"  sasl_password: {SECRETS['sasl']!r}\n"
        "alerts:\n"
        f"  webhook:\n    url: '{hook}?token={quote(SECRETS['webhook_token'], safe='')}'\n"
        "    secret: hmac-key\n"
        "  jira:\n    email: me@acme.example\n"
        f"    api_token: {SECRETS['jira']!r}\n"
    )
    return cfg


ENV = {
    "PRODLOOP_ALERTS__GITHUB__TOKEN": SECRETS["github"],
    "PRODLOOP_RECEIVER__BEARER_TOKEN": SECRETS["bearer"],
    "PRODLOOP_STORE__PASSWORD": SECRETS["store"],
    "PRODLOOP_SERVICE__LOG_FORMAT": "json",
}


def test_config_and_failing_commands_show_no_secret(tmp_path: Path) -> None:
    closed = free_port()
    in_dsn = f"http://{USER}:{quote(SECRETS['dsn'], safe='')}@127.0.0.1:{closed}/prodloop"
    cfg = _config(tmp_path, in_dsn)

    shown = run_prodloop("config", "--config", str(cfg), env=ENV)
    assert shown.returncode == 0, shown.stderr
    assert f"http://{USER}:***@127.0.0.1:{closed}/prodloop" in shown.stdout
    assert '"url": "https://***@hooks.example.com/p?token=***"' in shown.stdout
    assert '"password": "**********"' in shown.stdout and '"testing"' not in shown.stdout
    _assert_no_secret("config", shown.stdout + shown.stderr)

    query = run_prodloop("query", "modules", "--config", str(cfg), env=ENV, timeout=60)
    assert query.returncode != 0
    assert f"127.0.0.1:{closed}" in query.stderr, query.stderr
    _assert_no_secret("a failing query", query.stdout + query.stderr)

    # the password as store.password only, the DSN naming the user
    user_only = _config(tmp_path, f"http://{USER}@127.0.0.1:{closed}/prodloop")
    direct = {**ENV, "PRODLOOP_RECEIVER__MODE": "direct"}
    ran = run_prodloop("run", "--config", str(user_only), env=direct, timeout=60)
    assert ran.returncode != 0
    assert '"fatal: ' in ran.stderr, ran.stderr
    _assert_no_secret("a failing run", ran.stdout + ran.stderr)


def test_a_working_run_logs_and_serves_no_secret(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"chdb://{tmp_path / 'store'}")
    proc = RunProcess(
        {**ENV, "PRODLOOP_RECEIVER__MODE": "direct"},
        REPO,
        tmp_path / "run.log",
        ["--config", str(cfg)],
    )
    try:
        deadline = time.monotonic() + 30
        while "prodloop receivers" not in proc.log_path.read_text():  # serving, the store open
            assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        proc.close()
    _assert_no_secret("/metrics", metrics)
    _assert_no_secret("the run's logs", proc.log_path.read_text())


def test_webhook_errors_and_logs_show_no_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    url = (
        f"https://hook:{quote(SECRETS['webhook_userinfo'], safe='')}@hooks.example.com/p"
        f"?token={quote(SECRETS['webhook_token'], safe='')}"
    )
    statuses = iter([503, 400])
    transport = httpx.MockTransport(lambda request: httpx.Response(next(statuses), text="no"))
    http = HttpClient("", {}, what="webhook", transport=transport, sleep=lambda s: None)
    sink = WebhookSink(url, SecretStr("hmac-key"), http=http)
    with caplog.at_level(logging.WARNING, logger="prodloop.tickets"), pytest.raises(TicketError) as info:
        sink.http.request("POST", sink.url)
    assert "POST https://***@hooks.example.com/p?token=*** -> 400" in str(info.value)
    assert "hooks.example.com/p?token=*** -> 503" in caplog.text
    _assert_no_secret("webhook errors", f"{info.value}\n{caplog.text}\n{sink!r}")
