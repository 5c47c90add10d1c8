"""The systemd action: ``systemctl start|stop|restart|reload UNIT``."""

from __future__ import annotations

import os

from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.policy.plan import SystemdSpec

#: Present only when systemd is the init system (sd_booted(3)).
SYSTEMD_RUNTIME = "/run/systemd/system"


def require_systemd(what: str) -> None:
    """Raise a clear error when systemctl cannot work (systemd is not PID 1)."""
    if not os.path.isdir(SYSTEMD_RUNTIME):
        raise ActionError(
            f"cannot {what}: systemd is not running as PID 1 ({SYSTEMD_RUNTIME} is missing)"
        )


def _check_unit(unit: str) -> None:
    if not unit or unit.startswith("-") or "/" in unit or any(c.isspace() for c in unit):
        raise ActionError(f"invalid unit name {unit!r}")


def run_systemctl(spec: SystemdSpec, deadline: Deadline) -> Outcome:
    """Run the verb on the unit and wait for the job (bounded by the action timeout)."""
    _check_unit(spec.unit)
    require_systemd(f"{spec.verb} {spec.unit}")
    proc = run_tool(["systemctl", "--no-ask-password", spec.verb, "--", spec.unit], deadline)
    if proc.returncode != 0:
        return Outcome.failed(f"systemctl {spec.verb} {spec.unit} failed", tool_error(proc))
    return Outcome.ok(f"systemctl {spec.verb} {spec.unit}", unit=spec.unit)


def main_pid(unit: str, deadline: Deadline) -> int | None:
    """The unit's MainPID (None when it has no running main process)."""
    _check_unit(unit)
    require_systemd(f"find the main process of {unit}")
    proc = run_tool(["systemctl", "show", "-p", "MainPID", "--value", "--", unit], deadline)
    if proc.returncode != 0:
        raise ActionError(f"systemctl show {unit}: {tool_error(proc)}")
    text = proc.stdout.strip()
    pid = int(text) if text.isdigit() else 0
    return pid or None
