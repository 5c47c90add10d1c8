"""Never touch what is not the agent's: the root filesystem's device and anything in fstab.

The agent mounts hot-plugged namespaces only.  A device that backs ``/`` (or is the disk that
holds the root partition), a device an ``/etc/fstab`` line names (by path, ``UUID=``, ``LABEL=``,
``PARTUUID=`` or ``PARTLABEL=``), a device claimed by a stacking driver (dm, md, ...) and an
fstab mount point are refused, whatever the policy says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nvme_agent.actions import mountinfo
from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.proc import ToolRun, run_tool, tool_error
from nvme_agent.topology.text import escape

log = logging.getLogger("nvme_agent.actions")

FSTAB = "/etc/fstab"
SYSFS_DEV_BLOCK = "/sys/dev/block"

#: fstab source prefixes and the blkid tag each is compared with.
_TAGS = {"UUID": "UUID", "LABEL": "LABEL", "PARTUUID": "PARTUUID", "PARTLABEL": "PARTLABEL"}


@dataclass(frozen=True, slots=True)
class FstabEntry:
    """One non-comment line of fstab(5)."""

    spec: str
    file: str
    vfstype: str
    options: tuple[str, ...]
    line_no: int


def parse_fstab(text: str) -> list[FstabEntry]:
    """fstab entries; malformed lines (fewer than two fields) are ignored."""
    out: list[FstabEntry] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        out.append(
            FstabEntry(
                spec=mountinfo.unescape(fields[0]),
                file=os.path.normpath(mountinfo.unescape(fields[1])),
                vfstype=fields[2] if len(fields) > 2 else "auto",
                options=tuple(fields[3].split(",")) if len(fields) > 3 else (),
                line_no=n,
            )
        )
    return out


def probe_ids(devnode: str, timeout: float = 10.0) -> dict[str, str]:
    """UUID/LABEL/PARTUUID/PARTLABEL/TYPE of a block device from ``blkid`` (no cache)."""
    try:
        proc = run_tool(["blkid", "-c", "/dev/null", "-o", "export", devnode], Deadline(timeout))
    except ActionError as exc:
        log.warning("blkid %s failed: %s", escape(devnode), exc)
        return {}
    ids: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            ids[key] = value
    return ids


#: ``blkid -p`` exit statuses (blkid(8)).
_BLKID_NOTHING = 2
_BLKID_AMBIVALENT = 8


def start_probe(devnode: str, deadline: Deadline) -> ToolRun:
    """Start blkid's low-level probe of what the device holds *now* (no cache, no udev
    database); :func:`probed_fstype` reads its answer.

    It runs in a child process, not through libblkid in the daemon: the probe parses what
    the disk carries, and a crash or a hang there must not take the daemon with it.
    """
    return ToolRun(["blkid", "-p", "-o", "export", devnode], deadline)


def probed_fstype(probe: ToolRun, devnode: str) -> str:
    """The filesystem type :func:`start_probe` found.

    Raises :class:`ActionError` when the probe finds nothing, finds several signatures
    (ambivalent: the kernel might see another type than the plan), or fails.
    """
    proc = probe.result()
    if proc.returncode == _BLKID_NOTHING:
        raise ActionError(f"{devnode} holds no filesystem signature now")
    if proc.returncode == _BLKID_AMBIVALENT:
        raise ActionError(f"{devnode} carries several filesystem signatures (ambivalent probe)")
    if proc.returncode != 0:
        raise ActionError(f"probing {devnode} failed: {tool_error(proc)}")
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key == "TYPE" and value:
            return value
    raise ActionError(f"{devnode} holds no filesystem type blkid could name")


def whole_disk(dev: str, sysfs: str = SYSFS_DEV_BLOCK) -> str | None:
    """``major:minor`` of the disk a partition ``dev`` belongs to (None if not a partition)."""
    base = os.path.join(sysfs, dev)
    if not os.path.exists(os.path.join(base, "partition")):
        return None
    try:
        with open(os.path.join(base, "..", "dev"), encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def has_holders(dev: str, sysfs: str = SYSFS_DEV_BLOCK) -> list[str]:
    """Kernel holders of a block device (device-mapper, md, bcache...)."""
    try:
        return sorted(os.listdir(os.path.join(sysfs, dev, "holders")))
    except OSError:
        return []


class Guard:
    """Refuses devices and mount points the agent must never touch.

    Paths are parameters so tests can point them at fixtures; ``probe`` reads a device's
    identifiers (``blkid`` by default).
    """

    def __init__(
        self,
        *,
        fstab: str = FSTAB,
        mountinfo_path: str = mountinfo.MOUNTINFO,
        sysfs: str = SYSFS_DEV_BLOCK,
        probe: Callable[[str], Mapping[str, str]] = probe_ids,
    ) -> None:
        self.fstab = fstab
        self.mountinfo_path = mountinfo_path
        self.sysfs = sysfs
        self.probe = probe

    def _fstab(self) -> list[FstabEntry]:
        try:
            with open(self.fstab, encoding="utf-8", errors="surrogateescape") as fh:
                return parse_fstab(fh.read())
        except FileNotFoundError:
            return []

    def root_devices(self) -> set[str]:
        """``major:minor`` of the root filesystem's device and of the disk that holds it."""
        devs: set[str] = set()
        for entry in mountinfo.read_some(at={"/"}, path=self.mountinfo_path):
            if entry.mountpoint == "/":
                devs.add(entry.dev)
                disk = whole_disk(entry.dev, self.sysfs)
                if disk:
                    devs.add(disk)
        return devs

    def check_device(self, source: str, *, for_mount: bool = True) -> None:
        """Raise :class:`ActionError` if ``source`` is the root device or named in fstab."""
        dev = mountinfo.device_number(source)
        if dev is not None and dev in self.root_devices():
            raise ActionError(f"refusing {source} ({dev}): it backs the root filesystem")
        if for_mount and dev is not None:
            holders = has_holders(dev, self.sysfs)
            if holders:
                raise ActionError(
                    f"refusing {source} ({dev}): claimed by {', '.join(holders)} (dm/md/...)"
                )
        ids: Mapping[str, str] | None = None
        real = os.path.realpath(source)
        for entry in self._fstab():
            where = f"{self.fstab}:{entry.line_no}"
            tag, sep, value = entry.spec.partition("=")
            if sep and tag in _TAGS:
                if ids is None:
                    ids = self.probe(source) if dev is not None else {}
                value = value.strip("\"'")
                have = ids.get(_TAGS[tag])
                if have is not None and have.lower() == value.lower():
                    raise ActionError(f"refusing {source}: listed in {where} as {entry.spec}")
            elif entry.spec.startswith("/") and (
                os.path.realpath(entry.spec) == real
                or (dev is not None and mountinfo.device_number(entry.spec) == dev)
            ):
                raise ActionError(f"refusing {source}: listed in {where} as {entry.spec}")

    def check_target(self, target: str) -> None:
        """Raise :class:`ActionError` if ``target`` is ``/`` or an fstab mount point."""
        norm = os.path.normpath(target)
        if norm == "/":
            raise ActionError("refusing to use / as a mount point")
        for entry in self._fstab():
            if entry.file == norm:
                raise ActionError(
                    f"refusing mount point {target}: it is in {self.fstab}:{entry.line_no}"
                )
