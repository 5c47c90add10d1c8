"""Helper tools: a tool started early and collected later (issue 13) never outlives its
action, whether it is read, runs out of time, or is abandoned by an error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.proc import BASE_ENV, ToolRun, run_tool

#: A child that tells its pid through a pipe, then waits far longer than any test.
_CHILD = "import os, sys, time; os.write(int(sys.argv[1]), b'%d' % os.getpid()); time.sleep(600)"


def _gone(pid: int) -> bool:
    """Neither running nor a zombie: reaped."""
    return not Path(f"/proc/{pid}").exists()


def _started(deadline: Deadline) -> tuple[ToolRun, int]:
    r, w = os.pipe()
    try:
        run = ToolRun([sys.executable, "-c", _CHILD, str(w)], deadline, pass_fds=(w,))
        os.close(w)
        pid = int(os.read(r, 32))
    finally:
        os.close(r)
    return run, pid


def test_a_tool_abandoned_by_an_error_is_killed_and_reaped() -> None:
    with pytest.raises(RuntimeError), ToolRun(["true"], Deadline(60)) as quick:
        run, pid = _started(Deadline(60))
        with run:
            raise RuntimeError("the work between start and result failed")
    assert run.returncode is not None and run.returncode < 0  # killed
    assert _gone(pid)
    assert quick.returncode is not None


def test_a_tool_past_its_deadline_is_killed_reaped_and_reported() -> None:
    run, pid = _started(Deadline(0.3))
    with run, pytest.raises(ActionError, match=r"did not finish within 0\.3s"):
        run.result()
    assert _gone(pid)


def test_a_collected_tool_gives_its_output_and_status() -> None:
    done = run_tool(["sh", "-c", "echo out; echo err >&2; exit 3"], Deadline(60))
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert done.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]


def test_a_missing_tool_is_an_action_error() -> None:
    with pytest.raises(ActionError, match="no-such-tool-here is not installed"):
        ToolRun(["no-such-tool-here"], Deadline(60))


def test_a_tool_sees_only_the_base_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/evil.so")
    env = run_tool(["env"], Deadline(60)).stdout.splitlines()
    assert sorted(env) == sorted(f"{k}={v}" for k, v in BASE_ENV.items())
