"""Files others can write decide nothing (issue 11.8), and hooks get clean values (11.6).

A hook program runs as root: it must be root's and writable by nobody else, checked when it
runs (the file may change after the policy loaded), and the checked path is the one executed.
A pidfile chooses whom the agent signals: it must belong to root or to the process's own user,
in directories nobody else can write.  Root only (files owned by another user).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.actions import IS_ROOT, WAIT, Results, change

from nvme_agent.actions.hooks import run_exec
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.actions.signals import run_signal
from nvme_agent.policy.plan import ExecSpec, Plan, SignalSpec, Status
from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.text import is_unsafe

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not IS_ROOT, reason="needs root: files owned by another user"),
]

NOBODY = 65534
PYTHON = "/usr/bin/python3"  # readable and executable by nobody, unlike a venv in a home


def script(path: Path, body: str, mode: int = 0o755, uid: int = 0) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    os.chown(path, uid, 0)
    return path


def hook(argv0: str, *args: str, env: tuple[tuple[str, str], ...] = ()) -> Outcome:
    return run_exec(ExecSpec(argv=(argv0, *args)), env, Deadline(10))


# --- hook programs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("why", "mode", "uid", "dir_mode"),
    [
        ("owned by uid 65534, not 0", 0o755, NOBODY, 0o755),
        ("writable by group or others (mode 0757)", 0o757, 0, 0o755),
        ("is writable by group or others (mode 0775)", 0o755, 0, 0o775),
    ],
)
def test_a_hook_program_others_could_change_is_refused(
    tmp_path: Path, why: str, mode: int, uid: int, dir_mode: int
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    ran = tmp_path / "ran"
    prog = script(hooks / "hook", f'echo ran > "{ran}"', mode=mode, uid=uid)
    hooks.chmod(dir_mode)
    with pytest.raises(ActionError, match=rf"refusing to run hook {prog}: .*{re.escape(why)}"):
        hook(str(prog))
    assert not ran.exists()


def test_the_check_is_made_when_the_hook_runs(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    prog = script(tmp_path / "hook", f'echo ran >> "{ran}"')
    assert hook(str(prog)).status is Status.OK
    prog.chmod(0o777)  # changed after "the policy loaded"
    with pytest.raises(ActionError, match="writable by group or others"):
        hook(str(prog))
    assert ran.read_text() == "ran\n"


def test_the_checked_path_is_the_path_executed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    real = script(tmp_path / "real-hook", f'echo "$0" > "{out}"')
    (tmp_path / "hook").symlink_to(real)
    assert hook(str(tmp_path / "hook")).status is Status.OK
    assert out.read_text().strip() == str(real)
    with pytest.raises(ActionError, match="relative path"):
        hook("./hook")
    with pytest.raises(ActionError, match="cannot start hook /nonexistent/hook"):
        hook("/nonexistent/hook")


def test_the_explicit_option_for_tests_runs_an_untrusted_program(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    prog = script(tmp_path / "hook", f'echo ran > "{ran}"', uid=NOBODY)
    results = Results()
    plans = [Plan(change(ChangeType.NAMESPACE_ADDED), key="k", actions=(ExecSpec((str(prog),)),))]
    for strict in (True, False):
        runner = ActionRunner(ledger=MountLedger(None), on_result=results, strict_hooks=strict)
        try:
            runner.submit(plans[0])
            assert runner.wait_idle(WAIT)
        finally:
            runner.close(timeout=WAIT)
    strict_result, relaxed_result = results.wait_for(2)
    assert strict_result.status is Status.FAILED
    assert "refusing to run hook" in (strict_result.error or "")
    assert relaxed_result.status is Status.OK and ran.read_text() == "ran\n"


# --- hook values and hook output ------------------------------------------------------------


def test_a_hook_gets_clean_values_and_the_raw_ones_beside(tmp_path: Path) -> None:
    out = tmp_path / "env"
    prog = script(tmp_path / "hook", f'env -0 > "{out}"')
    label = "../../etc\n<0>x\x1b]0;pwned\x07"
    env = (("ID_FS_LABEL", label), ("NVME_SERIAL", "SN\r\n1"), ("NVME_NSID", "4"))
    assert hook(str(prog), env=env).status is Status.OK
    text = out.read_bytes().decode()
    seen = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
    assert seen["ID_FS_LABEL"] == "../../etc<0>x]0;pwned"
    assert seen["ID_FS_LABEL_RAW"] == label
    assert seen["NVME_SERIAL"] == "SN1" and seen["NVME_SERIAL_RAW"] == "SN\r\n1"
    assert seen["NVME_NSID"] == "4" and "NVME_NSID_RAW" not in seen


def test_hook_output_is_escaped_and_carries_the_namespace_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.hook")
    # A careless hook prints the raw label: the log line still carries it escaped.
    prog = script(tmp_path / "hook", "printf 'label is %s\\n' \"$ID_FS_LABEL_RAW\"")
    env = (("ID_FS_LABEL", "a\r<0>b\x1b[2J"), ("NVME_NSID", "4"), ("DEVNAME", "/dev/nvme0n4"))
    assert hook(str(prog), env=env).status is Status.OK
    (rec,) = [r for r in caplog.records if r.name == "nvme_agent.hook"]
    text = rec.getMessage()
    assert text.endswith("stdout: label is a\\x0d<0>b\\x1b[2J")
    assert not any(is_unsafe(c) for c in text)
    fields = rec.__dict__
    assert fields["NVME_NSID"] == "4" and fields["DEVNAME"] == "/dev/nvme0n4"
    assert fields["HOOK_STREAM"] == "stdout" and fields["HOOK_PID"].isdigit()


# --- pidfiles -------------------------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Processes to aim at: one as root, one as nobody.  Both wait to be signalled."""
    code = "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    procs = {}
    for who, uid in (("root", 0), ("nobody", NOBODY)):
        p = subprocess.Popen(
            [PYTHON, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            user=uid,
            cwd="/",
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        procs[who] = p
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait(timeout=WAIT)


def terminated(p: subprocess.Popen[str]) -> bool:
    """Whether SIGTERM was sent to ``p``: a fatal signal sets the exit status when sent."""
    if p.poll() is None:
        p.kill()
    return p.wait(timeout=WAIT) == -signal.SIGTERM


def pidfile(path: Path, pid: int, uid: int = 0, mode: int = 0o644) -> str:
    path.write_text(f"{pid}\n")
    os.chown(path, uid, 0)
    path.chmod(mode)
    return str(path)


def test_a_pidfile_another_user_wrote_cannot_aim_at_roots_process(
    tmp_path: Path, target: dict[str, subprocess.Popen[str]]
) -> None:
    forged = pidfile(tmp_path / "app.pid", target["root"].pid, uid=NOBODY)
    with pytest.raises(ActionError, match=r"refusing pidfile .* owned by uid 65534, not 0"):
        run_signal(SignalSpec(signal="TERM", pidfile=forged), Deadline(5))
    assert not terminated(target["root"])


@pytest.mark.parametrize("owner", [0, NOBODY])
def test_a_pidfile_of_root_or_of_the_process_user_is_believed(
    tmp_path: Path, target: dict[str, subprocess.Popen[str]], owner: int
) -> None:
    rundir = tmp_path / "run-app"
    rundir.mkdir()
    os.chown(rundir, owner, 0)  # a daemon's own run directory
    path = pidfile(rundir / "app.pid", target["nobody"].pid, uid=owner)
    out = run_signal(SignalSpec(signal="TERM", pidfile=path), Deadline(5))
    assert out.status is Status.OK, out
    assert terminated(target["nobody"])


@pytest.mark.parametrize(("dir_mode", "believed"), [(0o777, False), (0o1777, True)])
def test_a_pidfile_in_a_world_writable_directory_needs_the_sticky_bit(
    tmp_path: Path, target: dict[str, subprocess.Popen[str]], dir_mode: int, believed: bool
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = pidfile(shared / "app.pid", target["root"].pid)
    shared.chmod(dir_mode)
    spec = SignalSpec(signal="TERM", pidfile=path)
    if believed:
        assert run_signal(spec, Deadline(5)).status is Status.OK
    else:
        with pytest.raises(ActionError, match=r"directory .*shared.* writable by group or others"):
            run_signal(spec, Deadline(5))
    assert terminated(target["root"]) is believed


def test_a_fifo_as_pidfile_never_hangs_the_action(tmp_path: Path) -> None:
    fifo = tmp_path / "app.pid"
    os.mkfifo(fifo)
    box: list[BaseException] = []

    def attempt() -> None:
        try:
            run_signal(SignalSpec(signal="TERM", pidfile=str(fifo)), Deadline(5))
        except BaseException as exc:
            box.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(WAIT)
    if worker.is_alive():  # unblock it: a writer lets the blocked open() return
        with open(fifo, "w") as fh:
            fh.write("1\n")
        worker.join(WAIT)
        pytest.fail("reading the pidfile blocked on a FIFO")
    assert box and "is not a regular file" in str(box[0])
