"""exec hooks, systemd units, signals and grow."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from support.actions import IS_ROOT, Loop, loops, needs_loop

from nvme_agent.actions import hooks, units
from nvme_agent.actions.grow import run_grow
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.hooks import run_exec
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.signals import run_signal
from nvme_agent.policy.plan import ExecSpec, GrowSpec, MountSpec, SignalSpec, Status, SystemdSpec

__all__ = ["loops"]


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_hook_gets_a_clean_environment_and_root_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UMOCKDEV_DIR", "/nonexistent")
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    out_file = tmp_path / "env"
    spec = ExecSpec(
        argv=("sh", "-c", 'env > "$OUT"; pwd >> "$OUT"'),
        env=(("OUT", str(out_file)), ("NVME_NSID", "override")),
    )
    out = run_exec(spec, (("NVME_NSID", "3"), ("NVME_AGENT_EVENT", "add")), Deadline(10))
    assert out.status is Status.OK, out
    lines = out_file.read_text().splitlines()
    assert lines[-1] == "/"
    env = dict(line.split("=", 1) for line in lines[:-1] if "=" in line)
    assert env["NVME_NSID"] == "override"  # spec env wins over plan env
    assert env["NVME_AGENT_EVENT"] == "add"
    assert env["LANG"] == "C.UTF-8" and "/usr/bin" in env["PATH"]
    for leaked in ("UMOCKDEV_DIR", "SECRET_TOKEN", "LD_PRELOAD", "HOME"):
        assert leaked not in env


def test_hook_output_is_logged_line_by_line_and_exit_status_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.hook")
    spec = ExecSpec(argv=("sh", "-c", "echo one; echo two; echo oops >&2; exit 3"))
    out = run_exec(spec, (), Deadline(10))
    assert out.status is Status.FAILED
    assert dict(out.details)["exit_status"] == "3"
    assert out.error is not None and "exited 3" in out.error and "oops" in out.error
    hook_lines = [r.getMessage() for r in caplog.records if r.name == "nvme_agent.hook"]
    assert any(m.endswith("stdout: one") for m in hook_lines)
    assert any(m.endswith("stdout: two") for m in hook_lines)
    err = [r for r in caplog.records if r.getMessage().endswith("stderr: oops")]
    assert err and err[0].levelno == logging.WARNING


def test_hook_output_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.hook")
    code = "import sys\nfor i in range(5000): print('x' * 100)\nprint('y' * 100000)"
    out = run_exec(ExecSpec(argv=(sys.executable, "-c", code)), (), Deadline(30))
    assert out.status is Status.OK
    assert dict(out.details)["output_truncated"] == "true"
    logged = [r.getMessage() for r in caplog.records if r.name == "nvme_agent.hook"]
    assert sum(len(m) for m in logged) < hooks.MAX_STREAM_BYTES + 200 * len(logged)
    assert all(len(m) < hooks.MAX_LINE + 200 for m in logged)


def test_hook_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The hook forks a grandchild and waits; both must die when the timeout hits.
    script = f'sleep 1000 & echo $! > "{pidfile}"; wait'
    out = run_exec(ExecSpec(argv=("sh", "-c", script), timeout=0.5), (), Deadline(0.5))
    assert out.status is Status.FAILED and "timed out" in out.message
    assert dict(out.details)["killed"] == "SIGTERM"
    grandchild = int(pidfile.read_text())
    assert gone(grandchild)


def test_hook_ignoring_sigterm_gets_sigkill(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # Ignored dispositions survive exec: both the shell and its sleep ignore SIGTERM.
    script = f"trap '' TERM; sleep 1000 & echo $! > \"{pidfile}\"; wait"
    out = run_exec(
        ExecSpec(argv=("sh", "-c", script), timeout=0.5), (), Deadline(0.5), kill_grace=0.3
    )
    assert out.status is Status.FAILED
    assert dict(out.details)["killed"] == "SIGKILL"
    grandchild = int(pidfile.read_text())
    assert gone(grandchild)
    leader = int(dict(out.details)["pid"])
    assert gone(leader)


def test_missing_hook_is_a_clear_error() -> None:
    with pytest.raises(ActionError, match="cannot start hook /nonexistent/hook"):
        run_exec(ExecSpec(argv=("/nonexistent/hook",)), (), Deadline(5))


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to switch the hook's user")
def test_hook_runs_as_another_user(tmp_path: Path) -> None:
    out = run_exec(
        ExecSpec(
            argv=("sh", "-c", 'test "$(id -u)" = 65534 && test "$USER" = nobody'), user="nobody"
        ),
        (),
        Deadline(10),
    )
    assert out.status is Status.OK, out


def test_systemctl_without_systemd_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(units, "SYSTEMD_RUNTIME", str(tmp_path / "no-systemd"))
    with pytest.raises(ActionError, match="systemd is not running as PID 1"):
        units.run_systemctl(SystemdSpec(verb="restart", unit="app@nvme0n1.service"), Deadline(5))
    with pytest.raises(ActionError, match="systemd is not running"):
        run_signal(SignalSpec(signal="HUP", unit="app.service"), Deadline(5))
    with pytest.raises(ActionError, match="invalid unit name"):
        units.run_systemctl(SystemdSpec(verb="start", unit="--all"), Deadline(5))


def _sig_child(tmp_path: Path, name: str | None = None) -> subprocess.Popen[str]:
    """A child that prints the signals it gets (HUP) and dies on TERM."""
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGHUP, lambda s, f: print('HUP', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True: signal.pause()\n"
    )
    argv = [sys.executable, "-c", code]
    exe = sys.executable
    if name is not None:
        exe = str(tmp_path / name)
        shutil.copy(sys.executable, exe)
        argv[0] = exe
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, executable=exe)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_signal_by_pidfile(tmp_path: Path) -> None:
    p = _sig_child(tmp_path)
    try:
        pidfile = tmp_path / "app.pid"
        pidfile.write_text(f"{p.pid}\n")
        out = run_signal(SignalSpec(signal="SIGHUP", pidfile=str(pidfile)), Deadline(5))
        assert out.status is Status.OK and dict(out.details)["pids"] == str(p.pid)
        assert p.stdout is not None and p.stdout.readline().strip() == "HUP"
    finally:
        p.kill()
        p.wait()


def test_signal_by_process_name(tmp_path: Path) -> None:
    name = f"nvmeagt{os.getpid() % 100000}"
    p = _sig_child(tmp_path, name=name)
    try:
        out = run_signal(SignalSpec(signal="TERM", process=name), Deadline(5))
        assert out.status is Status.OK and dict(out.details)["pids"] == str(p.pid)
        assert p.wait(timeout=10) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    missing = run_signal(SignalSpec(signal="HUP", process=name), Deadline(5))
    assert missing.status is Status.SKIPPED and "no running process" in missing.message


def test_signal_needs_exactly_one_selector() -> None:
    with pytest.raises(ActionError, match="exactly one"):
        run_signal(SignalSpec(signal="HUP", pidfile="/x", process="y"), Deadline(5))


def test_grow_refuses_unknown_filesystems() -> None:
    with pytest.raises(ActionError, match="cannot grow vfat"):
        run_grow(GrowSpec(source="/dev/null", fstype="vfat"), Deadline(5))


def _blocks(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def _has_cap_sys_resource() -> bool:
    """ext4 online resize needs CAP_SYS_RESOURCE (containers often drop it)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def _ext4_blocks(dev: str) -> int:
    out = subprocess.run(["dumpe2fs", "-h", dev], capture_output=True, text=True, check=True).stdout
    return int(next(x for x in out.splitlines() if x.startswith("Block count:")).split()[-1])


@pytest.mark.root
@needs_loop
@pytest.mark.parametrize(
    "fstype,online",
    [
        ("ext4", False),
        pytest.param(
            "ext4",
            True,
            marks=pytest.mark.skipif(
                not _has_cap_sys_resource(),
                reason="ext4 online resize needs CAP_SYS_RESOURCE, which this process lacks",
            ),
        ),
        ("xfs", True),
    ],
)
def test_grow_enlarges_the_filesystem(
    fstype: str, online: bool, loops: Callable[..., Loop], tmp_path: Path
) -> None:
    loop = loops(fstype, size=(400 << 20) if fstype == "xfs" else (128 << 20))
    # Recreate the filesystem smaller than the device, as if the namespace had grown.
    small = (
        ["mkfs.ext4", "-q", "-F", loop.dev, "48M"]
        if fstype == "ext4"
        else ["mkfs.xfs", "-q", "-f", "-d", "size=300m", loop.dev]
    )
    subprocess.run(small, check=True, capture_output=True)
    if not online:
        before = _ext4_blocks(loop.dev)
        out = run_grow(GrowSpec(source=loop.dev, fstype=fstype), Deadline(60))
        assert out.status is Status.OK, out
        assert _ext4_blocks(loop.dev) > before
        return
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    root = tmp_path / "mnt"
    spec = MountSpec(source=loop.dev, target=str(root / "g"), mount_root=str(root), fstype=fstype)
    ledger = MountLedger(str(tmp_path / "mounts.json"))
    mounted = do_mount(spec, ledger=ledger, guard=Guard(fstab=str(fstab)), deadline=Deadline(30))
    assert mounted.status is Status.OK
    before = _blocks(root / "g")
    out = run_grow(GrowSpec(source=loop.dev, fstype=fstype), Deadline(60))
    assert out.status is Status.OK, out
    assert _blocks(root / "g") > before


def test_readme_lists_every_hook_variable_the_plans_give() -> None:
    """The README's hook environment list and the plans' variables are one table."""
    import dataclasses
    import re

    from support.policy import namespace, partition, topology

    from nvme_agent.policy import decide, load_policy_text
    from nvme_agent.topology.changes import Change, ChangeType

    policy = load_policy_text(
        "version: 1\n"
        "rules:\n"
        "  - match: {fs_label: '*'}\n"
        "    on_add: [{mount: {}}, {exec: {argv: [/bin/true]}}]\n"
    )
    part = partition("nvme0n1", 1, label="data")
    assert part.fs is not None
    part = dataclasses.replace(part, fs=dataclasses.replace(part.fs, uuid="1234-abcd"))
    ns = dataclasses.replace(
        namespace(1, uuid="6c5f1b2e-0000-4000-8000-000000000001", partitions=(part,)),
        nguid="00112233445566778899aabbccddeeff",
        eui64="0011223344556677",
    )
    change = Change(
        ChangeType.PARTITION_ADDED, namespace=ns, partition=part, reason="r", coldplug=True
    )
    plan = decide(change, topology(ns), policy)
    given = set(dict(plan.env))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme.split("- **Hook environment**", 1)[1].split("the action's `env`", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", text))
    assert given == listed


def test_stopping_a_finished_output_reader_writes_to_no_other_file() -> None:
    """Found by the soak (issue 16): every hook run stopped its two output readers after they
    had finished and closed their wake-up pipes, so ``stop()`` wrote its byte to whatever
    file another thread had opened under that fd number meanwhile (a state file, a socket,
    another hook's pipe).  Here the number is taken over on purpose; nothing may reach it."""
    out_r, out_w = os.pipe()
    os.close(out_w)  # the hook is done: EOF at once
    pump = hooks._Pump(os.fdopen(out_r, "rb"), "stdout", "/bin/true", 1, {})
    pump.start()
    pump.join(timeout=30)
    assert not pump.is_alive()
    victim_r, victim_w = os.pipe()
    os.set_blocking(victim_r, False)
    taken = pump._wake_w  # closed by the finished reader; another file gets the number
    os.dup2(victim_w, taken)
    try:
        pump.stop()
        with pytest.raises(BlockingIOError):
            stray = os.read(victim_r, 16)
            pytest.fail(f"stop() wrote {stray!r} into a file that is not its own")
    finally:
        for fd in (victim_r, victim_w, taken):
            os.close(fd)
