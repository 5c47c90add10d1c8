"""Create and remove mount point directories below a mount root without following symlinks.

Every component of the path, from ``/`` down through the mount root to the mount point, is
opened relative to its parent's file descriptor with ``O_NOFOLLOW | O_DIRECTORY``.  A symlink
planted inside the mount root (say ``data -> /etc``) or standing for a parent of the mount root
(say ``/srv/media -> /home/alice``) is refused instead of followed, and there is no window
between check and use: the caller gets a descriptor of the very directory that was checked.

Every directory walked through on the way to a mount point (``/``, the mount root's
ancestors, the mount root, existing directories below it) must also be root's and writable
by nobody else (a sticky directory such as ``/tmp`` is fine), like sshd's StrictModes: whoever
can rename entries in one could swap what lies below it between the mount and the unmount.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable

from nvme_agent.actions.outcome import ActionError
from nvme_agent.topology.text import escape

log = logging.getLogger("nvme_agent.actions")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def components(mount_root: str, target: str) -> list[str]:
    """The path components of ``target`` below ``mount_root``; refuses anything outside it."""
    if "\0" in target or "\0" in mount_root:
        raise ActionError(f"NUL byte in path {target!r}")
    if not os.path.isabs(mount_root) or not os.path.isabs(target):
        raise ActionError(f"mount root {mount_root!r} and target {target!r} must be absolute")
    root = os.path.normpath(mount_root)
    norm = os.path.normpath(target)
    if norm != target.rstrip("/") or norm == root or not norm.startswith(root.rstrip("/") + "/"):
        raise ActionError(f"target {target!r} is not a clean path below mount root {root!r}")
    parts = norm[len(root.rstrip("/")) + 1 :].split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ActionError(f"target {target!r} has an empty or relative component")
    return parts


def _open_child(parent_fd: int, name: str, shown: str, where: str = "inside the mount root") -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR (or ELOOP): tell them apart.
        is_link = False
        with contextlib.suppress(OSError):
            is_link = stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
        if exc.errno == errno.ELOOP or is_link:
            raise ActionError(f"{shown} is a symlink {where}; not following it") from exc
        if exc.errno == errno.ENOTDIR:
            raise ActionError(f"{shown} exists and is not a directory") from exc
        raise


def check_dir(fd: int, shown: str) -> None:
    """Refuse the open directory ``fd`` when someone but root (or the agent's own user) owns
    it or may write to it without the sticky bit: they could rename what lies below it."""
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()):
        raise ActionError(
            f"{shown} is owned by uid {st.st_uid}, not root: its owner could swap what lies "
            "below it"
        )
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not st.st_mode & stat.S_ISVTX:
        raise ActionError(
            f"{shown} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}) "
            "without the sticky bit: they could swap what lies below it"
        )


def open_absolute(path: str, *, create: bool = False, strict: bool = True) -> int:
    """Open the directory ``path`` one component at a time from ``/``, never following a
    symlink; missing components are created (0755) when ``create`` is set.

    A symlink anywhere in the path is refused: it could be swapped between a check and a use,
    and the kernel would follow it into a directory the agent did not mean.  ``strict`` also
    applies :func:`check_dir` to every directory of the path, ``path`` included.
    """
    if "\0" in path or not os.path.isabs(path):
        raise ActionError(f"{path!r} is not an absolute path")
    norm = os.path.normpath(path)
    where = f"in the path of {norm} (name the real directory instead)"
    fd = os.open("/", _DIR_FLAGS)
    shown = ""
    try:
        if strict:
            check_dir(fd, "/")
        for name in (p for p in norm.split("/") if p):
            shown = f"{shown}/{name}"
            made = False
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            child = _open_child(fd, name, shown, where)
            os.close(fd)
            fd = child
            if made:
                os.fchmod(fd, 0o755)  # explicitly: mkdir's mode is filtered by the umask
            elif strict:
                check_dir(fd, shown)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_root(mount_root: str, *, create: bool = True) -> int:
    """Open (creating if asked, mode 0755) the mount root; no component may be a symlink."""
    try:
        return open_absolute(mount_root, create=create)
    except ActionError as exc:
        raise ActionError(f"mount root {os.path.normpath(mount_root)}: {exc}") from exc


def _exists(parent_fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return False
    return True


def make_dirs(
    mount_root: str,
    target: str,
    *,
    mode: int | None = None,
    uid: int = -1,
    gid: int = -1,
    claim: Callable[[str, bool], None] | None = None,
) -> tuple[int, list[str]]:
    """Create ``target`` and its parents below ``mount_root``.

    Returns an open descriptor of the target directory (the caller closes it) and the
    directories created, outermost first.  Intermediate directories get 0755 root:root; the
    target gets ``mode``/``uid``/``gid`` when it is created by this call.  ``claim(path,
    True)`` is called before each ``mkdir`` and ``claim(path, False)`` when the directory
    turned out to exist already: the caller records what is about to be its own before it
    exists, so a kill between ``mkdir`` and the mount leaves no directory nobody knows.
    """
    parts = components(mount_root, target)
    created: list[str] = []
    fd = open_root(mount_root)
    path = os.path.normpath(mount_root)
    try:
        for i, name in enumerate(parts):
            path = os.path.join(path, name)
            last = i == len(parts) - 1
            claimed = claim is not None and not _exists(fd, name)
            if claimed and claim is not None:
                claim(path, True)
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
                made = True
            except FileExistsError:
                made = False
            if claimed and not made and claim is not None:
                claim(path, False)
            child = _open_child(fd, name, path)
            os.close(fd)
            fd = child
            if made:
                created.append(path)
                # chmod explicitly: mkdir's mode is filtered by the umask.
                os.fchmod(fd, (mode if mode is not None else 0o755) if last else 0o755)
                if last and (uid != -1 or gid != -1):
                    os.fchown(fd, uid, gid)
            elif not last:
                check_dir(fd, path)  # the target itself: the mount action decides
        return fd, created
    except BaseException:
        os.close(fd)
        raise


def open_dir(mount_root: str, target: str) -> int:
    """Open an existing directory below ``mount_root`` without following symlinks."""
    fd = open_root(mount_root, create=False)
    path = os.path.normpath(mount_root)
    try:
        for name in components(mount_root, target):
            path = os.path.join(path, name)
            child = _open_child(fd, name, path)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def remove_dirs(
    mount_root: str, dirs: tuple[str, ...] | list[str], *, busy_wait: float = 2.0
) -> list[str]:
    """``rmdir`` the given directories, deepest first; never deletes contents.

    A directory that is not empty stops the removal of its parents.  ``EBUSY`` (the
    mount point is still in use in another mount namespace just after a lazy detach) is
    retried with back-off for up to ``busy_wait`` seconds.  Returns the directories left.
    """
    ordered = sorted(dirs, key=lambda d: d.count("/"), reverse=True)
    left: list[str] = []
    waiter = threading.Event()  # only used for its bounded wait()
    for d in ordered:
        if any(x.startswith(d.rstrip("/") + "/") for x in left):
            left.append(d)
            continue
        parent, name = os.path.split(os.path.normpath(d))
        try:
            if parent == os.path.normpath(mount_root):
                pfd = open_root(mount_root, create=False)
            else:
                pfd = open_dir(mount_root, parent)
        except (ActionError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                continue
            log.warning("not removing %s: %s", escape(d), escape(exc))
            left.append(d)
            continue
        try:
            delay, waited = 0.02, 0.0
            while True:
                try:
                    os.rmdir(name, dir_fd=pfd)
                    log.debug("removed mount point directory %s", escape(d))
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EBUSY and waited < busy_wait:
                        waiter.wait(delay)
                        waited += delay
                        delay = min(delay * 2, 0.5)
                        continue
                    log.warning("leaving directory %s in place: %s", escape(d), exc.strerror)
                    left.append(d)
                    break
        finally:
            os.close(pfd)
    return sorted(left, key=lambda d: d.count("/"))
