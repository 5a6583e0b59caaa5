"""``prodloop check``: every config file validated without a store, each problem at file:line:column."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from collector.cli.commands import main
from tests.conftest import run_prodloop


@pytest.fixture(autouse=True)
def _no_prodloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PRODLOOP_")]:
        monkeypatch.delenv(name)


def check(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["check", *map(str, args)])


def test_unknown_key_names_its_place_and_the_closest_real_key(tmp_path: Path) -> None:
    cfg = tmp_path / "prodloop.yaml"
    cfg.write_text("store:\n  database: x\n  dsnn: chdb:///tmp/s\nservice:\n  log_levle: INFO\n")
    res = check("--config", cfg)
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    assert f"{cfg}:3:3: error: store.dsnn: unknown key 'dsnn' in store; did you mean 'dsn'?" in lines
    assert (
        f"{cfg}:5:3: error: service.log_levle: unknown key 'log_levle' in service; did you mean 'log_level'?"
        in lines
    )
    assert lines[-1].endswith("2 errors, 0 warnings")


def test_wrong_type_names_the_key_path_and_the_value_expected(tmp_path: Path) -> None:
    cfg = tmp_path / "prodloop.yaml"
    cfg.write_text("aggregation:\n  window_seconds: soon\n")
    res = check("--config", cfg)
    assert res.exit_code == 1
    assert (
        f"{cfg}:2:19: error: aggregation.window_seconds (env PRODLOOP_AGGREGATION__WINDOW_SECONDS): "
        "Input should be a valid integer, "
        "unable to parse string as an integer, got 'soon'"
    ) in res.output.splitlines()


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "prodloop.yaml"
    cfg.write_text("store:\n  dsn: [unclosed\nkafka: {}\n")
    res = check("--config", cfg)
    assert res.exit_code == 1
    first = res.output.splitlines()[0]
    assert first.startswith(f"{cfg}:3:6: error: config file is not valid YAML: "), first
    assert "<unicode string>" not in res.output


def test_missing_file_is_named_once(tmp_path: Path) -> None:
    missing = tmp_path / "modules.yaml"
    res = check("--modules", missing)
    assert res.exit_code == 1
    assert res.output.splitlines()[0] == f"{missing}: error: modules file not found"


def test_an_empty_modules_file_is_a_warning(tmp_path: Path) -> None:
    modules = tmp_path / "modules.yaml"
    modules.write_text("")
    res = check("--modules", modules)
    assert res.exit_code == 0, res.output
    assert f"{modules}:1:1: warning: no module rules (is the file empty?)" in res.output.splitlines()


def test_bad_rule_in_rules_yaml_points_at_the_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: slow\n    kind: threshold\n    metirc: p99\n    op: above\n    value: 3\n"
    )
    res = check("--rules", rules)
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert f"{rules}:4:5: error: rules[0] (slow): metirc: unknown field; did you mean 'metric'?" in lines


def test_rules_of_the_config_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules: []\nverison: 1\n")
    cfg = tmp_path / "prodloop.yaml"
    cfg.write_text("alerts:\n  rules: rules.yaml\n")
    res = check("--config", cfg)
    assert res.exit_code == 1
    assert (
        f"{tmp_path / 'rules.yaml'}:2:1: error: (file): verison: unknown field; did you mean 'version'?"
        in res.output.splitlines()
    )


def test_bad_codeowners_line(tmp_path: Path) -> None:
    codeowners = tmp_path / "CODEOWNERS"
    codeowners.write_text("*.py @acme/py\n/api/ @@nobody\n")
    res = check("--codeowners", codeowners)
    assert res.exit_code == 1
    assert res.output.splitlines()[0].startswith(f"{codeowners}:2:1: error: invalid owner '@@nobody'")


def test_every_command_reports_the_same_place(tmp_path: Path) -> None:
    cfg = tmp_path / "prodloop.yaml"
    cfg.write_text("store:\n  dsnn: chdb:///tmp/s\n")
    expected = f"{cfg}:2:3: error: store.dsnn: unknown key 'dsnn' in store; did you mean 'dsn'?"
    shown = CliRunner().invoke(main, ["config", "--config", str(cfg)])
    assert shown.exit_code == 2
    assert expected in shown.stderr
    ran = run_prodloop("run", "--config", str(cfg), env={"PRODLOOP_SERVICE__LOG_FORMAT": "json"})
    assert ran.returncode == 2
    fatal = json.loads(ran.stderr.strip().splitlines()[-1])
    assert fatal["msg"] == f"fatal: {expected}"
