"""Shared helpers for the action tests: loop devices with real filesystems, FIFO gates.

Imported by tests/test_actions_*.py and tests/test_runner*.py.  Every loop device, mount and
directory made here is cleaned up by the fixture, also when a test fails.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nvme_agent.actions import mountinfo
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.policy.plan import ActionResult
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Identity, Namespace

IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: creates loop devices and mounts real filesystems"
)


def _have_loop() -> bool:
    return IS_ROOT and os.path.exists("/dev/loop-control") and shutil.which("losetup") is not None


needs_loop = pytest.mark.skipif(
    not _have_loop(), reason="needs root and loop device support (/dev/loop-control, losetup)"
)

#: mkfs.xfs refuses filesystems smaller than 300 MiB; the image is sparse.
SIZES = {"ext4": 64 << 20, "xfs": 320 << 20}


@dataclass(frozen=True)
class Loop:
    """A loop device with a fresh filesystem on a sparse image."""

    dev: str
    image: Path
    fstype: str

    @property
    def devnum(self) -> str:
        num = mountinfo.device_number(self.dev)
        assert num is not None
        return num


def _mounted_under(prefix: str) -> list[str]:
    return [
        e.mountpoint
        for e in mountinfo.read()
        if e.mountpoint == prefix or e.mountpoint.startswith(prefix.rstrip("/") + "/")
    ]


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[..., Loop]]:
    """Factory ``loops(fstype, size=None, label=None) -> Loop``; cleans everything up."""
    made: list[Loop] = []

    def make(fstype: str, size: int | None = None, label: str | None = None) -> Loop:
        image = tmp_path / f"img{len(made)}-{fstype}.img"
        with open(image, "wb") as fh:
            fh.truncate(size or SIZES[fstype])
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        loop = Loop(dev, image, fstype)
        made.append(loop)
        argv = ["mkfs.ext4", "-q", "-F"] if fstype == "ext4" else ["mkfs.xfs", "-q", "-f"]
        if label:
            argv += ["-L", label]
        subprocess.run([*argv, dev], check=True, capture_output=True)
        return loop

    try:
        yield make
    finally:
        # Lazy-detach whatever is still mounted below the test dir or from our loops.
        devnums = {f"{7}:{int(lp.dev.removeprefix('/dev/loop'))}" for lp in made}
        for mp in sorted(
            set(_mounted_under(str(tmp_path)))
            | {e.mountpoint for e in mountinfo.read() if e.dev in devnums},
            key=len,
            reverse=True,
        ):
            subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
        for lp in made:
            subprocess.run(["losetup", "-d", lp.dev], check=False, capture_output=True)
            lp.image.unlink(missing_ok=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The mount root of the action tests (made by the first mount)."""
    return tmp_path / "mnt"


@pytest.fixture
def ledger(tmp_path: Path) -> MountLedger:
    return MountLedger(str(tmp_path / "state" / "mounts.json"))


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    """A guard with an empty fstab of its own (the host's is not the tests' business)."""
    fstab = tmp_path / "fstab"
    fstab.write_text("# empty test fstab\n")
    return Guard(fstab=str(fstab))


def loop_attached(dev: str) -> bool:
    """True while the loop device still has a backing file."""
    name = os.path.basename(dev)
    return os.path.exists(f"/sys/block/{name}/loop/backing_file")


def change(kind: ChangeType, nsid: int = 1, reason: str | None = None) -> Change:
    """A minimal change for namespace ``nsid``."""
    ns = Namespace(
        identity=Identity.derive(
            uuid=None, nguid=None, eui64=None, wwid=None, subsysnqn="nqn.test", nsid=nsid
        ),
        nsid=nsid,
        name=f"nvme0n{nsid}",
        devpath=f"/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n{nsid}",
        devnode=f"/dev/nvme0n{nsid}",
        subsysnqn="nqn.test",
        controllers=("nvme0",),
    )
    return Change(type=kind, namespace=ns, reason=reason)


class Gate:
    """Holds a hook running until the test releases it, and tells the test it started.

    The hook (``argv``) writes one line into the ``started`` FIFO, then blocks reading the
    ``release`` FIFO.  No sleeps: both sides block on the FIFOs.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.started = directory / f"{name}.started"
        self.release_path = directory / f"{name}.release"
        os.mkfifo(self.started)
        os.mkfifo(self.release_path)
        # Keep a reader open so the hook's write never blocks and never hits ENXIO.
        self._rfd = os.open(self.started, os.O_RDONLY | os.O_NONBLOCK)
        # Linux lets a FIFO be opened read-write without blocking: the hook's open of the
        # release FIFO then never blocks, and its read waits for our line.
        self._wfd = os.open(self.release_path, os.O_RDWR)
        self._buf = b""

    @property
    def argv(self) -> tuple[str, ...]:
        script = 'echo "$1" > "$2"; read x < "$3"'
        return ("sh", "-c", script, "gate", self.name, str(self.started), str(self.release_path))

    def wait_started(self, timeout: float) -> bool:
        """True once the hook has written its line (within ``timeout`` seconds)."""
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self._rfd], [], [], timeout)
            if not ready:
                return False
            chunk = os.read(self._rfd, 4096)
            self._buf += chunk
        return True

    def release(self) -> None:
        """Let the hook finish (its ``read`` returns)."""
        os.write(self._wfd, b"go\n")

    def close(self) -> None:
        os.close(self._rfd)
        os.close(self._wfd)


WAIT = 20.0  # generous bound for every wait on a real signal


class Results:
    """Collects on_result calls (from worker threads) and lets tests wait for a count."""

    def __init__(self) -> None:
        self.items: list[ActionResult] = []
        self.cond = threading.Condition()

    def __call__(self, result: ActionResult) -> None:
        with self.cond:
            self.items.append(result)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT) -> list[ActionResult]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)

    def of(self, key: str) -> list[ActionResult]:
        with self.cond:
            return [r for r in self.items if r.plan_key == key]
