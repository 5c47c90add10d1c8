"""Bash completion generated from the argparse tree (nvme_agent.cli.completion).

Each test sources the generated script in a real bash, sets COMP_WORDS/COMP_CWORD as bash
would, calls the completion function and reads COMPREPLY.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from nvme_agent.cli import completion
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import describe


def complete(script: Path, words: list[str], cwd: Path | None = None) -> list[str]:
    """COMPREPLY for the command line ``words`` (the cursor is on the last word)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (
        f"source '{script}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        f"{completion._function_name(words[0])}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "nvme-agent"
    assert completion.main(["-o", str(path)]) == 0
    return path


def test_script_is_valid_bash(script: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def test_subcommands_complete(script: Path) -> None:
    expected = sorted(sub.path[-1] for sub in describe(cli.build_parser()).subcommands)
    assert sorted(complete(script, ["nvme-agent", ""])) == expected
    first = expected[0]
    assert first in complete(script, ["nvme-agent", first[:1]])


def test_options_of_each_subcommand_complete(script: Path) -> None:
    for sub in describe(cli.build_parser()).subcommands:
        flags = sorted(f for opt in sub.options for f in opt.flags if f.startswith("--"))
        got = sorted(complete(script, ["nvme-agent", "-v", sub.path[-1], "--"]))
        assert got == flags, sub.name


def test_choices_and_files(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run it")
    run.add_argument("--target", choices=["auto", "journal", "stderr"], help="where")
    run.add_argument("--policy", metavar="FILE", help="policy file")
    run.add_argument("--flag", action="store_true", help="a flag")
    show = sub.add_parser("show", help="show it")
    show.add_argument("what", choices=["a", "b"], help="what to show")
    path = tmp_path / "tool"
    path.write_text(completion.render(parser))
    (tmp_path / "policy.yaml").write_text("")

    assert complete(path, ["tool", "run", "--target", "j"]) == ["journal"]
    assert complete(path, ["tool", "run", "--target", ""]) == ["auto", "journal", "stderr"]
    assert complete(path, ["tool", "run", "--policy", "pol"], cwd=tmp_path) == ["policy.yaml"]
    assert complete(path, ["tool", "run", "--flag", "--t"]) == ["--target"]
    assert complete(path, ["tool", "show", ""]) == ["a", "b"]
    assert complete(path, ["tool", "--"]) == []  # -h/--help is not offered
