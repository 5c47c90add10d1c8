"""The unmount action: hot-remove lazy detach, or a graceful unmount that deals with holders.

Only mounts recorded in the ledger (made by the agent) are ever unmounted, and only the
directories the agent created are removed (``rmdir``, never a recursive delete).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nvme_agent.actions import messages, mountinfo, safedirs
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.holders import Holder, find_holders, holder_details
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.policy.plan import UnmountSpec
from nvme_agent.topology.text import escape

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("nvme_agent.actions")


def parse_signal(name: str) -> signal.Signals:
    """``SIGTERM``, ``TERM`` or ``15`` as a signal."""
    text = name.strip().upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError) as exc:
        raise ActionError(f"unknown signal {name!r}") from exc


def _check_top(parent_fd: int, name: str, entry: LedgerEntry, *, lazy: bool) -> str | None:
    """Why the mount at ``parent_fd``/``name`` must not be unmounted, or None if it is ours."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as exc:
        if lazy:
            # A dead device may fail even this; mountinfo said it is ours a moment ago.
            log.debug("cannot stat %s before the lazy detach: %s", escape(entry.target), exc)
            return None
        return f"cannot check what is mounted at {entry.target}: {exc.strerror or exc}"
    if f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}" != entry.dev:
        return (
            f"{entry.target} is no longer the agent's mount of {entry.source} ({entry.dev}); "
            "not unmounting it"
        )
    return None


def umount_entry(entry: LedgerEntry, deadline: Deadline, *, lazy: bool) -> str | None:
    """umount(8) the agent's mount ``entry``; None on success, else the error text.

    ``umount PATH`` would act on whatever the path means by the time it runs: with a parent
    swapped for a symlink, on someone else's mount.  So the parent directory is opened one
    component at a time without following symlinks, the mount on top of ``NAME`` in it must
    be the device the agent mounted, and umount gets ``/proc/self/fd/N/NAME`` with
    ``--no-canonicalize`` (the kernel resolves it from that very directory).
    """
    parent, name = os.path.split(os.path.normpath(entry.target))
    try:
        # No ownership checks here: the device check below is what makes it safe, and a
        # dead mount must still be detached in a tree someone meddled with.
        pfd = safedirs.open_absolute(parent, strict=False)
    except (ActionError, OSError) as exc:
        return f"cannot open {parent} safely: {exc}"
    try:
        refusal = _check_top(pfd, name, entry, lazy=lazy)
        if refusal is not None:
            return refusal
        argv = ["umount", "--no-canonicalize", *(["-l"] if lazy else [])]
        argv.append(f"/proc/self/fd/{pfd}/{name}")
        try:
            proc = run_tool(argv, deadline, pass_fds=(pfd,))
        except ActionError as exc:
            return str(exc)
        return None if proc.returncode == 0 else tool_error(proc)
    finally:
        os.close(pfd)


def _still_mounted(entry: LedgerEntry) -> bool:
    return any(e.mountpoint == entry.target and e.dev == entry.dev for e in mountinfo.read())


def _cleanup(spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger) -> list[str]:
    left = list(entry.created_dirs)
    if spec.remove_mountpoint and entry.created_dirs:
        left = safedirs.remove_dirs(spec.mount_root, entry.created_dirs)
    ledger.mark_unmounted(entry.target, tuple(left))
    return left


def _log_signalled(h: Holder, sig: signal.Signals, target: str) -> None:
    """One entry per process the agent signalled: whose it was and what it ran."""
    log.info(
        "sent %s to pid %d (uid %s, command %s) holding the mount %s",
        sig.name,
        h.pid,
        "?" if h.uid is None else h.uid,
        escape(h.command),
        escape(target),
        extra={
            "NVME_HOLDER_PID": str(h.pid),
            "NVME_HOLDER_UID": "" if h.uid is None else str(h.uid),
            "NVME_HOLDER_COMMAND": h.command,
            "NVME_SIGNAL": sig.name,
            "MOUNTPOINT": target,
        },
    )


def _signal_holders(
    holders: list[Holder],
    sig: signal.Signals,
    deadline: Deadline,
    entry: LedgerEntry,
) -> tuple[list[Holder], list[str]]:
    """Send ``sig`` to the holders, then wait (bounded) until the mount is no longer held.

    Returns the holders left and notes.  The wait ends as soon as nothing holds the mount
    (a holder may release it without exiting); ``psutil.wait_procs`` paces the re-checks.
    A little of the budget is kept for sync and umount.
    """
    import psutil  # only for a busy mount: see nvme_agent.actions.holders

    procs: list[psutil.Process] = []
    notes: list[str] = []
    for h in holders:
        if h.pid == 1:
            notes.append("pid 1 holds the mount and is not signalled")
            continue
        try:
            p = psutil.Process(h.pid)
            p.send_signal(sig)
            procs.append(p)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as exc:
            notes.append(f"cannot signal {h.describe()}: {exc}")
            continue
        _log_signalled(h, sig, entry.target)
    major, minor = (int(x) for x in entry.dev.split(":"))
    reserve = min(5.0, deadline.seconds / 4)
    pacer = threading.Event()
    left = find_holders(major, minor)
    while left and deadline.remaining(0.0) > reserve:
        step = min(0.25, deadline.remaining(0.0) - reserve)
        if procs:
            _gone, procs = psutil.wait_procs(procs, timeout=step)
        else:  # only unsignallable holders left: still re-check, at the same pace
            pacer.wait(step)
        left = find_holders(major, minor)
    return left, notes


def _not_ours_now(
    spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger, guard: Guard
) -> Outcome | None:
    """The outcome when the entry's mount is gone or covered (nothing to unmount), else None."""
    target = entry.target
    if entry.dev in guard.root_devices():
        raise ActionError(f"refusing to unmount {target}: {entry.dev} backs the root filesystem")
    guard.check_target(target)
    table = mountinfo.read()
    top = mountinfo.top_mount_at(table, target)
    if not any(e.mountpoint == target and e.dev == entry.dev for e in table):
        if top is not None:
            ledger.mark_unmounted(target, entry.created_dirs)
            left = list(entry.created_dirs)
        else:
            left = _cleanup(spec, entry, ledger)
        return Outcome.ok(
            f"{entry.source} is no longer mounted at {target}; nothing to unmount"
            + (f" (left in place: {', '.join(left)})" if left else ""),
            target=target,
        )
    if top is not None and top.dev != entry.dev:
        return Outcome.failed(
            f"the agent's mount of {entry.source} at {target} is covered by a mount of "
            f"{top.source}; refusing to unmount that"
        )
    return None


def _detach_gone(
    spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger, deadline: Deadline
) -> Outcome:
    """Hot-remove: the device is gone, nothing can be flushed; detach at once."""
    err = umount_entry(entry, deadline, lazy=True)
    if err:
        return Outcome.failed(f"lazy detach of {entry.target} failed", err)
    left = _cleanup(spec, entry, ledger)
    return Outcome.ok(
        f"lazily detached {entry.target} ({entry.source} is gone): data not yet written to the "
        "device may have been lost" + (f"; left in place: {', '.join(left)}" if left else ""),
        message_id=messages.LAZY_DETACH,
        target=entry.target,
        lazy="true",
        data_loss="possible",
    )


@dataclass(slots=True)
class _Busy:
    """How the holders were dealt with: go lazy?, notes for the message, details."""

    lazy: bool = False
    notes: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)


def _deal_with_holders(
    spec: UnmountSpec, entry: LedgerEntry, deadline: Deadline
) -> tuple[_Busy, Outcome | None]:
    """Find the holders and apply ``on_busy``; an outcome when the unmount must stop here."""
    target = entry.target
    major, minor = (int(x) for x in entry.dev.split(":"))
    holders = find_holders(major, minor)
    busy = _Busy(details=holder_details(holders) if holders else {})
    if not holders:
        return busy, None
    names = "; ".join(h.describe() for h in holders)
    if spec.on_busy == "fail":
        failed = Outcome.failed(
            f"{target} is busy, left mounted: held by {names}", target=target, **busy.details
        )
        return busy, failed
    if spec.on_busy == "lazy":
        busy.lazy = True
        return busy, None
    remaining, busy.notes = _signal_holders(holders, parse_signal(spec.signal), deadline, entry)
    if not remaining:
        busy.notes.append(f"holders exited after {spec.signal}: {names}")
        return busy, None
    busy.details = holder_details(remaining)
    left_names = "; ".join(h.describe() for h in remaining)
    if not spec.lazy_fallback:
        failed = Outcome.failed(
            f"{target} is still busy after {spec.signal}, left mounted: held by {left_names}",
            target=target,
            **busy.details,
        )
        return busy, failed
    busy.lazy = True
    busy.notes.append(f"still held by {left_names}")
    return busy, None


def _sync_and_umount(
    spec: UnmountSpec, entry: LedgerEntry, deadline: Deadline, busy: _Busy
) -> Outcome | None:
    """Flush, then umount (lazily when asked or as the fallback); an outcome on failure."""
    target = entry.target
    try:
        sync = run_tool(["sync", "-f", target], deadline)
        if sync.returncode != 0:
            busy.notes.append(f"sync: {tool_error(sync)}")
    except ActionError as exc:
        busy.notes.append(f"sync: {exc}")
    err = None if busy.lazy else umount_entry(entry, deadline, lazy=False)
    if err and spec.lazy_fallback:
        busy.notes.append(f"umount failed ({err})")
        busy.lazy = True
    elif err:
        return Outcome.failed(f"unmounting {target} failed, left mounted", err, **busy.details)
    if busy.lazy:
        err = umount_entry(entry, deadline, lazy=True)
        if err:
            return Outcome.failed(f"lazy detach of {target} failed", err, **busy.details)
    elif _still_mounted(entry):
        return Outcome.failed(f"{target} is still in mountinfo after umount", None, **busy.details)
    return None


def _unmount_entry(
    spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger, guard: Guard, deadline: Deadline
) -> Outcome:
    done = _not_ours_now(spec, entry, ledger, guard)
    if done is not None:
        return done
    if spec.device_gone:
        return _detach_gone(spec, entry, ledger, deadline)
    busy, stop = _deal_with_holders(spec, entry, deadline)
    if stop is None:
        stop = _sync_and_umount(spec, entry, deadline, busy)
    if stop is not None:
        return stop
    target = entry.target
    left = _cleanup(spec, entry, ledger)
    if left:
        busy.notes.append(f"left in place: {', '.join(left)}")
    notes = f"; {'; '.join(busy.notes)}" if busy.notes else ""
    if busy.lazy:
        return Outcome.ok(
            f"lazily detached {target}: the filesystem stays in use until its holders exit; "
            "do not remove the device before they do" + notes,
            message_id=messages.LAZY_DETACH,
            target=target,
            lazy="true",
            **busy.details,
        )
    return Outcome.ok(
        f"unmounted {entry.source} from {target}" + notes,
        message_id=messages.UNMOUNTED,
        target=target,
        lazy="false",
        **busy.details,
    )


def do_unmount(
    spec: UnmountSpec, *, ledger: MountLedger, guard: Guard, deadline: Deadline
) -> Outcome:
    """Unmount the agent's mount(s) of ``spec.source`` (at ``spec.target`` when given)."""
    if spec.target is not None:
        target = os.path.normpath(spec.target)
        entry = ledger.get(target)
        entries = [entry] if entry is not None else []
    else:
        target = None
        dev = None if spec.device_gone else mountinfo.device_number(spec.source)
        entries = ledger.find(source=spec.source, dev=dev)
    if not entries:
        table = mountinfo.read()
        dev = None if spec.device_gone else mountinfo.device_number(spec.source)
        foreign = [
            e.mountpoint
            for e in table
            if (target is not None and e.mountpoint == target)
            or (dev is not None and e.dev == dev)
            or (target is None and e.source == spec.source)
        ]
        if foreign:
            return Outcome.skipped(
                f"{spec.source} is mounted at {', '.join(foreign)} but not by the agent; "
                "left alone",
                mounted_at=",".join(foreign),
            )
        return Outcome.ok(f"{spec.source} is not mounted by the agent; nothing to unmount")
    outcomes = [_unmount_entry(spec, e, ledger, guard, deadline) for e in entries]
    if len(outcomes) == 1:
        return outcomes[0]
    worst = next((o for o in outcomes if o.error), outcomes[-1])
    return type(worst)(
        status=worst.status,
        message=" | ".join(o.message for o in outcomes),
        error=worst.error,
        details=worst.details,
        message_id=worst.message_id,
    )
