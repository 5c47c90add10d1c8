"""Running helper tools (mount, umount, e2fsck, systemctl, ...) with a clean environment."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from nvme_agent.actions.outcome import ActionError, Deadline

#: The whole environment of every child process the agent starts, before plan/spec additions.
#: The daemon's own environment (LD_PRELOAD, UMOCKDEV_DIR, NOTIFY_SOCKET, ...) never leaks.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class ClosesOnExit:
    """A context manager whose block ends with :meth:`close`, however it ends."""

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ToolRun(ClosesOnExit):
    """A tool started now and collected later, so that other work overlaps its run.

    Use it as a context manager: leaving the block without :meth:`result` (an error in the
    work between) kills the tool and reaps it, so no child outlives the action.
    """

    def __init__(self, argv: Sequence[str], deadline: Deadline, pass_fds: Sequence[int] = ()):
        self.argv = list(argv)
        self.deadline = deadline
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=dict(BASE_ENV),
                cwd="/",
                pass_fds=tuple(pass_fds),
            )
        except FileNotFoundError as exc:
            raise ActionError(f"{self.argv[0]} is not installed") from exc

    @property
    def returncode(self) -> int | None:
        """The tool's exit status once it was collected or reaped; None before."""
        return self._proc.returncode

    def result(self) -> subprocess.CompletedProcess[str]:
        """Wait for the tool within the deadline; stdout/stderr captured as text.

        Raises :class:`ActionError` when it runs out of time (it is killed first).
        """
        try:
            out, err = self._proc.communicate(timeout=self.deadline.remaining())
        except subprocess.TimeoutExpired as exc:
            self._reap()
            raise ActionError(
                f"{' '.join(self.argv)} did not finish within {self.deadline.seconds:g}s (killed)"
            ) from exc
        return subprocess.CompletedProcess(self.argv, self._proc.returncode, out, err)

    def _reap(self) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
        self._proc.communicate()

    def close(self) -> None:
        """Kill and reap the tool if it is still running (nothing once it was collected)."""
        if self._proc.returncode is None:
            self._reap()


def run_tool(
    argv: Sequence[str],
    deadline: Deadline,
    *,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion within the deadline; stdout/stderr captured as text.

    Raises :class:`ActionError` when the tool is missing or runs out of time (it is killed).
    """
    with ToolRun(argv, deadline, pass_fds) as run:
        return run.result()


def tool_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The useful part of a failed tool's output, with its exit status."""
    text = (proc.stderr or proc.stdout or "").strip()
    lines = text.splitlines()[-5:]
    argv = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return f"{argv[0]} exited {proc.returncode}" + (f": {' | '.join(lines)}" if lines else "")
