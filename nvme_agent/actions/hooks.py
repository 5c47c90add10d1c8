"""The exec action: run a hook with a clean environment, a timeout and captured output.

The program must be trusted when it runs (StrictModes: the file and every directory above it
owned by root and writable by nobody else); the path checked is the path executed.  The hook
runs in its own session (so its whole process group can be killed), with ``/`` as working
directory, stdin from /dev/null and an environment built only from a minimal base (PATH,
LANG), the plan's variables and the spec's.  Values lose their control characters; a value
that had any keeps its raw form under ``<NAME>_RAW``.  Each output line is logged (escaped)
through the ``nvme_agent.hook`` logger, so it lands in the journal, bounded in size.  When the
timeout expires the group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import IO

from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import BASE_ENV
from nvme_agent.policy.plan import ExecSpec
from nvme_agent.policy.trust import untrusted_reason
from nvme_agent.topology.text import escape, strip_unsafe

hook_log = logging.getLogger("nvme_agent.hook")
log = logging.getLogger("nvme_agent.actions")

#: Longest output line logged (longer lines are cut) and most output logged per stream.
MAX_LINE = 2048
MAX_STREAM_BYTES = 64 * 1024
#: Seconds between SIGTERM and SIGKILL once a hook ran out of time.
KILL_GRACE = 5.0


#: Plan variables that also become journal fields of the hook's output lines.
_FIELD_VARS = ("NVME_NSID", "NVME_CTRL", "DEVNAME")


def _encodable(value: str) -> str:
    """``value`` as an environment string: no NUL, and nothing os.fsencode refuses."""
    value = value.replace("\0", "")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:  # a lone surrogate that surrogateescape cannot carry
        return os.fsdecode(value.encode("utf-8", "surrogatepass"))
    return value


def clean_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Variables with their control characters (newline, escape, bidi, ...) removed.

    A value that had any also keeps its raw form under ``<NAME>_RAW``: data for the hook
    author to treat as data, never to paste into a shell line or a log.
    """
    env: dict[str, str] = {}
    for key, value in pairs:
        clean = strip_unsafe(value)
        env[key] = clean
        if clean != value:
            env[f"{key}_RAW"] = _encodable(value)
    return env


def hook_env(
    plan_env: Iterable[tuple[str, str]], spec_env: Iterable[tuple[str, str]], user: str | None
) -> dict[str, str]:
    """The complete hook environment (nothing inherited from the daemon)."""
    env = dict(BASE_ENV)
    if user is not None:
        pw = _passwd(user)
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    env.update(clean_values(plan_env))
    env.update(clean_values(spec_env))
    return env


def resolve_program(argv0: str, *, strict: bool = True) -> str:
    """The real path of the hook program, after StrictModes checks (unless ``strict`` is off).

    Checked when the hook runs, not when the policy loaded: the file may have changed since.
    The path checked is the one executed, and every directory above it is root's and
    writable by nobody else, so the file cannot be swapped in between.
    """
    if os.sep in argv0:
        if not os.path.isabs(argv0):
            raise ActionError(f"hook program {argv0!r} is a relative path")
        found: str | None = argv0
    else:
        found = shutil.which(argv0, path=BASE_ENV["PATH"])
    real = os.path.realpath(found) if found else None
    if real is None or not os.path.exists(real):
        raise ActionError(f"cannot start hook {argv0}: No such file or directory")
    if strict:
        reason = untrusted_reason(real)
        if reason is not None:
            raise ActionError(
                f"refusing to run hook {argv0}: {reason} (hook programs and their directories "
                "must be owned by root and writable by nobody else)"
            )
    return real


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError as exc:
        raise ActionError(f"hook user {user!r} does not exist") from exc


class _Pump(threading.Thread):
    """Reads one output stream line by line into the hook logger, up to a byte budget."""

    def __init__(
        self, stream: IO[bytes], label: str, argv0: str, pid: int, fields: dict[str, str]
    ) -> None:
        super().__init__(name=f"hook-{label}-{pid}", daemon=True)
        self.stream = stream
        self.label = label
        self.argv0 = argv0
        self.pid = pid
        self.fields = {**fields, "HOOK_PID": str(pid), "HOOK_STREAM": label}
        self.logged = 0
        self.truncated = False
        self.tail: list[str] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        # Guards the wake-up pipe: once run() has closed it, its numbers may belong to any
        # file another thread opens (a state file, a socket), which stop() must not touch.
        self._wake_lock = threading.Lock()
        self._wake_open = True

    def stop(self) -> None:
        """Stop reading: the hook is done, and what still holds its pipe open (a child it
        left running) must not keep a thread of ours waiting for as long as it lives."""
        with self._wake_lock:
            if self._wake_open:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")

    def run(self) -> None:
        fd = self.stream.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        pending = b""
        try:
            while True:
                ready = dict(poller.poll())
                if fd not in ready:
                    break  # stopped
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE:  # no newline for too long: a line all the same
                    lines, pending = [*lines, pending], b""
                for raw in lines:
                    self._line(raw + b"\n")
            if pending:
                self._line(pending)
        except (OSError, ValueError):
            pass
        finally:
            self.stream.close()
            with self._wake_lock:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _line(self, raw: bytes) -> None:
        if self.logged >= MAX_STREAM_BYTES:
            self.truncated = True
            return  # keep draining so the hook never blocks on a full pipe
        line = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")
        self.logged += len(raw)
        self.tail = [*self.tail[-4:], line]
        # The hook prints what it likes (device strings among it): escaped.
        level = logging.INFO if self.label == "stdout" else logging.WARNING
        hook_log.log(
            level,
            "%s[%d] %s: %s",
            escape(self.argv0),
            self.pid,
            self.label,
            escape(line),
            extra=self.fields,
        )


def _killpg(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    import psutil  # lazily: see nvme_agent.actions.holders

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


def _user_kwargs(user: str | None) -> dict[str, object]:
    """Popen arguments that switch to ``user`` (its groups too)."""
    if user is None:
        return {}
    pw = _passwd(user)
    grp.getgrgid(pw.pw_gid)  # fail early on a broken passwd entry
    return {
        "user": pw.pw_uid,
        "group": pw.pw_gid,
        "extra_groups": [g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid],
    }


def _wait(
    proc: subprocess.Popen[bytes], deadline: Deadline, kill_grace: float
) -> tuple[int, str | None]:
    """The exit status, and the signal the group got if the hook ran out of time."""
    pgid = proc.pid  # start_new_session: the hook leads its own group
    try:
        return proc.wait(timeout=deadline.remaining()), None
    except subprocess.TimeoutExpired:
        pass
    killed = "SIGTERM"
    _killpg(pgid, signal.SIGTERM)
    if not _wait_group(proc, pgid, kill_grace):
        killed = "SIGKILL"
        _killpg(pgid, signal.SIGKILL)
    return proc.wait(), killed


def _outcome(
    argv0: str,
    rc: int,
    killed: str | None,
    deadline: Deadline,
    pumps: list[_Pump],
    pid: int,
    lingering: bool,
) -> Outcome:
    details: dict[str, str] = {"pid": str(pid), "exit_status": str(rc)}
    if killed:
        details["killed"] = killed
    if lingering:
        log.warning(
            "hook %s[%d] left processes holding its output open; their output is not read",
            escape(argv0),
            pid,
        )
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


def run_exec(
    spec: ExecSpec,
    plan_env: Iterable[tuple[str, str]],
    deadline: Deadline,
    *,
    kill_grace: float = KILL_GRACE,
    strict: bool = True,
) -> Outcome:
    """Run the hook; OK when it exits 0 within the timeout.

    ``strict=False`` skips the ownership checks of the program (tests that run as a user).
    """
    if not spec.argv:
        raise ActionError("exec action with an empty argv")
    plan_env = tuple(plan_env)
    env = hook_env(plan_env, spec.env, spec.user)
    program = resolve_program(spec.argv[0], strict=strict)
    user_kw = _user_kwargs(spec.user)
    argv0 = os.path.basename(spec.argv[0])
    try:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(spec.argv),
            executable=program,
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
    fields = {k: v for k, v in plan_env if k in _FIELD_VARS}
    pumps = [
        _Pump(proc.stdout, "stdout", argv0, proc.pid, fields),
        _Pump(proc.stderr, "stderr", argv0, proc.pid, fields),
    ]
    for p in pumps:
        p.start()
    rc, killed = _wait(proc, deadline, kill_grace)
    # Leftover group members keep the pipes open; do not wait on them for long.
    for p in pumps:
        p.join(timeout=1.0 if killed is None else 0.2)
    lingering = any(p.is_alive() for p in pumps)
    for p in pumps:
        p.stop()
    for p in pumps:
        p.join(timeout=1.0)
    return _outcome(argv0, rc, killed, deadline, pumps, proc.pid, lingering)
