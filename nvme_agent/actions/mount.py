"""The mount action: mount point, optional fsck, mount, verification, ledger."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import time

from nvme_agent.actions import messages, mountinfo, safedirs
from nvme_agent.actions.guard import Guard, probe_ids
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.policy.plan import MountSpec

log = logging.getLogger("nvme_agent.actions")

EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})


def _uid(owner: str | None) -> int:
    if owner is None:
        return -1
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError as exc:
        raise ActionError(f"unknown mount point owner {owner!r}") from exc


def _gid(group: str | None) -> int:
    if group is None:
        return -1
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise ActionError(f"unknown mount point group {group!r}") from exc


def fsck(source: str, fstype: str | None, deadline: Deadline) -> str:
    """Check the filesystem before mounting; returns a note, raises ActionError on damage.

    e2fsck -p: 0 clean, 1 errors fixed, 2 fixed (reboot advised: only relevant for ``/``);
    4 and up: errors left or the check failed.  xfs_repair -n: 0 clean, 1 corruption found;
    2 means a dirty log, which the mount itself replays.
    """
    fstype = fstype or probe_ids(source).get("TYPE")
    if fstype in EXT_TYPES:
        proc = run_tool(["e2fsck", "-p", source], deadline)
        if proc.returncode == 0:
            return "fsck: clean"
        if proc.returncode in (1, 2):
            log.warning("e2fsck fixed errors on %s: %s", source, proc.stdout.strip()[-500:])
            return "fsck: errors were fixed"
        raise ActionError(f"fsck of {source} failed: {tool_error(proc)}")
    if fstype == "xfs":
        proc = run_tool(["xfs_repair", "-n", source], deadline)
        if proc.returncode == 0:
            return "fsck: clean"
        if proc.returncode == 2:
            return "fsck: xfs log is dirty; the mount replays it"
        raise ActionError(
            f"xfs_repair -n found problems on {source} (repair by hand): {tool_error(proc)}"
        )
    return f"fsck: not supported for {fstype or 'unknown filesystem'}, skipped"


def _options(spec: MountSpec) -> list[str]:
    opts = [o for o in spec.options if o and o not in ("ro", "rw")]
    opts.append("ro" if spec.read_only else "rw")
    return opts


def do_mount(spec: MountSpec, *, ledger: MountLedger, guard: Guard, deadline: Deadline) -> Outcome:
    """Mount ``spec.source`` at ``spec.target``; idempotent (see module docs)."""
    target = os.path.normpath(spec.target)
    safedirs.components(spec.mount_root, spec.target)
    if not spec.source.startswith("/"):
        raise ActionError(f"mount source {spec.source!r} is not an absolute device path")
    guard.check_target(target)
    dev = mountinfo.device_number(spec.source)
    if dev is None:
        raise ActionError(f"{spec.source} is not a block device (or is gone)")
    guard.check_device(spec.source)

    table = mountinfo.read()
    for entry in mountinfo.mounts_of(table, dev):
        if entry.mountpoint == target:
            ours = ledger.get(target)
            who = (
                "by the agent" if ours and ours.mounted and ours.dev == dev else "not by the agent"
            )
            return Outcome.ok(
                f"{spec.source} is already mounted at {target} ({who})",
                message_id=messages.MOUNTED,
                target=target,
                already="true",
            )
    elsewhere = [e.mountpoint for e in mountinfo.mounts_of(table, dev)]
    if elsewhere:
        return Outcome.failed(
            f"{spec.source} is already mounted at {', '.join(elsewhere)}; not mounting it twice",
            mounted_at=",".join(elsewhere),
        )
    occupant = mountinfo.top_mount_at(table, target)
    if occupant is not None:
        return Outcome.failed(
            f"{target} is already a mount point of {occupant.source} ({occupant.fstype}); "
            f"refusing to mount {spec.source} over it"
        )

    notes: list[str] = []
    if spec.fsck:
        notes.append(fsck(spec.source, spec.fstype, deadline))

    uid, gid = _uid(spec.owner), _gid(spec.group)
    fd, created = safedirs.make_dirs(spec.mount_root, target, mode=spec.mode, uid=uid, gid=gid)
    leftover = ledger.get(target)
    if leftover is not None and not leftover.mounted:
        # Directories an earlier mount created and could not remove yet are still ours.
        created = [d for d in leftover.created_dirs if d not in created] + created
    try:
        argv = ["mount"]
        if spec.fstype:
            argv += ["-t", spec.fstype]
        # /proc/self/fd/N: the directory opened without following symlinks, not a path
        # that could be swapped between the check and the mount.
        argv += ["-o", ",".join(_options(spec)), spec.source, f"/proc/self/fd/{fd}"]
        try:
            proc = run_tool(argv, deadline, pass_fds=(fd,))
            failure = None if proc.returncode == 0 else tool_error(proc)
        except ActionError as exc:
            failure = str(exc)
    finally:
        os.close(fd)

    mounted = mountinfo.top_mount_at(mountinfo.read(), target)
    if mounted is None or mounted.dev != dev:
        left = safedirs.remove_dirs(spec.mount_root, created)
        if left:
            ledger.record_mount(
                LedgerEntry(target, spec.source, dev, spec.fstype, tuple(left), mounted=False)
            )
        elif leftover is not None:
            ledger.forget(target)
        return Outcome.failed(
            f"mounting {spec.source} at {target} failed",
            failure or f"mount succeeded but {target} is not in mountinfo",
        )
    if failure:
        notes.append(f"mount reported an error but the mount is in place: {failure}")
    try:
        ledger.record_mount(
            LedgerEntry(
                target=target,
                source=spec.source,
                dev=dev,
                fstype=mounted.fstype,
                created_dirs=tuple(created),
                mounted=True,
                mounted_at=time.time(),
            )
        )
    except OSError as exc:
        # A mount missing from the ledger would never be unmounted by the agent: undo it.
        undo = run_tool(["umount", target], Deadline(30.0))
        safedirs.remove_dirs(spec.mount_root, created)
        return Outcome.failed(
            f"mounted {spec.source} at {target} but could not record it in the ledger "
            f"({exc}); " + ("unmounted again" if undo.returncode == 0 else "UNMOUNT FAILED"),
            f"ledger {ledger.path}: {exc}",
        )
    return Outcome.ok(
        f"mounted {spec.source} at {target} ({mounted.fstype}, {','.join(mounted.options)})"
        + (f"; {'; '.join(notes)}" if notes else ""),
        message_id=messages.MOUNTED,
        target=target,
        fstype=mounted.fstype,
        options=",".join(mounted.options),
        created_dirs=",".join(created),
    )
