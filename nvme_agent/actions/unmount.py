"""The unmount action: hot-remove lazy detach, or a graceful unmount that deals with holders.

Only mounts recorded in the ledger (made by the agent) are ever unmounted, and only the
directories the agent created are removed (``rmdir``, never a recursive delete).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import psutil

from nvme_agent.actions import messages, mountinfo, safedirs
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.holders import Holder, find_holders, holder_details
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.policy.plan import UnmountSpec

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


def _umount(target: str, deadline: Deadline, *, lazy: bool) -> str | None:
    """Run umount; None on success, else the error text."""
    argv = ["umount", "-l", target] if lazy else ["umount", target]
    try:
        proc = run_tool(argv, deadline)
    except ActionError as exc:
        return str(exc)
    return None if proc.returncode == 0 else tool_error(proc)


def _still_mounted(entry: LedgerEntry) -> bool:
    return any(e.mountpoint == entry.target and e.dev == entry.dev for e in mountinfo.read())


def _cleanup(spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger) -> list[str]:
    left = list(entry.created_dirs)
    if spec.remove_mountpoint and entry.created_dirs:
        left = safedirs.remove_dirs(spec.mount_root, entry.created_dirs)
    ledger.mark_unmounted(entry.target, tuple(left))
    return left


def _signal_holders(
    holders: list[Holder], sig: signal.Signals, deadline: Deadline, major: int, minor: int
) -> tuple[list[Holder], list[str]]:
    """Send ``sig`` to the holders, then wait (bounded) until the mount is no longer held.

    Returns the holders left and notes.  The wait ends as soon as nothing holds the mount
    (a holder may release it without exiting); ``psutil.wait_procs`` paces the re-checks.
    A little of the budget is kept for sync and umount.
    """
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
            log.info("sent %s to %s holding the mount", sig.name, h.describe())
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as exc:
            notes.append(f"cannot signal {h.describe()}: {exc}")
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


def _unmount_entry(
    spec: UnmountSpec, entry: LedgerEntry, ledger: MountLedger, guard: Guard, deadline: Deadline
) -> Outcome:
    target = entry.target
    if entry.dev in guard.root_devices():
        raise ActionError(f"refusing to unmount {target}: {entry.dev} backs the root filesystem")
    guard.check_target(target)
    table = mountinfo.read()
    ours = [e for e in table if e.mountpoint == target and e.dev == entry.dev]
    if not ours:
        busy = mountinfo.top_mount_at(table, target) is not None
        left = list(entry.created_dirs) if busy else _cleanup(spec, entry, ledger)
        if busy:
            ledger.mark_unmounted(target, entry.created_dirs)
        return Outcome.ok(
            f"{entry.source} is no longer mounted at {target}; nothing to unmount"
            + (f" (left in place: {', '.join(left)})" if left else ""),
            target=target,
        )
    top = mountinfo.top_mount_at(table, target)
    if top is not None and top.dev != entry.dev:
        return Outcome.failed(
            f"the agent's mount of {entry.source} at {target} is covered by a mount of "
            f"{top.source}; refusing to unmount that"
        )
    major, minor = (int(x) for x in entry.dev.split(":"))

    if spec.device_gone:
        err = _umount(target, deadline, lazy=True)
        if err:
            return Outcome.failed(f"lazy detach of {target} failed", err)
        left = _cleanup(spec, entry, ledger)
        return Outcome.ok(
            f"lazily detached {target} ({entry.source} is gone): data not yet written to the "
            "device may have been lost" + (f"; left in place: {', '.join(left)}" if left else ""),
            message_id=messages.LAZY_DETACH,
            target=target,
            lazy="true",
            data_loss="possible",
        )

    notes: list[str] = []
    holders = find_holders(major, minor)
    details = holder_details(holders) if holders else {}
    lazy = False
    if holders:
        names = "; ".join(h.describe() for h in holders)
        if spec.on_busy == "fail":
            return Outcome.failed(
                f"{target} is busy, left mounted: held by {names}",
                target=target,
                **details,
            )
        if spec.on_busy == "lazy":
            lazy = True
        else:
            remaining, more = _signal_holders(
                holders, parse_signal(spec.signal), deadline, major, minor
            )
            notes += more
            if remaining:
                details = holder_details(remaining)
                left_names = "; ".join(h.describe() for h in remaining)
                if not spec.lazy_fallback:
                    return Outcome.failed(
                        f"{target} is still busy after {spec.signal}, left mounted: "
                        f"held by {left_names}",
                        target=target,
                        **details,
                    )
                lazy = True
                notes.append(f"still held by {left_names}")
            else:
                notes.append(f"holders exited after {spec.signal}: {names}")

    try:
        sync = run_tool(["sync", "-f", target], deadline)
        if sync.returncode != 0:
            notes.append(f"sync: {tool_error(sync)}")
    except ActionError as exc:
        notes.append(f"sync: {exc}")
    err = None if lazy else _umount(target, deadline, lazy=False)
    if err and spec.lazy_fallback:
        notes.append(f"umount failed ({err})")
        lazy = True
    elif err:
        return Outcome.failed(f"unmounting {target} failed, left mounted", err, **details)
    if lazy:
        err = _umount(target, deadline, lazy=True)
        if err:
            return Outcome.failed(f"lazy detach of {target} failed", err, **details)
    if _still_mounted(entry) and not lazy:
        return Outcome.failed(f"{target} is still in mountinfo after umount", None, **details)
    left = _cleanup(spec, entry, ledger)
    if left:
        notes.append(f"left in place: {', '.join(left)}")
    if lazy:
        return Outcome.ok(
            f"lazily detached {target}: the filesystem stays in use until its holders exit; "
            "do not remove the device before they do" + (f"; {'; '.join(notes)}" if notes else ""),
            message_id=messages.LAZY_DETACH,
            target=target,
            lazy="true",
            **details,
        )
    return Outcome.ok(
        f"unmounted {entry.source} from {target}" + (f"; {'; '.join(notes)}" if notes else ""),
        message_id=messages.UNMOUNTED,
        target=target,
        lazy="false",
        **details,
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
