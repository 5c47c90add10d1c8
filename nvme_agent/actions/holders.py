"""Find the processes that keep a mount busy (what ``fuser -m`` reports), via psutil and /proc.

A process holds a mount when its cwd, root directory or executable, any open file descriptor
or any memory mapping lives on the mounted device.  Matching is by device number (``st_dev``
and the ``maps`` device column), not by path, so files opened through another path, bind
mounts and deleted-but-open files are all found.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True, slots=True)
class Holder:
    """A process using the mount, and how (``cwd``, ``root``, ``exe``, ``file``, ``mmap``).

    ``name``, ``cmdline`` are what the process says about itself: any local user chooses
    them, so they are escaped wherever they enter a human message.
    """

    pid: int
    name: str
    how: tuple[str, ...]
    uid: int | None = None
    cmdline: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name}[{self.pid}] ({','.join(self.how)})"

    @property
    def command(self) -> str:
        """The command line as one shell-quoted string (the name when it has none)."""
        return shlex.join(self.cmdline) if self.cmdline else self.name

    def to_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "name": self.name,
            "how": list(self.how),
            "uid": self.uid,
            "cmdline": list(self.cmdline),
        }


def _dev_of(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _maps_on(pid: int, major: int, minor: int) -> bool:
    want = f"{major:02x}:{minor:02x}"
    try:
        with open(f"{PROC}/{pid}/maps", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split(None, 5)
                if len(fields) >= 5 and fields[4] != "0" and fields[3] == want:
                    return True
    except OSError:
        return False
    return False


def _how(pid: int, st_dev: int, major: int, minor: int) -> list[str]:
    how = [what for what in ("cwd", "root", "exe") if _dev_of(f"{PROC}/{pid}/{what}") == st_dev]
    try:
        fds = os.listdir(f"{PROC}/{pid}/fd")
    except OSError:
        fds = []
    # stat() of /proc/PID/fd/N reports the open file itself (no open, no path lookup).
    if any(_dev_of(f"{PROC}/{pid}/fd/{fd}") == st_dev for fd in fds):
        how.append("file")
    if _maps_on(pid, major, minor):
        how.append("mmap")
    return how


def find_holders(major: int, minor: int, *, exclude: frozenset[int] = frozenset()) -> list[Holder]:
    """Processes using the filesystem on device ``major:minor``, sorted by pid.

    The calling process is never listed (the agent must not signal itself).
    """
    st_dev = os.makedev(major, minor)
    # Imported here, not at the top: only an unmount of a busy mount walks the processes,
    # and psutil is ~1.3 MiB of an idle daemon's memory (issue 13).
    import psutil

    skip = exclude | {os.getpid()}
    out: list[Holder] = []
    for proc in psutil.process_iter(["pid", "name", "uids", "cmdline"]):
        info = proc.info
        pid = info["pid"]
        if pid in skip:
            continue
        how = _how(pid, st_dev, major, minor)
        if how:
            uids = info.get("uids")
            out.append(
                Holder(
                    pid=pid,
                    name=info["name"] or "?",
                    how=tuple(how),
                    uid=uids.real if uids is not None else None,
                    cmdline=tuple(info.get("cmdline") or ()),
                )
            )
    return sorted(out, key=lambda h: h.pid)


def holder_details(holders: list[Holder]) -> dict[str, str]:
    """ActionResult details naming holders, for humans (``holders``) and scripts."""
    return {
        "holders": "; ".join(h.describe() for h in holders),
        "holder_pids": ",".join(str(h.pid) for h in holders),
        "holders_json": json.dumps([h.to_dict() for h in holders]),
    }
