"""Bash and zsh completion generated from the argparse tree (nvme_agent.cli.completion).

Bash: each test sources the generated script in a real bash, sets COMP_WORDS/COMP_CWORD as
bash would, calls the completion function and reads COMPREPLY.  Zsh: a real interactive zsh
on a pseudo-terminal loads the generated ``_nvme-agent`` through compinit and completes typed
lines (tests/support/zsh_complete.zsh).  Devices, NSIDs and controllers come from the fake
/sys and /dev of the umockdev bed, which both shells see through its preload library.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from nvme_agent.cli import completion, scenarios
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import describe
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig

ZSH_CAPTURE = Path(__file__).parent / "support" / "zsh_complete.zsh"


def complete(
    script: Path,
    words: list[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
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
        env=None if env is None else dict(env),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


def zsh_complete(
    folder: Path, *lines: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> list[list[str]]:
    """What zsh offers for each of ``lines`` (typed at the prompt, then TAB)."""
    if shutil.which("zsh") is None:
        pytest.skip("no zsh (make setup installs it)")
    done = subprocess.run(
        ["zsh", "-f", str(ZSH_CAPTURE), str(folder), *lines],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    assert done.returncode == 0, done.stderr
    blocks: list[list[str]] = [[]]
    for line in done.stdout.splitlines():
        if line == "<end>":
            blocks.append([])
        elif line:
            blocks[-1].append(line)
    assert blocks.pop() == [] and len(blocks) == len(lines), done.stdout
    return blocks


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "nvme-agent"
    assert completion.main(["-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def zsh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the generated ``_nvme-agent`` (an fpath entry)."""
    folder = tmp_path_factory.mktemp("zsh")
    assert completion.main(["--shell", "zsh", "-o", str(folder / "_nvme-agent")]) == 0
    return folder


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


def test_bash_numbers_directories_and_scenarios(script: Path, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    assert complete(script, ["nvme-agent", "eject", "--timeout", ""], cwd=tmp_path) == []
    assert complete(script, ["nvme-agent", "reload", "--runtime-dir", "a"], cwd=tmp_path) == [
        "adir"
    ]
    names = list(scenarios.bundled())
    assert complete(script, ["nvme-agent", "simulate", "q"], cwd=tmp_path) == [
        n for n in names if n.startswith("q")
    ]
    got = complete(script, ["nvme-agent", "explain", "--scenario", ""], cwd=tmp_path)
    assert sorted(got) == sorted([*names, "adir", "afile"])


# --- zsh -------------------------------------------------------------------------------------


def test_zsh_script_parses(zsh_dir: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("no zsh (make setup installs it)")
    subprocess.run(["zsh", "-n", str(zsh_dir / "_nvme-agent")], check=True, timeout=30)
    assert (zsh_dir / "_nvme-agent").read_text().startswith("#compdef nvme-agent\n")


def test_zsh_subcommands_options_choices_and_scenarios(zsh_dir: Path, tmp_path: Path) -> None:
    subs = describe(cli.build_parser()).subcommands
    (tmp_path / "adir").mkdir()
    lines = [
        "nvme-agent ",
        *[f"nvme-agent -v {sub.path[-1]} --" for sub in subs],
        "nvme-agent run --log-target ",
        "nvme-agent history -n 3 --",
        "nvme-agent eject --timeout ",
        "nvme-agent simulate ",
        "nvme-agent reload --runtime-dir a",
    ]
    got = zsh_complete(zsh_dir, *lines, cwd=tmp_path)
    assert sorted(got[0]) == sorted(sub.path[-1] for sub in subs)
    for sub, offered in zip(subs, got[1 : 1 + len(subs)], strict=True):
        flags = sorted(f for opt in sub.options for f in opt.flags if f.startswith("--"))
        assert sorted(offered) == flags, sub.name
    log_target, history, timeout, simulate, runtime_dir = got[1 + len(subs) :]
    assert log_target == ["auto", "journal", "stderr"]
    assert "--limit" not in history and "--nsid" in history  # -n given: its twin is gone
    assert timeout == []
    assert set(scenarios.bundled()) <= set(simulate) and "adir/" not in simulate
    assert set(runtime_dir) in ({"adir"}, {"adir/"})


# --- what is present now: devices, NSIDs, controllers (the umockdev bed) ----------------------


@pytest.fixture
def guest() -> Iterator[Bed]:
    """A fake guest: controller nvme0 with NSIDs 3 and 7 (block names in attach order)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"umockdev test bed unavailable: {reason}")
    with Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        bed.add_namespace(NamespaceConfig("nvme0", nsid=7, fs="ext4", label="a"))
        bed.add_namespace(NamespaceConfig("nvme0", nsid=3, fs="ext4", label="b"))
        yield bed


@pytest.mark.umockdev
def test_bash_completes_present_devices_nsids_and_controllers(script: Path, guest: Bed) -> None:
    env = guest.env(os.environ)
    assert complete(script, ["nvme-agent", "eject", "/dev/nv"], env=env) == [
        "/dev/nvme0n1",
        "/dev/nvme0n2",
    ]
    # The hidden per-path nvme0c0nN disks carry the same NSIDs: each is offered once.
    assert complete(script, ["nvme-agent", "eject", "--nsid", ""], env=env) == ["3", "7"]
    assert complete(script, ["nvme-agent", "history", "--nsid", "7"], env=env) == ["7"]
    assert complete(script, ["nvme-agent", "eject", "--ctrl", ""], env=env) == ["nvme0"]
    assert complete(script, ["nvme-agent", "explain", ""], env=env) == [
        "/dev/nvme0n1",
        "/dev/nvme0n2",
    ]


@pytest.mark.umockdev
def test_zsh_completes_present_devices_nsids_and_controllers(zsh_dir: Path, guest: Bed) -> None:
    devices, nsids, ctrls = zsh_complete(
        zsh_dir,
        "nvme-agent eject /dev/nv",
        "nvme-agent eject --nsid ",
        "nvme-agent eject --ctrl ",
        env=guest.env(os.environ),
    )
    assert sorted(devices) == ["/dev/nvme0n1", "/dev/nvme0n2"]
    assert nsids == ["3", "7"]
    assert ctrls == ["nvme0"]


def test_nothing_present_nothing_offered(script: Path, zsh_dir: Path) -> None:
    """Control for the two tests above: without the bed this machine has no NVMe."""
    if list(Path("/sys/class/nvme").glob("nvme*")):
        pytest.skip("this machine has NVMe controllers")
    assert complete(script, ["nvme-agent", "eject", "--nsid", ""]) == []
    assert zsh_complete(zsh_dir, "nvme-agent eject --ctrl ") == [[]]
