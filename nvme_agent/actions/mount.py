"""The mount action: mount point, optional fsck, mount, verification, ledger.

Idempotent: a device already mounted at its target is a success, a device mounted elsewhere
or a target taken by another mount is a failure, and nothing is ever mounted twice.  The
mount point is a directory the agent created (or, with ``allow_existing_dir``, an existing
one) and is empty; the type is named to the kernel (by mount(2) directly or mount(8)), allowed
by the policy and what the device holds right now; the kernel gets the directory that was
opened and checked, by descriptor.
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import pwd
import time
from collections.abc import Callable

from nvme_agent.actions import messages, mountcall, mountinfo, safedirs
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.probe import DeviceProbe
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.actions.unmount import umount_entry
from nvme_agent.policy.plan import MountSpec
from nvme_agent.topology.text import escape

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


def fsck(source: str, fstype: str, deadline: Deadline) -> str:
    """Check the filesystem before mounting; returns a note, raises ActionError on damage.

    e2fsck -p: 0 clean, 1 errors fixed, 2 fixed (reboot advised: only relevant for ``/``);
    4 and up: errors left or the check failed.  xfs_repair -n: 0 clean, 1 corruption found;
    2 means a dirty log, which the mount itself replays.
    """
    if fstype in EXT_TYPES:
        proc = run_tool(["e2fsck", "-p", source], deadline)
        if proc.returncode == 0:
            return "fsck: clean"
        if proc.returncode in (1, 2):
            # e2fsck names the filesystem by its label: device data, escaped.
            log.warning(
                "e2fsck fixed errors on %s: %s", escape(source), escape(proc.stdout.strip()[-500:])
            )
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
    return f"fsck: not supported for {fstype}, skipped"


def _options(spec: MountSpec) -> list[str]:
    opts = [o for o in spec.options if o and o not in ("ro", "rw")]
    opts.append("ro" if spec.read_only else "rw")
    return opts


def compatible(planned: str, found: str) -> bool:
    """Whether a device holding ``found`` may be mounted as ``planned`` (ext4 mounts ext2/3)."""
    return found == planned or (planned == "ext4" and found in EXT_TYPES)


def _allowed(spec: MountSpec, fstype: str) -> None:
    if fstype not in spec.allowed_fstypes:
        raise ActionError(
            f"refusing to mount {spec.source} as {fstype}: not in allowed_filesystems "
            f"({', '.join(spec.allowed_fstypes) or 'none'})"
        )


def _check_type(spec: MountSpec, probe: DeviceProbe) -> str:
    """The type to mount as: planned, allowed, and what the device holds now (``probe``).

    The plan was made from udev's view; the device may have been rewritten since (swapped
    under us).  Without ``-t`` mount(8) would probe and the kernel load any module it names.
    """
    found = probe.fstype()
    planned = spec.fstype or found
    _allowed(spec, planned)
    if not compatible(planned, found):
        raise ActionError(
            f"refusing to mount {spec.source}: it now holds {found}, not the planned "
            f"{planned} (was it rewritten or swapped?)"
        )
    return planned


def _check_mount_point(fd: int, target: str, *, ours: bool, allow_existing: bool) -> None:
    """Refuse a directory the agent did not create (unless allowed), and any non-empty one.

    Checked on the descriptor that the mount will use, so the directory cannot be swapped
    between the check and the mount.  A non-empty directory would be hidden by the mount
    (someone's data, or a home with its own ``.ssh``); that is never what a policy means.
    """
    if not ours and not allow_existing:
        raise ActionError(
            f"refusing to mount on {target}: the directory exists and was not created by the "
            "agent (a mount may opt in with allow_existing_dir: true)"
        )
    with os.scandir(fd) as entries:
        first = next(entries, None)
    if first is not None:
        raise ActionError(
            f"refusing to mount on {target}: the directory is not empty "
            f"(it holds {first.name!r}, ...)"
        )


def _run_mount(spec: MountSpec, fstype: str, fd: int, deadline: Deadline) -> str | None:
    """Mount onto the directory ``fd``; None on success, else the error text.

    The target is ``/proc/self/fd/N``: the kernel resolves the magic link to the very
    directory that was opened and checked.  mount(2) is called directly when mount(8) would
    add nothing (see :mod:`~nvme_agent.actions.mountcall`); otherwise, and after a failed
    mount(2), mount(8) runs as it always did.
    """
    options = _options(spec)
    target = f"/proc/self/fd/{fd}"
    flags = mountcall.direct_flags(fstype, options)
    direct: str | None = None
    if flags is not None:
        try:
            mountcall.mount(spec.source, target, fstype, flags)
            return None
        except OSError as exc:
            direct = f"mount(2): {exc.strerror or exc}"
    failure = _run_mount8(spec.source, fstype, options, fd, deadline)
    return failure if failure is None or direct is None else f"{direct}; {failure}"


def _run_mount8(
    source: str, fstype: str, options: list[str], fd: int, deadline: Deadline
) -> str | None:
    """Run mount(8) onto the directory ``fd``; None on success, else the error text.

    ``--no-canonicalize``: mount(8) would otherwise turn ``/proc/self/fd/N`` back into a
    path and hand that to mount(2), reopening the window between check and use.
    """
    argv = ["mount", "--no-canonicalize", "-t", fstype, "-o", ",".join(options)]
    argv += [source, f"/proc/self/fd/{fd}"]
    try:
        proc = run_tool(argv, deadline, pass_fds=(fd,))
    except ActionError as exc:
        return str(exc)
    return None if proc.returncode == 0 else tool_error(proc)


def _already(spec: MountSpec, target: str, dev: str, ledger: MountLedger) -> Outcome | None:
    """The outcome when the device or the target is already mounted, else None."""
    table = mountinfo.read_some(devs={dev}, at={target})
    mounts = mountinfo.mounts_of(table, dev)
    if any(e.mountpoint == target for e in mounts):
        ours = ledger.get(target)
        if ours is not None and not ours.mounted and ours.dev == dev:
            # Our own mount on our own directory, done by a run killed before it could
            # record it (see _claimer): record it now, or it would never be unmounted.
            ours = dataclasses.replace(ours, mounted=True, mounted_at=time.time())
            ledger.record_mount(ours)
        who = "by the agent" if ours and ours.mounted and ours.dev == dev else "not by the agent"
        return Outcome.ok(
            f"{spec.source} is already mounted at {target} ({who})",
            message_id=messages.MOUNTED,
            target=target,
            already="true",
        )
    if mounts:
        elsewhere = [e.mountpoint for e in mounts]
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
    return None


def _claimer(
    spec: MountSpec, target: str, dev: str, known: list[str], ledger: MountLedger
) -> Callable[[str, bool], None]:
    """Records each directory in the ledger *before* it is made (and drops a claim on one that
    existed after all): a kill -9 between ``mkdir`` and the mount must not leave a directory
    the restarted agent would refuse as not its own."""
    claimed = list(known)

    def claim(path: str, mine: bool) -> None:
        if mine and path not in claimed:
            claimed.append(path)
        elif not mine and path in claimed:
            claimed.remove(path)
        try:
            ledger.record_mount(
                LedgerEntry(target, spec.source, dev, spec.fstype, tuple(claimed), mounted=False)
            )
        except OSError as exc:  # a full or read-only state directory: nothing is made
            raise ActionError(f"cannot record {path} in the ledger {ledger.path}: {exc}") from exc

    return claim


def _drop_dirs(
    spec: MountSpec, target: str, dev: str, created: list[str], ledger: MountLedger
) -> None:
    """Nothing was mounted: remove the directories that are ours, remember what stays."""
    left = safedirs.remove_dirs(spec.mount_root, created)
    if left:
        ledger.record_mount(
            LedgerEntry(target, spec.source, dev, spec.fstype, tuple(left), mounted=False)
        )
    elif ledger.get(target) is not None:
        ledger.forget(target)


def _prepare_and_mount(
    spec: MountSpec,
    target: str,
    created: list[str],
    fd: int,
    probe: DeviceProbe,
    deadline: Deadline,
) -> str | None:
    """The checks on the opened mount point and the device, then the mount."""
    _check_mount_point(fd, target, ours=target in created, allow_existing=spec.allow_existing_dir)
    fstype = _check_type(spec, probe)
    return _run_mount(spec, fstype, fd, deadline)


def do_mount(spec: MountSpec, *, ledger: MountLedger, guard: Guard, deadline: Deadline) -> Outcome:
    """Mount ``spec.source`` at ``spec.target`` (see the module docstring)."""
    target = os.path.normpath(spec.target)
    safedirs.components(spec.mount_root, spec.target)
    if not spec.source.startswith("/"):
        raise ActionError(f"mount source {spec.source!r} is not an absolute device path")
    if spec.fstype is not None:
        _allowed(spec, spec.fstype)
    guard.check_target(target)
    dev = mountinfo.device_number(spec.source)
    if dev is None:
        raise ActionError(f"{spec.source} is not a block device (or is gone)")
    # One probe serves the fstab guard (only if fstab names devices by tag) and the type
    # check (issue 13: it is the largest part of a mount).
    with DeviceProbe(spec.source, deadline) as probe:
        guard.check_device(spec.source, identifiers=probe.identifiers)
        early = _already(spec, target, dev, ledger)
        if early is not None:
            return early
        notes: list[str] = []
        if spec.fsck:
            notes.append(fsck(spec.source, spec.fstype or probe.fstype(), deadline))
            probe.again()  # fsck may change what the device holds: the type is probed after
        uid, gid = _uid(spec.owner), _gid(spec.group)
        leftover = ledger.get(target)
        # Directories an earlier mount created and could not remove yet (or created just
        # before a kill -9) are still ours.
        known = [] if leftover is None else list(leftover.created_dirs)
        claim = _claimer(spec, target, dev, known, ledger)
        # blkid probes the device while the directories are made and claimed: both wait on
        # I/O, and the probe is read only once the mount point is ready.
        probe.start()
        fd, created = safedirs.make_dirs(
            spec.mount_root, target, mode=spec.mode, uid=uid, gid=gid, claim=claim
        )
        created = [d for d in known if d not in created] + created
        try:
            failure = _prepare_and_mount(spec, target, created, fd, probe, deadline)
        except ActionError:
            _drop_dirs(spec, target, dev, created, ledger)
            raise
        finally:
            os.close(fd)

    mounted = mountinfo.top_mount_at(mountinfo.read_some(at={target}), target)
    if mounted is None or mounted.dev != dev:
        _drop_dirs(spec, target, dev, created, ledger)
        return Outcome.failed(
            f"mounting {spec.source} at {target} failed",
            failure or f"mount succeeded but {target} is not in mountinfo",
        )
    if failure:
        notes.append(f"mount reported an error but the mount is in place: {failure}")
    return _record(spec, target, dev, mounted, created, notes, ledger)


def _record(
    spec: MountSpec,
    target: str,
    dev: str,
    mounted: mountinfo.MountEntry,
    created: list[str],
    notes: list[str],
    ledger: MountLedger,
) -> Outcome:
    """Write the mount into the ledger (undoing it if that fails) and say what was done."""
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
        entry = LedgerEntry(target, spec.source, dev, mounted.fstype, tuple(created))
        undone = umount_entry(entry, Deadline(30.0), lazy=False) is None
        safedirs.remove_dirs(spec.mount_root, created)
        return Outcome.failed(
            f"mounted {spec.source} at {target} but could not record it in the ledger "
            f"({exc}); " + ("unmounted again" if undone else "UNMOUNT FAILED"),
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
