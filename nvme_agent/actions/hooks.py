"""The exec action: run a hook with a clean environment, a timeout and captured output.

The hook runs in its own session (so its whole process group can be killed), with ``/`` as
working directory, stdin from /dev/null and an environment built only from a minimal base
(PATH, LANG), the plan's variables and the spec's.  Each output line is logged through the
``nvme_agent.hook`` logger (so it lands in the journal), bounded in size.  When the timeout
expires the group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import IO

import psutil

from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import BASE_ENV
from nvme_agent.policy.plan import ExecSpec

hook_log = logging.getLogger("nvme_agent.hook")
log = logging.getLogger("nvme_agent.actions")

#: Longest output line logged (longer lines are cut) and most output logged per stream.
MAX_LINE = 2048
MAX_STREAM_BYTES = 64 * 1024
#: Seconds between SIGTERM and SIGKILL once a hook ran out of time.
KILL_GRACE = 5.0


def hook_env(
    plan_env: Iterable[tuple[str, str]], spec_env: Iterable[tuple[str, str]], user: str | None
) -> dict[str, str]:
    """The complete hook environment (nothing inherited from the daemon)."""
    env = dict(BASE_ENV)
    if user is not None:
        pw = _passwd(user)
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    env.update(plan_env)
    env.update(spec_env)
    return env


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError as exc:
        raise ActionError(f"hook user {user!r} does not exist") from exc


class _Pump(threading.Thread):
    """Reads one output stream line by line into the hook logger, up to a byte budget."""

    def __init__(self, stream: IO[bytes], label: str, argv0: str, pid: int) -> None:
        super().__init__(name=f"hook-{label}-{pid}", daemon=True)
        self.stream = stream
        self.label = label
        self.argv0 = argv0
        self.pid = pid
        self.logged = 0
        self.truncated = False
        self.tail: list[str] = []

    def run(self) -> None:
        level = logging.INFO if self.label == "stdout" else logging.WARNING
        try:
            for raw in iter(self.stream.readline, b""):
                if self.logged >= MAX_STREAM_BYTES:
                    self.truncated = True
                    continue  # keep draining so the hook never blocks on a full pipe
                line = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")
                self.logged += len(raw)
                self.tail = [*self.tail[-4:], line]
                hook_log.log(
                    level,
                    "%s[%d] %s: %s",
                    self.argv0,
                    self.pid,
                    self.label,
                    line,
                    extra={"HOOK_PID": str(self.pid), "HOOK_STREAM": self.label},
                )
        except (OSError, ValueError):
            pass
        finally:
            self.stream.close()


def _killpg(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    pids = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                pids.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return pids


def _wait_group(proc: subprocess.Popen[bytes], pgid: int, grace: float) -> bool:
    """Wait up to ``grace`` seconds for the leader and every group member to exit."""
    end = time.monotonic() + grace
    pacer = threading.Event()
    while True:
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
        else:
            if not _group_members(pgid):
                return True
            pacer.wait(0.05)  # the leader is gone; pace the re-checks of its group
        if time.monotonic() >= end:
            return False


def run_exec(
    spec: ExecSpec,
    plan_env: Iterable[tuple[str, str]],
    deadline: Deadline,
    *,
    kill_grace: float = KILL_GRACE,
) -> Outcome:
    """Run the hook; OK when it exits 0 within the timeout."""
    if not spec.argv:
        raise ActionError("exec action with an empty argv")
    env = hook_env(plan_env, spec.env, spec.user)
    user_kw: dict[str, object] = {}
    if spec.user is not None:
        pw = _passwd(spec.user)
        user_kw = {
            "user": pw.pw_uid,
            "group": pw.pw_gid,
            "extra_groups": [g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid],
        }
        grp.getgrgid(pw.pw_gid)  # fail early on a broken passwd entry
    argv0 = os.path.basename(spec.argv[0])
    try:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,
            **user_kw,
        )
    except OSError as exc:
        raise ActionError(f"cannot start hook {spec.argv[0]}: {exc.strerror}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        _Pump(proc.stdout, "stdout", argv0, proc.pid),
        _Pump(proc.stderr, "stderr", argv0, proc.pid),
    ]
    for p in pumps:
        p.start()
    pgid = proc.pid  # start_new_session: the hook leads its own group
    killed: str | None = None
    try:
        rc = proc.wait(timeout=deadline.remaining())
    except subprocess.TimeoutExpired:
        killed = "SIGTERM"
        _killpg(pgid, signal.SIGTERM)
        if not _wait_group(proc, pgid, kill_grace):
            killed = "SIGKILL"
            _killpg(pgid, signal.SIGKILL)
        rc = proc.wait()
    # Leftover group members keep the pipes open; do not wait on them for long.
    for p in pumps:
        p.join(timeout=1.0 if killed is None else 0.2)
    lingering = any(p.is_alive() for p in pumps)
    details: dict[str, str] = {"pid": str(proc.pid), "exit_status": str(rc)}
    if killed:
        details["killed"] = killed
    if lingering:
        log.warning("hook %s[%d] left processes holding its output open", argv0, proc.pid)
        details["lingering"] = "true"
    if any(p.truncated for p in pumps):
        details["output_truncated"] = "true"
    if killed:
        return Outcome.failed(
            f"hook {argv0} timed out after {deadline.seconds:g}s; process group killed ({killed})",
            **details,
        )
    if rc != 0:
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
        tail = pumps[1].tail or pumps[0].tail
        return Outcome.failed(
            f"hook {argv0} {how}",
            f"hook {argv0} {how}" + (f": {' | '.join(tail[-3:])}" if tail else ""),
            **details,
        )
    return Outcome.ok(f"hook {argv0} exited 0", **details)
