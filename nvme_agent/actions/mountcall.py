"""mount(2) called directly, for the mounts that need nothing mount(8) adds.

mount(8) costs an exec plus libmount's own work (reading mountinfo, locking utab, parsing the
options) on every mount: about twice what the kernel's mount of a small ext4 takes (issue 13).
The agent calls mount(2) itself only when mount(8) would do nothing but call it:

* every option is a VFS flag of :data:`FLAGS` (the one table of the ``MS_*`` flags the agent
  sets itself; libmount's table for those names is the same);
* the filesystem type is a plain kernel type name with no ``mount.TYPE`` helper in mount(8)'s
  helper directories (a helper such as ``mount.ntfs-3g`` or ``mount.fuse`` would be run by
  mount(8) instead of the kernel).

Anything else (a filesystem option such as ``errors=remount-ro``, a userspace one such as
``nofail`` or ``x-*``, a helper) goes to mount(8) unchanged, as before: nothing is guessed,
turned into kernel data or dropped.  The caller also hands a failed mount(2) to mount(8), so
its behaviour on errors (its read-only retry, its messages) stays what it was.

The deadline of the action cannot interrupt mount(2) in the worker thread; it could not
interrupt mount(8) waiting in the kernel either (the killed child is waited for), and the
mounts taken this way are of block filesystems whose kernel waits are uninterruptible anyway.
"""

from __future__ import annotations

import ctypes
import os
import re

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_SILENT = 0x8000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

#: option -> (MS_* flag, whether the option sets it (True) or clears it (False)); as in
#: libmount's ``linux_flags`` map.  A later option overrides an earlier one, as in mount(8).
FLAGS: dict[str, tuple[int, bool]] = {
    "ro": (MS_RDONLY, True),
    "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True),
    "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True),
    "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True),
    "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True),
    "async": (MS_SYNCHRONOUS, False),
    "dirsync": (MS_DIRSYNC, True),
    "nosymfollow": (MS_NOSYMFOLLOW, True),
    "symfollow": (MS_NOSYMFOLLOW, False),
    "noatime": (MS_NOATIME, True),
    "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True),
    "diratime": (MS_NODIRATIME, False),
    "silent": (MS_SILENT, True),
    "loud": (MS_SILENT, False),
    "relatime": (MS_RELATIME, True),
    "norelatime": (MS_RELATIME, False),
    "iversion": (MS_I_VERSION, True),
    "noiversion": (MS_I_VERSION, False),
    "strictatime": (MS_STRICTATIME, True),
    "nostrictatime": (MS_STRICTATIME, False),
    "lazytime": (MS_LAZYTIME, True),
    "nolazytime": (MS_LAZYTIME, False),
}

#: Where mount(8) looks for ``mount.TYPE`` helpers (libmount's FS_SEARCH_PATH), and /usr/sbin
#: for systems where /sbin is not merged into it.
HELPER_DIRS = ("/sbin", "/sbin/fs.d", "/sbin/fs", "/usr/sbin")

#: A kernel filesystem type name; anything else (``fuse.sshfs``, ...) is mount(8)'s business.
_KERNEL_TYPE = re.compile(r"[a-z0-9_]+\Z")


def flags_of(options: list[str] | tuple[str, ...]) -> int | None:
    """The ``MS_*`` flags the options ask for, or None when one of them is not a VFS flag."""
    flags = 0
    for option in options:
        known = FLAGS.get(option)
        if known is None:
            return None
        bit, sets = known
        flags = flags | bit if sets else flags & ~bit
    return flags


def has_helper(fstype: str, dirs: tuple[str, ...] = HELPER_DIRS) -> bool:
    """Whether mount(8) would run a helper (or treat the type as other than a kernel type)."""
    if not _KERNEL_TYPE.match(fstype):
        return True
    return any(os.path.lexists(os.path.join(d, f"mount.{fstype}")) for d in dirs)


def direct_flags(fstype: str, options: list[str] | tuple[str, ...]) -> int | None:
    """The flags for a direct mount(2), or None when the mount must go through mount(8)."""
    flags = flags_of(options)
    if flags is None or has_helper(fstype):
        return None
    return flags


_libc = ctypes.CDLL(None, use_errno=True)
_mount = _libc.mount
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_mount.restype = ctypes.c_int


def mount(source: str, target: str, fstype: str, flags: int) -> None:
    """mount(2) with no filesystem data; raises OSError with the kernel's errno."""
    rc = _mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype), flags, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)
