"""The real daemon in this process (its loop in a thread), on this machine's real udev.

For what a child process cannot show: a loader that raises or waits on an Event, the
daemon's own state, log records.  ``NOTIFY_SOCKET`` is a real datagram socket whose
messages are kept in order (:class:`NotifyLog`); requests go through the real control
socket.  Peers of other users are child processes (:func:`as_peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nvme_agent.policy import load_policy
from nvme_agent.policy.spec import Policy
from nvme_agent.service.control import request
from nvme_agent.service.daemon import Daemon, DaemonConfig

T = TypeVar("T")

POLICY = "version: 1\nrules: []\n"
NOBODY = 65534


class NotifyLog:
    """A NOTIFY_SOCKET that keeps every line in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="notify-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self.lines.extend(data.decode("utf-8", "replace").splitlines())
                self._cond.notify_all()

    def wait_for(self, line: str, after: int = 0, timeout: float = 30.0) -> int:
        """Index of the first ``line`` at or after index ``after``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if self.lines[i] == line:
                        return i
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {line} after #{after} in {self.lines}")
                self._cond.wait(remaining)

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def reachable_dir(prefix: str) -> Path:
    """A fresh directory that other users can traverse (0711), outside ``/tmp`` (pytest's
    directories there are 0700, so a peer of another uid could not reach a socket)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/run"))
    base.chmod(0o711)
    return base


def two_groups() -> tuple[str, str]:
    """Two existing groups (not root's, not nobody's), standing in for the ``nvme-agent`` and
    the admin group: membership is the peer's own credentials, so any group will do."""
    names = [g.gr_name for g in sorted(grp.getgrall(), key=lambda g: g.gr_gid)]
    names = [n for n in names if grp.getgrnam(n).gr_gid not in (0, NOBODY)]
    if len(names) < 2:
        pytest.skip("needs two groups other than root and nogroup")
    return names[0], names[1]


class InProcess:
    """``Daemon`` running in a thread of this process; use as a context manager."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        *,
        policy: str = POLICY,
        load: Callable[[Path], Policy] = load_policy,
        group: str | None = None,
        watchdog_usec: int | None = None,
        intake: Any = None,
        **config: Any,
    ) -> None:
        self.base = reachable_dir("nvme-agent-test-")
        (self.base / "run").mkdir(mode=0o711)
        (self.base / "run").chmod(0o711)
        self.policy = self.base / "policy.yaml"
        self.policy.write_text(policy)
        self.notify = NotifyLog(self.base / "notify.sock")
        monkeypatch.setenv("NOTIFY_SOCKET", str(self.notify.path))
        if watchdog_usec is None:
            monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        else:  # read by the daemon when it starts, for this process
            monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
            monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        self.config = DaemonConfig(
            policy_path=self.policy,
            runtime_dir=self.base / "run",
            state_dir=self.base / "state",
            dry_run=True,
            log_target="stderr",
            group=group,
            **config,
        )
        self.load = load
        #: None: the machine's real udev; else an intake object standing in for it.
        self.intake = intake
        self.daemon: Daemon | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exit: int | BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def control_socket(self) -> str:
        return self.config.control_socket

    def start(self) -> InProcess:
        self.daemon = Daemon(self.config, intake=self.intake, load=self.load)
        self._thread = threading.Thread(target=self._main, name="daemon-loop", daemon=True)
        self._thread.start()
        self.notify.wait_for("READY=1")
        return self

    def _main(self) -> None:
        assert self.daemon is not None
        self.loop = asyncio.new_event_loop()
        try:
            self.exit = self.loop.run_until_complete(self.daemon.run(handle_signals=False))
        except BaseException as exc:  # reported by stop()
            self.exit = exc
        finally:
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the daemon's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Start ``coro`` on the daemon's loop; returns its concurrent future."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def request(self, payload: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        return request(self.control_socket, payload, timeout=timeout)

    def stop(self) -> int | BaseException | None:
        if self.daemon is not None and self.loop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.daemon.stop)
            self._thread.join(60)
        self.notify.close()
        shutil.rmtree(self.base, ignore_errors=True)
        return self.exit

    def __enter__(self) -> InProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a daemon that did not start leaves nothing behind either
            raise

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if isinstance(code, BaseException):
            raise code


#: A client that connects as whoever runs it and prints the answer (stdlib only, so that
#: Debian's python3 runs it as any user).
PEER = """\
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": exc.strerror}))
    sys.exit(0)
try:
    s.sendall(sys.argv[2].encode() + b"\\n")
except BrokenPipeError:
    pass  # refused before the request was read: the answer is there all the same
print(s.makefile().readline().strip() or "{}")
"""


def as_peer(
    socket_path: str,
    payload: dict[str, Any] | str,
    groups: tuple[int, ...] = (),
    uid: int = NOBODY,
    script: str = PEER,
) -> dict[str, Any]:
    """``payload`` sent by a child process of ``uid`` whose only groups are ``groups``."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    done = subprocess.run(
        ["/usr/bin/python3", "-c", script, socket_path, text],
        user=uid,
        group=NOBODY,
        extra_groups=list(groups),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@contextlib.contextmanager
def gate() -> Iterator[tuple[threading.Event, threading.Event]]:
    """(entered, release): a loader wrapped with :func:`gated` sets ``entered`` and waits
    for ``release``; released on exit, whatever happened."""
    entered, release = threading.Event(), threading.Event()
    try:
        yield entered, release
    finally:
        release.set()


def gated(
    entered: threading.Event, release: threading.Event, first_free: bool = True
) -> Callable[[Path], Policy]:
    """The real loader, made to wait for ``release`` (after the first call, the start's)."""
    calls = [0]

    def load(path: Path) -> Policy:
        calls[0] += 1
        if not (first_free and calls[0] == 1):
            entered.set()
            release.wait(120)
        return load_policy(path)

    return load
