"""Never touch what is not the agent's: the root filesystem's device and anything in fstab.

The agent mounts hot-plugged namespaces only.  A device that backs ``/`` (or is the disk that
holds the root partition), a device an ``/etc/fstab`` line names (by path, ``UUID=``,
``LABEL=``, ``PARTUUID=``, ``PARTLABEL=`` or ``ID=``), a device claimed by a stacking driver
(dm, md, ...) and an fstab mount point are refused, whatever the policy says.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nvme_agent.actions import mountinfo
from nvme_agent.actions.outcome import ActionError
from nvme_agent.actions.probe import FSTAB_TAGS, fstab_form

FSTAB = "/etc/fstab"
SYSFS_DEV_BLOCK = "/sys/dev/block"
#: Where fstab's ``ID=`` tag is looked up (mount(8): "hardware block device ID as generated
#: by udevd"): the link of that name, as udev and libblkid encode it.
BY_ID = "/dev/disk/by-id"
_DEVNODE_SAFE = frozenset(string.ascii_letters + string.digits + "#+-.:=@_")


def devnode_name(value: str) -> str:
    """``value`` as a ``/dev/disk/by-*`` link name: libblkid's ``blkid_encode_string`` (and
    udev's ``encode_devnode_name``) keep letters, digits, ``#+-.:=@_`` and non-ASCII text,
    and write every other byte as ``\\xNN`` (so a ``/`` cannot leave the directory)."""
    out: list[str] = []
    for ch in value:
        if ch in _DEVNODE_SAFE or (not ch.isascii() and not 0xDC80 <= ord(ch) <= 0xDCFF):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


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

    Paths are parameters so tests can point them at fixtures; a device's identifiers come
    from the caller's probe (:meth:`check_device`).
    """

    def __init__(
        self,
        *,
        fstab: str = FSTAB,
        mountinfo_path: str = mountinfo.MOUNTINFO,
        sysfs: str = SYSFS_DEV_BLOCK,
        by_id: str = BY_ID,
    ) -> None:
        self.fstab = fstab
        self.by_id = by_id
        self.mountinfo_path = mountinfo_path
        self.sysfs = sysfs

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

    def check_device(
        self,
        source: str,
        *,
        identifiers: Callable[[], Mapping[str, str]],
        for_mount: bool = True,
    ) -> None:
        """Raise :class:`ActionError` if ``source`` is the root device or named in fstab.

        ``identifiers``: the fstab tags the device can be named by, in blkid's ``export``
        encoding (a mount passes its own :class:`~nvme_agent.actions.probe.DeviceProbe`'s);
        asked only when fstab names a device by tag.  When they cannot be read, the device is
        refused: it may be the one fstab names.
        """
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
            value = value.strip("\"'")
            if sep and tag in FSTAB_TAGS:
                if ids is None:
                    ids = self._identifiers(source, dev, identifiers, where)
                have = ids.get(tag)
                # blkid's encoding is not reversible: fstab's value is compared encoded.
                if have is not None and have.lower() == fstab_form(value).lower():
                    raise ActionError(f"refusing {source}: listed in {where} as {entry.spec}")
                continue
            if sep and tag == "ID":
                path = os.path.join(self.by_id, devnode_name(value))
            elif entry.spec.startswith("/"):
                path = entry.spec
            else:
                continue
            if os.path.realpath(path) == real or (
                dev is not None and mountinfo.device_number(path) == dev
            ):
                raise ActionError(f"refusing {source}: listed in {where} as {entry.spec}")

    def _identifiers(
        self,
        source: str,
        dev: str | None,
        identifiers: Callable[[], Mapping[str, str]],
        where: str,
    ) -> Mapping[str, str]:
        if dev is None:
            return {}  # not a block device: fstab cannot name it by tag
        try:
            return identifiers()
        except ActionError as exc:
            raise ActionError(
                f"refusing {source}: cannot tell whether {where} names it: {exc}"
            ) from exc

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
