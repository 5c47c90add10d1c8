"""Reading the policy file: bounded, and checked like sshd's StrictModes.

The daemon runs as root and does what the policy says, so whoever can change the policy file
(or rename another file over it) controls root.  A policy file is believed only when it and
every directory above it belong to root (or to the daemon's own user, for a daemon that is not
root) and nobody else can write them; see :mod:`nvme_agent.policy.trust`.

The check is made on the file that is read, not just on its name: the file is opened first,
then its path is checked, then the path is looked up again and must still lead to the opened
file.  A swap between the check and the read is caught, without refusing the symlink
``/etc/nvme-agent/policy.yaml -> ...`` an administrator may use.  The size is bounded before
anything is read (``stat``) and while reading (a file that grows).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass

from nvme_agent.policy.trust import untrusted_reason

#: What the daemon, running as root, believes (``check`` warns about anything else).
ROOT_ONLY: frozenset[int] = frozenset({0})


def own_owners() -> frozenset[int]:
    """The uids a daemon of this process's user believes: root, and itself."""
    return frozenset({0, os.geteuid()})


class NotAPolicyFile(Exception):
    """The path names something that cannot be a policy (a directory, a FIFO, a huge file)."""


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """What was read, and the status of the file it was read from."""

    path: str
    data: bytes
    status: os.stat_result


def read_policy_file(path: str, max_bytes: int) -> PolicyFile:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises ``OSError`` (cannot open or read) or :class:`NotAPolicyFile`.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAPolicyFile(f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise NotAPolicyFile(
                f"{path} has {st.st_size} bytes, more than the {max_bytes} a policy may have"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise NotAPolicyFile(f"{path} grew past the {max_bytes} bytes a policy may have")
        return PolicyFile(path, b"".join(chunks), st)
    finally:
        os.close(fd)


def distrust(read: PolicyFile, owners: Collection[int] | None = None) -> str | None:
    """Why the file ``read`` came from cannot be believed by a daemon trusting ``owners``
    (default: :func:`own_owners`), or None when it can."""
    owners = own_owners() if owners is None else owners
    path = os.path.abspath(read.path)
    reason = untrusted_reason(path, owners=owners, dir_owners=owners)
    if reason is not None:
        return reason
    st = read.status
    if st.st_uid not in owners or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # The path is fine now, but what was read was not (it was swapped back since).
        return f"{path} was not {'/'.join(map(str, sorted(owners)))}'s and private when read"
    try:
        now = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc} after it was read"
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        return f"{path} was replaced by another file while it was being read"
    return None
