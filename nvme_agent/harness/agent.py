"""Run the real daemon (``nvme-agent run``) inside a bed and follow its event stream.

:class:`AgentProcess` starts ``python -m nvme_agent run`` with the bed's environment, a
datagram ``NOTIFY_SOCKET`` it binds itself (readiness is ``READY=1``, as under systemd) and
private runtime/state directories; :class:`EventFeed` reads ``events.sock`` in a thread and
lets the caller wait for a record matching a predicate, with a timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from nvme_agent.outputs.paths import RuntimePaths
from nvme_agent.service import control

log = logging.getLogger(__name__)

Record = dict[str, Any]


class AgentError(RuntimeError):
    """The daemon failed to start, died, or did not react in time."""


class EventFeed:
    """A subscriber of ``events.sock``: every record received, in order, and waits on them."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.records: list[Record] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="event-feed", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                parsed = [json.loads(line) for line in lines if line.strip()]
                with self._cond:
                    self.records.extend(parsed)
                    self._cond.notify_all()
        except OSError:
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def wait(
        self, predicate: Callable[[Record], bool], timeout: float, start: int = 0
    ) -> tuple[int, Record]:
        """The first record at index >= ``start`` matching ``predicate`` (index, record)."""
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.records):
                    if predicate(self.records[index]):
                        return index, self.records[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if self.closed:
                    raise AgentError("the event stream closed (did the daemon exit?)")
                if remaining <= 0:
                    raise TimeoutError(f"no matching event within {timeout:.1f}s")
                self._cond.wait(remaining)

    def snapshot(self) -> list[Record]:
        with self._cond:
            return list(self.records)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


class AgentProcess:
    """``nvme-agent run`` in a child process, in the environment ``env`` (the bed's)."""

    def __init__(
        self,
        policy: Path,
        env: Mapping[str, str],
        *,
        dry_run: bool = True,
        workdir: Path | None = None,
        state_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``state_dir``: the ledger's and the history's directory (``workdir/state`` unless
        given), which a real system keeps on disk, apart from its runtime directory."""
        self._tmp = (
            tempfile.TemporaryDirectory(prefix="nvme-agent-sim-") if workdir is None else None
        )
        base = Path(self._tmp.name) if self._tmp is not None else workdir
        assert base is not None
        self.base = base
        state = state_dir if state_dir is not None else base / "state"
        self.paths = RuntimePaths(runtime_dir=base / "run", state_dir=state)
        self.runtime_dir = self.paths.runtime_dir
        self.state_dir = self.paths.state_dir
        self.policy = policy
        self.dry_run = dry_run
        self.env = dict(env)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None
        self.stderr: IO[bytes] | None = None
        self.status = ""
        self.notified: set[str] = set()
        self._notify_cond = threading.Condition()
        self._notify_thread: threading.Thread | None = None

    @property
    def events_socket(self) -> str:
        return str(self.paths.events_socket)

    @property
    def control_socket(self) -> str:
        return str(self.paths.control_socket)

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "nvme_agent",
            "run",
            "--policy",
            str(self.policy),
            "--runtime-dir",
            str(self.runtime_dir),
            "--state-dir",
            str(self.state_dir),
            "--log-target",
            "stderr",
        ]
        if self.dry_run:
            cmd.append("--dry-run")
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 30.0) -> AgentProcess:
        """Start the daemon and wait for ``READY=1`` (its monitor is bound, coldplug done)."""
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = str(self.base / "notify.sock")
        self.notify.bind(notify_path)
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = notify_path
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self.stderr = tempfile.TemporaryFile(prefix="nvme-agent-daemon-")  # noqa: SIM115  (kept open for the daemon's life)
        self._notify_thread = threading.Thread(
            target=self._drain_notify, name="notify-drain", daemon=True
        )
        self._notify_thread.start()
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
        )
        self.wait_notify("READY=1", timeout)
        return self

    def _drain_notify(self) -> None:
        """Read every notify datagram, like systemd does.  The daemon sends ``STATUS=`` after
        each event, and an unread datagram socket fills after ~10 messages: ``sd_notify``
        would then block the daemon's event loop."""
        assert self.notify is not None
        sock = self.notify
        while True:
            try:
                data = sock.recv(4096).decode("utf-8", "replace")
            except OSError:
                break
            if not data:
                break
            with self._notify_cond:
                for line in data.splitlines():
                    if line.startswith("STATUS="):
                        self.status = line[len("STATUS=") :]
                    self.notified.add(line)
                self._notify_cond.notify_all()

    def wait_notify(self, what: str, timeout: float) -> None:
        """Wait until the daemon has sent notify line ``what`` (e.g. ``READY=1``)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with self._notify_cond:
            while what not in self.notified:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentError(
                        f"daemon did not send {what} within {timeout:.0f}s{self.tail()}"
                    )
                # Wake up at least every 0.2 s to notice a daemon that died without a word.
                self._notify_cond.wait(min(remaining, 0.2))
                if what not in self.notified and self.proc.poll() is not None:
                    raise AgentError(
                        f"daemon exited with status {self.proc.returncode}{self.tail()}"
                    )

    def request(self, payload: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """One control-socket request."""
        return control.request(self.control_socket, payload, timeout=timeout)

    def tail(self, limit: int = 3000) -> str:
        if self.stderr is None or self.stderr.closed:
            return ""
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace")
        return ("\n--- daemon log ---\n" + text[-limit:]) if text.strip() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
            else:
                code = proc.returncode
        if self.notify is not None:
            with contextlib.suppress(OSError):
                self.notify.shutdown(socket.SHUT_RDWR)
            self.notify.close()
            self.notify = None
        if self._notify_thread is not None:
            self._notify_thread.join(timeout=5)
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        if self._tmp is not None:
            self._tmp.cleanup()
        return code

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def environ_without_bed() -> dict[str, str]:
    """``os.environ`` minus a bed's variables (never nest beds by accident)."""
    return {k: v for k, v in os.environ.items() if k not in ("UMOCKDEV_DIR", "LD_PRELOAD")}
