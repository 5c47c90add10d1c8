"""Running helper tools (mount, umount, e2fsck, systemctl, ...) with a clean environment."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from nvme_agent.actions.outcome import ActionError, Deadline

#: The whole environment of every child process the agent starts, before plan/spec additions.
#: The daemon's own environment (LD_PRELOAD, UMOCKDEV_DIR, NOTIFY_SOCKET, ...) never leaks.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def run_tool(
    argv: Sequence[str],
    deadline: Deadline,
    *,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion within the deadline; stdout/stderr captured as text.

    Raises :class:`ActionError` when the tool is missing or runs out of time (it is killed).
    """
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(BASE_ENV),
            cwd="/",
            timeout=deadline.remaining(),
            pass_fds=tuple(pass_fds),
            check=False,
        )
    except FileNotFoundError as exc:
        raise ActionError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ActionError(
            f"{' '.join(argv)} did not finish within {deadline.seconds:g}s (killed)"
        ) from exc


def tool_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The useful part of a failed tool's output, with its exit status."""
    text = (proc.stderr or proc.stdout or "").strip()
    lines = text.splitlines()[-5:]
    argv = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return f"{argv[0]} exited {proc.returncode}" + (f": {' | '.join(lines)}" if lines else "")
