"""Whether a file may be believed by a root daemon: sshd's StrictModes, for our files.

The policy file and every hook program run as root; a pidfile decides whom we signal.  If
anyone but root can change such a file, or replace it by renaming something over it, that
someone controls the agent.  A file is trusted when it and every directory above it are
owned by root (or, for pidfiles, by the process's own user: see ``owners``) and writable by
nobody else.  A sticky directory writable by others (``/tmp``) is fine: others cannot rename
or unlink root's entries in it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection


def untrusted_reason(
    path: str,
    *,
    owners: Collection[int] = (0,),
    follow: bool = True,
    dir_owners: Collection[int] = (0,),
) -> str | None:
    """Why ``path`` cannot be trusted, or None when it can.

    ``owners``: uids that may own the file itself.  ``dir_owners``: uids that may own the
    directories above it (root's only by default; a pidfile may sit in its daemon's own
    directory).  ``follow``: resolve symlinks first (the resolved path is checked, every
    component of it); otherwise a symlink is itself a reason.
    """
    if not os.path.isabs(path):
        return f"{path} is not an absolute path"
    try:
        real = os.path.realpath(path, strict=True) if follow else os.path.normpath(path)
        st = os.lstat(real)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink"
    if st.st_uid not in owners:
        who = " or ".join(str(o) for o in sorted(owners))
        return f"{real} is owned by uid {st.st_uid}, not {who}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{real} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    parent = os.path.dirname(real)
    while True:
        try:
            dst = os.lstat(parent)
        except OSError as exc:
            return f"{parent}: {exc.strerror or exc}"
        if dst.st_uid not in dir_owners:
            who = "root" if set(dir_owners) == {0} else " or ".join(map(str, sorted(dir_owners)))
            return f"directory {parent} (above {real}) is owned by uid {dst.st_uid}, not {who}"
        writable = dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not dst.st_mode & stat.S_ISVTX:
            return (
                f"directory {parent} (above {real}) is writable by group or others "
                f"(mode {stat.S_IMODE(dst.st_mode):04o})"
            )
        if parent == "/":
            return None
        parent = os.path.dirname(parent)
