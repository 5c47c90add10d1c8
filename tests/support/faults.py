"""Fault injection around the real daemon (issue 16): a fake journald socket that keeps every
entry with its fields, the daemon in a mount namespace of its own (``fault_agent.py``), and
disks that hang (``slowdisk.py``, FUSE under a loop device).
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from nvme_agent.harness.agent import AgentProcess
from support.daemon import Agent
from support.journald import parse_native as native_fields

Entry = dict[str, str]
HERE = Path(__file__).resolve().parent


def parse_native(data: bytes) -> Entry:
    """One journald datagram, its values as text."""
    return {k: v.decode("utf-8", "replace") for k, v in native_fields(data).items()}


class JournalCatcher:
    """A datagram socket where journald's would be; keeps every entry in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(str(path))
        self.entries: list[Entry] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="journal", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self.entries.append(parse_native(data))
                self._cond.notify_all()

    def wait(self, pred: Callable[[Entry], bool], timeout: float = 60.0) -> Entry:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in self.entries:
                    if pred(entry):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such journal entry within {timeout}s")
                self._cond.wait(left)

    def matching(self, pred: Callable[[Entry], bool]) -> list[Entry]:
        with self._cond:
            return [e for e in self.entries if pred(e)]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


class FaultProcess(AgentProcess):
    """The real daemon through ``fault_agent.py`` in a private mount namespace."""

    def __init__(self, *args: Any, mounts: list[list[str]], preload: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.env["NVME_AGENT_TEST_MOUNTS"] = json.dumps(mounts)
        # unshare, env and mount(8) run without the bed's preload; the daemon gets it
        # through env(1) (and ``preload``, e.g. libfaketime, after umockdev's).
        self.inner = {k: self.env.pop(k) for k in ("LD_PRELOAD", "UMOCKDEV_DIR") if k in self.env}
        if preload:
            self.inner["LD_PRELOAD"] = f"{self.inner.get('LD_PRELOAD', '')}:{preload}".strip(":")

    def command(self) -> list[str]:
        env_args = [f"{k}={v}" for k, v in self.inner.items()]
        inner = [sys.executable, str(HERE / "fault_agent.py"), *super().command()[3:]]
        return ["unshare", "-m", "--propagation", "private", "env", *env_args, *inner]

    def mountinfo(self) -> str:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/mountinfo").read_text()

    def root_path(self, path: str | Path) -> Path:
        """``path`` as the daemon sees it (its mount namespace)."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / str(path).lstrip("/")


def journal_mounts(catcher: JournalCatcher | None, *more: list[str]) -> list[list[str]]:
    """A private ``/run/systemd`` with our journald socket in it (``None``: no journal)."""
    steps = [["tmpfs", "/run/systemd"], ["mkdir", "/run/systemd/journal"]]
    if catcher is not None:
        target = "/run/systemd/journal/socket"
        steps += [["touch", target], ["bind", str(catcher.path), target]]
    return steps + list(more)


class FaultAgent(Agent):
    """An :class:`Agent` whose daemon runs as a :class:`FaultProcess`."""

    process: FaultProcess


def fault_agent(
    policy: Path,
    workdir: Path,
    env: dict[str, str],
    mounts: list[list[str]],
    *,
    preload: str = "",
    extra: tuple[str, ...] = (),
) -> FaultAgent:
    agent = FaultAgent(policy, workdir, env, dry_run=False)
    agent.process = FaultProcess(
        policy,
        env,
        dry_run=False,
        workdir=workdir,
        extra_args=extra,
        mounts=mounts,
        preload=preload,
    )
    return agent


# --------------------------------------------------------------------------- hanging disks
class SlowDisk:
    """``slowdisk.py`` serving ``image`` at ``mountpoint/disk`` and a loop device over it."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        mountpoint.mkdir()
        self.mountpoint = mountpoint
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(HERE / "slowdisk.py"), str(image), str(mountpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        self._out: IO[str] = self.proc.stdout
        self.expect("ready", 30)
        self.loop = subprocess.run(
            ["losetup", "--find", "--show", str(mountpoint / "disk")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self._out], [], [], timeout)
        if not ready:
            raise TimeoutError(f"slowdisk: no {key!r} within {timeout}s")
        line = self._out.readline()
        reply: dict[str, Any] = json.loads(line) if line else {}
        if key not in reply:
            raise AssertionError(f"slowdisk said {line!r}, expected {key!r}")
        return reply

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect("done", 30)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("fail")
        subprocess.run(["losetup", "-d", self.loop], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)
        self.proc.kill()
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.mountpoint.rmdir()


@contextlib.contextmanager
def slow_disk(image: Path, mountpoint: Path) -> Iterator[SlowDisk]:
    if shutil.which("fusermount") is None or not Path("/dev/fuse").exists():
        import pytest

        pytest.skip("needs FUSE (/dev/fuse, the Debian packages fuse and python3-fusepy)")
    disk = SlowDisk(image, mountpoint)
    try:
        yield disk
    finally:
        disk.close()
