"""Run the real daemon (``nvme-agent run``) as a child process and observe it.

Readiness comes from a datagram ``NOTIFY_SOCKET`` this object binds (the daemon's real
sd_notify calls), outcomes from the daemon's event stream socket.  Nothing here sleeps to
synchronise: every wait blocks on a socket with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nvme_agent.control import request

Predicate = Callable[[dict[str, Any]], bool]


class AgentError(RuntimeError):
    """The daemon did not start, died, or did not do what was awaited in time."""


class AgentProcess:
    """One ``nvme-agent run`` child with its own runtime and state directories."""

    def __init__(
        self,
        policy: Path,
        workdir: Path,
        env: Mapping[str, str],
        *,
        dry_run: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.policy = policy
        self.workdir = workdir
        self.runtime_dir = workdir / "run"
        self.state_dir = workdir / "state"
        self.env = dict(env)
        self.dry_run = dry_run
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_messages: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self._cursor = 0
        self._notify: socket.socket | None = None
        self._events: socket.socket | None = None
        self._buffer = b""
        self.stderr_path = workdir / "agent.stderr"

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "nvme_agent", "run", "--policy", str(self.policy)]
        cmd += ["--runtime-dir", str(self.runtime_dir), "--state-dir", str(self.state_dir)]
        cmd += ["--log-target", "stderr"]
        if self.dry_run:
            cmd.append("--dry-run")
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> AgentProcess:
        """Start the daemon and return once it has sent READY=1 and the stream is open."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        notify_path = self.workdir / "notify.sock"
        if notify_path.exists():
            notify_path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = dict(self.env, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self.wait_notify("READY=1", timeout)
        self._events = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._events.connect(str(self.runtime_dir / "events.sock"))
        return self

    def wait_notify(self, wanted: str, timeout: float = 30.0) -> str:
        """Block until a notify datagram containing the line ``wanted`` arrives."""
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentError(f"no {wanted} from the daemon in {timeout}s: {self.stderr()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AgentError(f"daemon exited with {self.proc.returncode}: {self.stderr()}")
            self._notify.settimeout(min(remaining, 0.5))
            try:
                data = self._notify.recv(65536).decode()
            except TimeoutError:
                continue
            self.notify_messages.append(data)
            if wanted in data.splitlines():
                return data

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._close()
        return rc

    def kill(self) -> None:
        """SIGKILL, as ``systemctl kill -s KILL`` would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for sock in (self._events, self._notify):
            if sock is not None:
                sock.close()
        self._events = self._notify = None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ observation
    def _read_event(self, deadline: float) -> dict[str, Any] | None:
        assert self._events is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._events.settimeout(min(remaining, 0.5))
            try:
                chunk = self._events.recv(1 << 16)
            except TimeoutError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AgentError(
                        f"daemon exited with {self.proc.returncode}: {self.stderr()}"
                    ) from None
                continue
            if not chunk:
                raise AgentError(f"event stream closed: {self.stderr()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        record: dict[str, Any] = json.loads(line)
        self.seen.append(record)
        return record

    def wait_for(
        self, predicate: Predicate, timeout: float = 30.0, what: str = ""
    ) -> dict[str, Any]:
        """The first record from the cursor on that satisfies ``predicate``.

        Records already seen but not yet consumed count too; the cursor moves past the match.
        """
        for i in range(self._cursor, len(self.seen)):
            if predicate(self.seen[i]):
                self._cursor = i + 1
                return self.seen[i]
        deadline = time.monotonic() + timeout
        while True:
            record = self._read_event(deadline)
            if record is None:
                raise AgentError(
                    f"timed out after {timeout}s waiting for {what or predicate}; "
                    f"last records: {self.seen[-5:]}\n{self.stderr()}"
                )
            if predicate(record):
                self._cursor = len(self.seen)
                return record

    def collect(
        self, predicate: Predicate, count: int, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The next ``count`` records satisfying ``predicate``, in order."""
        return [self.wait_for(predicate, timeout, f"{count} records") for _ in range(count)]

    def control(self, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        return request(str(self.runtime_dir / "control.sock"), payload, timeout)


def is_type(kind: str, nsid: int | None = None) -> Predicate:
    """Predicate: a record of ``type`` kind (and nsid)."""
    return lambda r: r.get("type") == kind and (nsid is None or r.get("nsid") == nsid)


def is_result(action: str, nsid: int | None = None, status: str | None = None) -> Predicate:
    """Predicate: an action result of ``action`` (and nsid, status)."""

    def pred(r: dict[str, Any]) -> bool:
        return (
            r.get("type") == "action-result"
            and r.get("action") == action
            and (nsid is None or r.get("nsid") == nsid)
            and (status is None or r.get("status") == status)
        )

    return pred


def default_env() -> dict[str, str]:
    """The current environment, for daemons that need no bed."""
    return dict(os.environ)
