"""Who is asking: the peer of a control connection, and the rights it has.

Two rights (the command table in :mod:`nvme_agent.service.requests` says which command needs
which):

* ``read``: root, members of the ``nvme-agent`` group (the group of the sockets) and members
  of the admin group.  Seeing, never acting.
* ``admin``: root, and members of ``defaults.admin_group`` when the policy names one.  Acting:
  eject (unmounts, signals holders of any uid, runs remove hooks as root), reload.

Membership is the peer process's own credentials at ``connect()`` (``SO_PEERCRED`` for uid
and primary gid, ``SO_PEERGROUPS`` for the supplementary groups), not the group database:
a process that dropped a group (``SupplementaryGroups=``, ``setpriv``) does not have it.  Group
names are resolved when a request arrives, so a reloaded policy's admin group applies at once.
"""

from __future__ import annotations

import errno
import grp
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: The group of the sockets: the read right.
GROUP = "nvme-agent"

#: Linux's SO_PEERGROUPS (4.13+); the socket module does not name it.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_NGROUPS_MAX = 65536


class Right(StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a Unix socket, as the kernel recorded it."""

    pid: int
    uid: int
    gid: int
    #: Supplementary groups; None when the kernel cannot tell (then the group database is
    #: asked for the user's memberships instead).
    groups: frozenset[int] | None = None

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid}"


def peer_of(sock: Any) -> Peer:
    """The credentials of the peer of a connected AF_UNIX socket (or asyncio's wrapper)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: Any) -> frozenset[int] | None:
    for size in (64, _NGROUPS_MAX):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return None
        count = len(raw) // 4
        return frozenset(struct.unpack(f"{count}I", raw[: 4 * count]))
    return None


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def in_group(peer: Peer, name: str | None) -> bool:
    """Whether ``peer`` is a member of group ``name`` (resolved now)."""
    if not name:
        return False
    gid = group_id(name)
    if gid is None:
        return False
    if peer.gid == gid:
        return True
    if peer.groups is not None:
        return gid in peer.groups
    try:
        user = pwd.getpwuid(peer.uid).pw_name
    except KeyError:
        return False
    return user in grp.getgrgid(gid).gr_mem


def rights_of(peer: Peer, read_group: str | None, admin_group: str | None) -> frozenset[Right]:
    """Every right ``peer`` has now."""
    if peer.uid == 0:
        return frozenset(Right)
    if in_group(peer, admin_group):
        return frozenset(Right)
    if in_group(peer, read_group):
        return frozenset({Right.READ})
    return frozenset()


def who_has(right: Right, read_group: str | None, admin_group: str | None) -> str:
    """Who holds ``right``, for error messages."""
    holders = ["root"]
    if right is Right.READ and read_group:
        holders.append(f"members of group {read_group!r}")
    if admin_group:
        holders.append(f"members of group {admin_group!r} (defaults.admin_group)")
    elif right is Right.ADMIN:
        return "root only (the policy names no defaults.admin_group)"
    return ", ".join(holders[:-1]) + " and " + holders[-1] if len(holders) > 1 else holders[0]
