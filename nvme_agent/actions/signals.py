"""The signal action: signal processes found by pidfile, process name or a unit's MainPID."""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING

from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.units import main_pid
from nvme_agent.actions.unmount import parse_signal
from nvme_agent.policy.plan import SignalSpec
from nvme_agent.policy.trust import untrusted_reason

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("nvme_agent.actions")


def _read_pid(path: str) -> tuple[int, os.stat_result]:
    """The pid in ``path`` (symlinks resolved) and what the file was when read.

    Opened without blocking (a FIFO would hang the action) and read to 64 bytes at most.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ActionError(f"cannot read pidfile {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ActionError(f"pidfile {path} is not a regular file")
        words = os.read(fd, 64).decode("ascii", "replace").split()
    finally:
        os.close(fd)
    if not words or not words[0].isdigit():
        raise ActionError(f"pidfile {path} holds no pid")
    return int(words[0]), st


def _from_pidfile(path: str) -> list[psutil.Process]:
    """The process a pidfile names, if the pidfile may be believed about it.

    Anyone who can write a pidfile chooses whom the agent signals.  So the file must be
    root's or belong to the user the process runs as, the directories above it too, and none
    of them writable by others (a sticky directory such as /tmp is fine).
    """
    import psutil  # lazily: see nvme_agent.actions.holders

    real = os.path.realpath(path)
    pid, st = _read_pid(real)
    try:
        proc = psutil.Process(pid)
        uids = proc.uids()
    except psutil.NoSuchProcess:
        return []
    allowed = {0, uids.real, uids.effective}
    reason = untrusted_reason(real, owners=allowed, dir_owners=allowed, follow=False)
    if reason is None:
        try:
            now = os.stat(real, follow_symlinks=False)
        except OSError as exc:
            reason = f"{real}: {exc.strerror}"
        else:
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                reason = f"{real} was replaced while it was read"
    if reason is not None:
        raise ActionError(
            f"refusing pidfile {path} naming pid {pid} (uid {uids.real}): {reason}; a pidfile "
            "must be owned by root or by the process's user, in directories nobody else can "
            "write"
        )
    return [proc]


def _by_name(name: str) -> list[psutil.Process]:
    """Exact match on the process name, argv[0]'s or the executable's basename."""
    import psutil  # lazily: see nvme_agent.actions.holders

    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "exe"]):
        info = p.info
        cmd = info.get("cmdline") or []
        names = {
            info.get("name") or "",
            os.path.basename(cmd[0]) if cmd else "",
            os.path.basename(info.get("exe") or ""),
        }
        if name in names:
            found.append(p)
    return found


def run_signal(spec: SignalSpec, deadline: Deadline) -> Outcome:
    """Send the signal; SKIPPED when no process matched (nothing to notify)."""
    import psutil  # lazily: see nvme_agent.actions.holders

    sig = parse_signal(spec.signal)
    chosen = [x for x in (spec.pidfile, spec.process, spec.unit) if x]
    if len(chosen) != 1:
        raise ActionError("signal action needs exactly one of pidfile, process, unit")
    if spec.pidfile:
        what, procs = f"pidfile {spec.pidfile}", _from_pidfile(spec.pidfile)
    elif spec.process:
        what, procs = f"process {spec.process!r}", _by_name(spec.process)
    else:
        assert spec.unit is not None
        pid = main_pid(spec.unit, deadline)
        what = f"unit {spec.unit}"
        try:
            procs = [psutil.Process(pid)] if pid else []
        except psutil.NoSuchProcess:
            procs = []
    procs = [p for p in procs if p.pid not in (os.getpid(), 0, 1)]
    if not procs:
        return Outcome.skipped(f"no running process for {what}; {sig.name} not sent")
    sent: list[str] = []
    errors: list[str] = []
    for p in procs:
        try:
            p.send_signal(sig)
            sent.append(str(p.pid))
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as exc:
            errors.append(f"{p.pid}: {exc}")
    if errors and not sent:
        return Outcome.failed(f"could not send {sig.name} to {what}", "; ".join(errors))
    return Outcome.ok(
        f"sent {sig.name} to {what} (pid {', '.join(sent) or 'none left'})",
        pids=",".join(sent),
    )
