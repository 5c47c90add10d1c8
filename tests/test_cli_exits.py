"""Exit statuses (nvme_agent.cli.exits) and the text commands print, through ``cli.main``.

Daemon answers come from the real control server on a real socket (tests/support/control.py);
the running daemon's side is in test_daemon*.py and the last test here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.control import CannedDaemon
from support.readable import SYSTEM_PYTHON, readable_source

from nvme_agent.cli import exits
from nvme_agent.cli import main as cli
from nvme_agent.cli.exits import EXITS, REASON_EXITS, Exit, exit_for_reason
from nvme_agent.cli.output import printable, printable_lines
from nvme_agent.harness.agent import AgentProcess
from nvme_agent.harness.bed import Bed
from nvme_agent.service.answers import Reason

#: The reasons the daemon puts in a failed control answer (the service's table).
DAEMON_REASONS = {r.value for r in Reason}

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
EJECT_9 = (sys.executable, "-m", "nvme_agent", "eject", "--json", "--nsid", "9")

CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` with its standard output and error captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:  # argparse's own usage errors
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


# --- the table -----------------------------------------------------------------------------


def test_every_status_has_one_row_with_a_unique_name() -> None:
    assert [row.code for row in EXITS] == sorted(Exit)
    assert len({row.name for row in EXITS}) == len(EXITS)
    assert all(row.meaning.endswith(".") for row in EXITS)
    # The statuses the issue asks for, with their numbers (scripts depend on them).
    assert (Exit.OK, Exit.FAILED, Exit.USAGE) == (0, 1, 2)
    assert (Exit.NOT_FOUND, Exit.NO_DAEMON, Exit.DENIED) == (3, 4, 5)


def test_every_daemon_reason_maps_to_a_status() -> None:
    assert set(REASON_EXITS) == set(Reason)
    assert REASON_EXITS[Reason.NOT_FOUND] is Exit.NOT_FOUND
    assert REASON_EXITS[Reason.DENIED] is Exit.DENIED
    assert REASON_EXITS[Reason.HELD] is Exit.FAILED
    assert REASON_EXITS[Reason.BAD_REQUEST] is Exit.USAGE
    for unknown in (None, "", "no-such-reason", 3, ["held"]):
        assert exit_for_reason(unknown) is Exit.FAILED


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_command_documents_the_statuses_it_uses(name: str) -> None:
    module = importlib.import_module(f"nvme_agent.cli.commands.{name}")
    meanings: dict[Exit, str] = module.EXITS
    assert Exit.OK in meanings
    assert all(isinstance(code, Exit) for code in meanings)
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[name]
    flat = " ".join((sub.description or "").split())
    assert " ".join(exits.describe_exits(meanings).split()) in flat


# --- answers of the daemon -> statuses -----------------------------------------------------


@pytest.mark.parametrize("reason", [*sorted(DAEMON_REASONS), None, "from-a-newer-daemon"])
def test_eject_status_follows_the_answers_reason(tmp_path: Path, reason: str | None) -> None:
    answer = {"ok": False, "nsid": 9, "error": "it went wrong"}
    if reason is not None:
        answer["reason"] = reason
    with CannedDaemon(tmp_path / "run", answer) as daemon:
        rc, out, err = run_cli("eject", "--nsid", "9", "--runtime-dir", str(tmp_path / "run"))
    assert rc == exit_for_reason(reason)
    assert daemon.requests == [{"cmd": "eject", "timeout": 300.0, "nsid": 9, "progress": True}]
    assert "it went wrong" in out and err == ""


def test_eject_of_a_namespace_that_is_not_there_is_not_still_held(tmp_path: Path) -> None:
    """Issue 14.6: a host script must be able to tell "gone" (3) from "retry" (1)."""
    answer = {"ok": False, "reason": "not-found", "error": "no namespace with nsid 9"}
    with CannedDaemon(tmp_path / "run", answer):
        rc, out, _ = run_cli("eject", "--nsid", "9", "--runtime-dir", str(tmp_path / "run"))
        rc_json, out_json, _ = run_cli(
            "eject", "--json", "--nsid", "9", "--runtime-dir", str(tmp_path / "run")
        )
    assert rc == rc_json == Exit.NOT_FOUND and Exit.NOT_FOUND.value == 3
    assert out == "nothing to eject: no namespace with nsid 9\n"
    (record,) = [json.loads(line) for line in out_json.splitlines()]
    assert record["type"] == "eject-failed" and record["reason"] == "not-found"
    assert record["exit"] == 3


def test_eject_safe_and_held(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    safe = {"ok": True, "nsid": 1, "device": "/dev/nvme0n1", "results": []}
    held = {
        "ok": False,
        "reason": "held",
        "nsid": 1,
        "error": "unmount: busy",
        "holders": ["sleep[42] (cwd)"],
    }
    with CannedDaemon(tmp_path / "run", safe) as daemon:
        assert run_cli("eject", "/dev/nvme0n1", "--runtime-dir", run)[:2] == (
            Exit.OK,
            "nsid 1 (/dev/nvme0n1) is safe to remove\n",
        )
        daemon.answer_given = held
        rc, out, _ = run_cli("eject", "/dev/nvme0n1", "--runtime-dir", run)
    assert rc == Exit.FAILED
    assert out.splitlines() == [
        "NOT safe to remove nsid 1: unmount: busy",
        "  held by: sleep[42] (cwd)",
    ]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"ok": True, "generation": 2}, Exit.OK),
        ({"ok": False, "errors": ["p.yaml:3:5: rules: bad"], "generation": 1}, Exit.FAILED),
        ({"ok": False, "reason": "invalid-policy", "errors": ["p.yaml:3:5: x"]}, Exit.FAILED),
        ({"ok": False, "reason": "denied", "error": "permission denied"}, Exit.DENIED),
        ({"ok": False, "reason": "busy", "error": "a reload is running"}, Exit.FAILED),
    ],
)
def test_reload_status(tmp_path: Path, answer: dict[str, object], status: Exit) -> None:
    with CannedDaemon(tmp_path / "run", answer):
        rc, _, err = run_cli("reload", "--runtime-dir", str(tmp_path / "run"))
    assert rc == status
    if not answer["ok"]:
        assert "NOT reloaded" in err


@pytest.mark.parametrize("argv", [["eject", "--nsid", "1"], ["reload"], ["watch"]])
def test_no_daemon_is_4_with_one_clear_line(tmp_path: Path, argv: list[str]) -> None:
    rc, out, err = run_cli(*argv, "--runtime-dir", str(tmp_path / "nothing-here"))
    assert rc == Exit.NO_DAEMON
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"nvme-agent {argv[0]}: ") and str(tmp_path / "nothing-here") in line


def test_a_stale_socket_is_no_daemon_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("control.sock", "events.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
            stale.bind(str(run / name))  # bound, never listening: connection refused
    assert run_cli("eject", "--nsid", "1", "--runtime-dir", str(run))[0] == Exit.NO_DAEMON
    assert run_cli("watch", "--runtime-dir", str(run))[0] == Exit.NO_DAEMON


def test_usage_errors_are_2(tmp_path: Path) -> None:
    assert run_cli("eject")[0] == Exit.USAGE  # argparse: DEVICE or --nsid required
    assert run_cli("eject", "--nsid", "x")[0] == Exit.USAGE
    assert run_cli("watch", "--count", "0", "--runtime-dir", str(tmp_path))[0] == Exit.USAGE
    assert run_cli("explain")[0] == Exit.USAGE
    assert run_cli("check", str(tmp_path / "absent.yaml"))[0] == Exit.USAGE
    assert run_cli("simulate", "no-such-scenario")[0] == Exit.USAGE


def test_permission_denied_is_5(tmp_path: Path) -> None:
    """A user outside the nvme-agent group: the socket (0600 here) refuses the connection."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as another user")
    run = tmp_path / "run"
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    policy.chmod(0o600)
    tmp_path.chmod(0o755)
    with CannedDaemon(run, {"ok": True}) as daemon:
        run.chmod(0o755)  # the directory is open, the socket is not
        for argv in (
            ["eject", "--nsid", "1", "--runtime-dir", str(run)],
            ["reload", "--runtime-dir", str(run)],
            ["check", str(policy)],
        ):
            done = subprocess.run(
                [*NOBODY, SYSTEM_PYTHON, "-m", "nvme_agent", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd="/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": readable_source()},
            )
            assert done.returncode == Exit.DENIED, (argv, done.stderr)
            assert "Permission denied" in done.stderr, done.stderr
        assert daemon.requests == []


# --- text that stays on its lines ----------------------------------------------------------


@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    assert CONTROL_CHARS.search(printable(text)) is None
    assert printable_lines(text).count("\n") == text.count("\n")
    assert CONTROL_CHARS.search(printable_lines(text).replace("\n", "")) is None


def test_hostile_holder_names_cannot_forge_a_safe_line(tmp_path: Path) -> None:
    """A holder's process name is chosen by whoever runs it (psutil reads cmdline too)."""
    run = str(tmp_path / "run")
    with CannedDaemon(tmp_path / "run") as daemon:

        @settings(max_examples=150, deadline=None)
        @given(
            names=st.lists(st.text(), min_size=1, max_size=3),
            error=st.text(),
            device=st.text(),
        )
        def check(names: list[str], error: str, device: str) -> None:
            daemon.answer_given = {
                "ok": False,
                "reason": "held",
                "nsid": 1,
                "device": device,
                "error": error,
                "holders": names,
                "results": [{"type": "action-result", "action": "unmount", "message": error}],
            }
            rc, out, _ = run_cli("eject", "--nsid", "1", "--runtime-dir", run)
            assert rc == Exit.FAILED
            lines = out.splitlines()
            assert len(lines) == 2 + len(names)
            assert lines[0].startswith("  unmount: ")
            assert lines[1].startswith("NOT safe to remove nsid 1: ")
            assert all(line.startswith("  held by: ") for line in lines[2:])
            assert CONTROL_CHARS.search(out.replace("\n", "")) is None

        check()


def test_watch_escapes_disk_values(tmp_path: Path) -> None:
    from nvme_agent.cli.commands.watch import summarize

    line = summarize(
        {
            "type": "namespace-added",
            "nsid": 1,
            "namespace": {"name": "nvme0n1\nnsid 1 is safe to remove\x1b[2J"},
        }
    )
    assert "\n" not in line and "\x1b" not in line
    assert line == "- namespace-added nsid=1 nvme0n1\\x0ansid 1 is safe to remove\\x1b[2J"


# --- against the running daemon ------------------------------------------------------------


@pytest.mark.umockdev
def test_eject_of_an_absent_namespace_against_the_daemon(mp_bed: Bed, tmp_path: Path) -> None:
    """The real daemon's answer: never 0, and the status is the one its reason maps to
    (3 once the daemon names the reason ``not-found``)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules: []\n")
    (tmp_path / "agent").mkdir()
    with AgentProcess(policy, mp_bed.env(os.environ), workdir=tmp_path / "agent") as agent:
        done = subprocess.run(
            [*EJECT_9, "--runtime-dir", str(agent.runtime_dir)],
            env=mp_bed.env(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["type"] == "eject-failed"
    assert done.returncode != Exit.OK
    assert done.returncode == record["exit"] == exit_for_reason(record["reason"])
    if record["reason"] is not None:
        assert done.returncode == Exit.NOT_FOUND
