"""Bundled scenarios work by the names ``simulate --list`` prints (issue 14.5)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from nvme_agent.cli import scenarios
from nvme_agent.cli.exits import Exit, UsageError
from nvme_agent.cli.main import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def listed() -> list[str]:
    rc, out, _ = run_cli("simulate", "--list")
    assert rc == Exit.OK
    return out.splitlines()


def test_list_prints_names_of_the_bundled_scenarios() -> None:
    names = listed()
    assert names == list(scenarios.bundled())
    assert scenarios.DEFAULT in names
    assert not [n for n in names if n.endswith(".policy")]  # a scenario's policy is no scenario


@pytest.mark.parametrize("name", scenarios.bundled())
def test_explain_takes_every_listed_name(name: str) -> None:
    for arg in (name, f"{name}.yaml"):
        rc, out, err = run_cli("explain", "--json", "--scenario", arg)
        assert rc == Exit.OK, err
        plans = [json.loads(line) for line in out.splitlines()]
        assert plans and all(p["type"] == "plan" for p in plans)


def test_a_local_file_wins_over_a_bundled_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / scenarios.DEFAULT
    local.write_text("not: a scenario\n")
    monkeypatch.chdir(tmp_path)
    assert scenarios.resolve(scenarios.DEFAULT) == Path(scenarios.DEFAULT)
    rc, _, err = run_cli("explain", "--scenario", scenarios.DEFAULT)
    assert rc == Exit.USAGE and "not" in err  # the local file was read (and refused)
    os.unlink(local)
    assert scenarios.resolve(scenarios.DEFAULT) == scenarios.bundled()[scenarios.DEFAULT]


@pytest.mark.parametrize(
    "arg", ["no-such-scenario", "./qemu-hot-swap", "sub/qemu-hot-swap.yaml", "../qemu-hot-swap"]
)
def test_unknown_names_and_paths_are_usage_errors(
    arg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"bundled: .*\bqemu-hot-swap\b"):
        scenarios.resolve(arg)
    rc, _, err = run_cli("explain", "--scenario", arg)
    assert rc == Exit.USAGE
    assert err.startswith("nvme-agent explain: no scenario file")


@pytest.mark.umockdev
def test_simulate_runs_a_listed_name(bed_support: None) -> None:
    rc, out, err = run_cli("simulate", "--json", listed()[0])
    assert rc == Exit.OK, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["type"] == "summary" and summary["ok"] is True
