"""Kernel device names and devpaths: what a name or a path says about an NVMe device.

Names are only ever used to relate devices that the kernel names after each other (a hidden
path ``nvme0c1n2`` and its head ``nvme0n2``, a char device ``ng0n2`` and its disk ``nvme0n2``);
namespaces themselves are never keyed on a name (``nvme0nN`` follows attach order).
"""

from __future__ import annotations

import re

#: Visible namespace disks: nvme<subsys-or-ctrl instance>n<ns index>.
DISK_RE = re.compile(r"^nvme(\d+)n(\d+)$")
#: Hidden per-path devices of native multipath: nvme<subsys>c<ctrl>n<ns index>.
PATH_RE = re.compile(r"^nvme(\d+)c(\d+)n(\d+)$")
PART_RE = re.compile(r"^(nvme\d+n\d+)p(\d+)$")
GENERIC_RE = re.compile(r"^ng(\d+)n(\d+)$")
CTRL_RE = re.compile(r"^nvme(\d+)$")


def parent_dir(devpath: str) -> str:
    return devpath.rsplit("/", 1)[0]


def path_segment(devpath: str, after: str) -> str | None:
    """The path component following ``after`` (e.g. 'nvme0' in '.../nvme/nvme0/nvme0n1')."""
    parts = devpath.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == after:
            return parts[i + 1]
    return None


def controller_of(devpath: str) -> str | None:
    """The controller a per-controller disk or a hidden path sits under.

    Its parent directory: ``/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1`` (PCIe) and
    ``/devices/virtual/nvme-fabrics/ctl/nvme1/nvme1n1`` (NVMe-oF, no ``nvme`` class directory).
    """
    parts = devpath.rsplit("/", 2)
    if len(parts) == 3 and CTRL_RE.match(parts[1]):
        return parts[1]
    return path_segment(devpath, "nvme")


def is_multipath_head(devpath: str) -> bool:
    """A namespace head of native multipath lives under its subsystem, not a controller."""
    return "/nvme-subsystem/" in devpath


def hidden_path(name: str) -> tuple[str, str] | None:
    """(head name, controller name) of a hidden path disk ``nvme<S>c<C>n<N>``."""
    match = PATH_RE.match(name)
    if match is None:
        return None
    return f"nvme{match.group(1)}n{match.group(3)}", f"nvme{match.group(2)}"


def generic_disk(devpath: str) -> str | None:
    """The devpath of the disk beside a generic char device (``ng0n2`` -> ``nvme0n2``)."""
    match = GENERIC_RE.match(devpath.rsplit("/", 1)[-1])
    if match is None:
        return None
    return f"{parent_dir(devpath)}/nvme{match.group(1)}n{match.group(2)}"


def generic_of(disk_devpath: str) -> str | None:
    """The devpath of the generic char device beside a disk (``nvme0n2`` -> ``ng0n2``)."""
    match = DISK_RE.match(disk_devpath.rsplit("/", 1)[-1])
    if match is None:
        return None
    return f"{parent_dir(disk_devpath)}/ng{match.group(1)}n{match.group(2)}"
