"""The signal action: signal processes found by pidfile, process name or a unit's MainPID."""

from __future__ import annotations

import logging
import os

import psutil

from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.units import main_pid
from nvme_agent.actions.unmount import parse_signal
from nvme_agent.policy.plan import SignalSpec

log = logging.getLogger("nvme_agent.actions")


def _from_pidfile(path: str) -> list[psutil.Process]:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().split()
    except OSError as exc:
        raise ActionError(f"cannot read pidfile {path}: {exc.strerror}") from exc
    if not text or not text[0].isdigit():
        raise ActionError(f"pidfile {path} holds no pid")
    try:
        return [psutil.Process(int(text[0]))]
    except psutil.NoSuchProcess:
        return []


def _by_name(name: str) -> list[psutil.Process]:
    """Exact match on the process name, argv[0]'s or the executable's basename."""
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
