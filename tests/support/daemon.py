"""The daemon under test: AgentProcess plus a cursor over its event stream."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from nvme_agent.harness.agent import AgentProcess, EventFeed

Record = dict[str, Any]

#: Policies refuse mount roots in system trees (``/tmp`` among them), so a test's mount root
#: lives below this directory instead of in pytest's ``tmp_path``.
TEST_MOUNT_TOP = "/run/media/nvme-agent-test"


def dry_mount_root(tmp_path: Path) -> Path:
    """A mount root for dry-run daemons: valid in a policy, never created (nothing runs)."""
    return Path(TEST_MOUNT_TOP) / f"dry-{os.getpid()}-{tmp_path.name}"


@contextlib.contextmanager
def real_mount_root() -> Iterator[Path]:
    """A fresh, empty mount root for real mounts; removed afterwards with ``rmdir`` only, so
    that a mount left behind by a failed test is never descended into."""
    os.makedirs(TEST_MOUNT_TOP, mode=0o755, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="real-", dir=TEST_MOUNT_TOP))
    try:
        yield root
    finally:
        for sub in root.iterdir():
            if not os.path.ismount(sub):
                with contextlib.suppress(OSError):
                    sub.rmdir()
        root.rmdir()  # fails loudly when a test left something behind
        with contextlib.suppress(OSError):
            os.rmdir(TEST_MOUNT_TOP)  # only when no other test still uses it


def is_type(kind: str, nsid: int | None = None) -> Callable[[Record], bool]:
    return lambda r: r.get("type") == kind and (nsid is None or r.get("nsid") == nsid)


def is_result(action: str, nsid: int | None = None) -> Callable[[Record], bool]:
    return lambda r: (
        r.get("type") == "action-result"
        and r.get("action") == action
        and (nsid is None or r.get("nsid") == nsid)
    )


class GatedProcess(AgentProcess):
    """The daemon run by ``gated_agent.py``: every policy load after the first waits until
    someone opens and closes the FIFO ``gate`` for writing."""

    def __init__(self, policy: Path, env: dict[str, str], workdir: Path, gate: Path) -> None:
        super().__init__(policy, env, workdir=workdir)
        self.gate = gate

    def command(self) -> list[str]:
        script = Path(__file__).with_name("gated_agent.py")
        return [sys.executable, str(script), str(self.policy), str(self.base), str(self.gate)]


class Agent:
    """The daemon under test plus a cursor over its event stream."""

    def __init__(
        self,
        policy: Path,
        workdir: Path,
        env: dict[str, str],
        *,
        dry_run: bool = True,
        extra_args: tuple[str, ...] = (),
        gate: Path | None = None,
    ) -> None:
        self.policy = policy
        self.workdir = workdir
        self.runtime_dir = workdir / "run"
        self.process = (
            AgentProcess(policy, env, dry_run=dry_run, workdir=workdir, extra_args=extra_args)
            if gate is None
            else GatedProcess(policy, env, workdir, gate)
        )
        self.feed: EventFeed | None = None
        self.cursor = 0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    def start(self) -> Self:
        workdir_sock = self.workdir / "notify.sock"
        if workdir_sock.exists():  # left by a killed predecessor
            workdir_sock.unlink()
        self.process.start()
        self.feed = EventFeed(self.process.events_socket)
        return self

    def wait_for(self, pred: Callable[[Record], bool], timeout: float = 30.0) -> Record:
        assert self.feed is not None
        index, record = self.feed.wait(pred, timeout, start=self.cursor)
        self.cursor = index + 1
        return record

    def wait_each(
        self, preds: list[Callable[[Record], bool]], timeout: float = 30.0
    ) -> list[Record]:
        """One record for each predicate, in whatever order they arrive (plans of different
        namespaces run in parallel); the cursor moves past the last of them."""
        assert self.feed is not None
        start, last, found = self.cursor, self.cursor - 1, []
        for pred in preds:
            index, record = self.feed.wait(pred, timeout, start=start)
            found.append(record)
            last = max(last, index)
        self.cursor = last + 1
        return found

    def collect(self, pred: Callable[[Record], bool], count: int, timeout: float) -> list[Record]:
        return [self.wait_for(pred, timeout) for _ in range(count)]

    @property
    def seen(self) -> list[Record]:
        assert self.feed is not None
        return self.feed.snapshot()

    def wait_notify(self, line: str, timeout: float = 30.0) -> None:
        self.process.wait_notify(line, timeout)

    def control(self, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        return self.process.request(payload, timeout)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def stop(self) -> int | None:
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        return self.process.stop()
