"""Parse ``/proc/self/mountinfo`` (see proc(5)), including its octal escapes."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Set
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo the kernel's ``\\040``-style escaping of space, tab, newline and backslash."""
    if "\\" not in field:  # nearly every field: no regex pass for it
        return field
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def dev(self) -> str:
        """``major:minor`` of the mounted device (what ``st_dev`` of its files is)."""
        return f"{self.major}:{self.minor}"


def parse_line(line: str) -> MountEntry:
    """Parse one mountinfo line; raises ValueError on a malformed one."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
        major, minor = fields[2].split(":")
        return MountEntry(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            major=int(major),
            minor=int(minor),
            root=unescape(fields[3]),
            mountpoint=unescape(fields[4]),
            options=tuple(fields[5].split(",")),
            fstype=unescape(fields[sep + 1]),
            source=unescape(fields[sep + 2]),
            super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
        )
    except (ValueError, IndexError) as exc:
        raise ValueError(f"malformed mountinfo line {line!r}: {exc}") from exc


def parse(text: str) -> list[MountEntry]:
    """Every entry of a mountinfo text, in kernel order (later entries stack on earlier)."""
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read(path: str = MOUNTINFO) -> list[MountEntry]:
    """The current mount table of this process's mount namespace."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return parse(fh.read())


def parse_some(
    text: str, *, devs: Set[str] = frozenset(), at: Set[str] = frozenset()
) -> list[MountEntry]:
    """The entries of a mountinfo text whose device is in ``devs`` or whose mount point is in
    ``at``, in kernel order; other lines are only split, not parsed (a full parse costs about
    10 us a line, and a mount reads the table three times)."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ", 5)
        if len(fields) < 6:
            if line.strip():
                parse_line(line)  # raises, as a full parse would
            continue
        if fields[2] in devs or unescape(fields[4]) in at:
            out.append(parse_line(line))
    return out


def read_some(
    *, devs: Set[str] = frozenset(), at: Set[str] = frozenset(), path: str = MOUNTINFO
) -> list[MountEntry]:
    """:func:`parse_some` of the current mount table of this process's mount namespace."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return parse_some(fh.read(), devs=devs, at=at)


def device_number(path: str) -> str | None:
    """``major:minor`` of a block device node (following symlinks), or None if not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def mounts_of(entries: list[MountEntry], dev: str) -> list[MountEntry]:
    """Mounts of the block device ``major:minor`` (bind mounts of it included)."""
    return [e for e in entries if e.dev == dev]


def top_mount_at(entries: list[MountEntry], mountpoint: str) -> MountEntry | None:
    """The visible (last stacked) mount at ``mountpoint``, or None if it is not a mountpoint."""
    here = [e for e in entries if e.mountpoint == mountpoint]
    # A mount stacked on another at the same place has the covered mount as its parent.
    covered = {e.parent_id for e in here}
    tops = [e for e in here if e.mount_id not in covered]
    return tops[-1] if tops else None
