"""Real mode: back fake namespaces with loop devices holding real filesystems.

A fake ``/dev/nvme0n1`` in the test bed is a regular file that only the preload reports as a
block device; the kernel cannot mount it.  So in real mode each namespace gets a sparse image
file, ``mkfs.<fs> -L <label>``, ``losetup``, and its udev ``DEVNAME`` points at the loop
device: the daemon's mount(8) then reaches a real block device.

:class:`RealBacking` is a context manager that undoes everything on exit (also after an
exception or Ctrl-C): it unmounts whatever is still mounted below its mount root, detaches its
loop devices and deletes its images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from nvme_agent.harness.expect import mounted_targets
from nvme_agent.harness.layout import Layout, NamespaceConfig

log = logging.getLogger(__name__)

MKFS: dict[str, list[str]] = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-L"],
    "ext3": ["mkfs.ext3", "-q", "-F", "-L"],
    "ext2": ["mkfs.ext2", "-q", "-F", "-L"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-L"],
    "btrfs": ["mkfs.btrfs", "-q", "-f", "-L"],
    "vfat": ["mkfs.vfat", "-n"],
}
#: xfs refuses filesystems smaller than 300 MiB; images are sparse, so this costs nothing.
MIN_IMAGE = {"xfs": 300 << 20}


class RealModeError(RuntimeError):
    """Real mode cannot run here (not root, missing tool) or a setup command failed."""


def check_real_mode() -> None:
    """Raise :class:`RealModeError` unless real mode can work on this machine."""
    if os.geteuid() != 0:
        raise RealModeError("--real needs root (loop devices and mounts); use --dry-run")
    if not Path("/dev/loop-control").exists():
        raise RealModeError("no /dev/loop-control: the loop driver is not available")


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError as exc:
        raise RealModeError(f"{argv[0]} not found: {exc}") from exc
    if done.returncode != 0:
        raise RealModeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


class RealBacking:
    """Loop devices with real filesystems for fake namespaces; cleans up on exit."""

    def __init__(self, image_dir: Path, mount_root: str) -> None:
        self.image_dir = image_dir
        self.mount_root = mount_root.rstrip("/")
        self.loops: dict[tuple[str, int], tuple[str, Path]] = {}
        self.retired: list[tuple[str, Path]] = []

    def __enter__(self) -> RealBacking:
        check_real_mode()
        self.image_dir.mkdir(parents=True, exist_ok=True)
        return self

    def back(
        self, ns: NamespaceConfig, say: Callable[[dict[str, Any], str | None], None]
    ) -> NamespaceConfig:
        """A loop device for ``ns`` (mkfs'd when it has a filesystem); returns ``ns`` with
        ``devname`` set to it."""
        if ns.partitions:
            raise RealModeError(f"nsid {ns.nsid}: partitions are not supported with --real")
        key = (ns.ctrl, ns.nsid)
        if key in self.loops:
            # a hot-swap: the old image goes away once the fake namespace is detached
            self.retired.append(self.loops.pop(key))
        image = self.image_dir / f"{ns.ctrl}n{ns.nsid}-g{ns.generation}.img"
        size = max(ns.size_bytes, MIN_IMAGE.get(ns.fs or "", 0))
        with open(image, "wb") as f:
            f.truncate(size)
        if ns.fs:
            if ns.fs not in MKFS:
                raise RealModeError(f"nsid {ns.nsid}: cannot make a {ns.fs} filesystem")
            _run([*MKFS[ns.fs], ns.label or f"ns{ns.nsid}", str(image)])
        loop = _run(["losetup", "--find", "--show", str(image)])
        self.loops[key] = (loop, image)
        say(
            {
                "type": "real-backing",
                "nsid": ns.nsid,
                "device": loop,
                "image": str(image),
                "fs": ns.fs,
            },
            f"          nsid {ns.nsid} backed by {loop} ({ns.fs or 'blank'}, {size >> 20} MiB "
            "sparse image)",
        )
        return dataclasses.replace(ns, devname=loop)

    def release_detached(self, layout: Layout) -> None:
        """Detach loop devices of namespaces the layout no longer has through any path
        (after a remove, a controller gone)."""
        for key in [k for k in self.loops if not layout.namespace_present(*k)]:
            self.retired.append(self.loops.pop(key))
        for loop, image in self.retired:
            self._release(loop, image, lazy=True)
        self.retired.clear()

    def _release(self, loop: str, image: Path, *, lazy: bool) -> None:
        # With autoclear the loop goes away when its last user (a lazy mount) does.
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()

    def cleanup(self) -> list[str]:
        """Unmount everything below the mount root, detach loops, delete images."""
        problems: list[str] = []
        for target in sorted(
            (
                t
                for t in mounted_targets()
                if t == self.mount_root or t.startswith(self.mount_root + "/")
            ),
            key=len,
            reverse=True,
        ):
            done = subprocess.run(["umount", target], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                lazy = subprocess.run(
                    ["umount", "-l", target], capture_output=True, text=True, check=False
                )
                if lazy.returncode != 0:
                    problems.append(f"cannot unmount {target}: {lazy.stderr.strip()}")
        for loop, image in [*self.loops.values(), *self.retired]:
            self._release(loop, image, lazy=False)
        self.loops.clear()
        self.retired.clear()
        for problem in problems:
            log.error("%s", problem)
        return problems

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
