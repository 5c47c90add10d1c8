"""Mounts whose device went away while the plans that ran did not unmount them (pure).

A mount of a device that is gone is dead: reads fail, writes are lost while ``write`` and
``sync`` report success.  The plan of a removal normally unmounts it (its rule's implied
unmount), but not always:

* **a removal decided by another rule**: the rule that matches a namespace when it goes
  may not be the one that mounted it (its path count changed, its size, its first
  controller), and that rule's plan unmounts nothing of the old one's.  After a removal that
  is not an eject, every mount of ours whose source is the removed device and that the plan
  does not unmount is lazily detached (:func:`left_behind`);
* **the mounted device of a namespace that stays**: without native multipath each
  controller has a disk of its own for a shared namespace, and the namespace's device is the
  first one seen.  When the path whose disk that is goes (``nvme0n1``), the namespace stays
  through the next one (``nvme1n1``), and its ``path-lost`` plan only runs hooks.  Every
  mount of ours whose source is the lost path's device is lazily detached
  (:func:`lost_with_path`).

**Mounting again through the surviving device**: when the namespace's device changed with a
lost path, the daemon decides the add plans of the namespace (and its partitions) as it is
now (:func:`remount_changes`) and runs them after the detach, under the same plan key: the
namespace is still present, so the policy's answer for a present namespace applies, as it
would after a restart.  The filesystem is mounted afresh from the surviving device (its
journal replayed like after a crash); processes that held the dead mount keep failing until
they reopen their files, which the rule's ``on_add`` hooks can tell them.  The duplicate
check allows it: the dead device is no longer in the topology.  An ejected namespace is not
mounted again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

from nvme_agent.actions.ledger import LedgerEntry
from nvme_agent.policy.plan import Plan, UnmountSpec
from nvme_agent.service.recovery import EJECT_REASON
from nvme_agent.topology.changes import REMOVE_KINDS, Change, ChangeType


def detach_spec(entry: LedgerEntry) -> UnmountSpec:
    """A lazy detach of our mount ``entry`` (its device is gone: nothing to flush)."""
    first = entry.created_dirs[0] if entry.created_dirs else entry.target
    return UnmountSpec(
        source=entry.source,
        target=entry.target,
        mount_root=os.path.dirname(first.rstrip("/")) or "/",  # where we made the mountpoint
        device_gone=True,
        on_busy="lazy",
    )


def left_behind(plan: Plan, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """Our mounts of the device a removal ``plan`` is about that it does not unmount (none
    for an eject: the device is still there and eject answers for what it did)."""
    change = plan.change
    if change.type not in REMOVE_KINDS or change.reason == EJECT_REASON:
        return []
    gone = change.devnode
    if not gone:
        return []
    unmounts = [a for a in plan.actions if isinstance(a, UnmountSpec) and a.source == gone]
    if any(a.target is None for a in unmounts):
        return []  # unmounts every mount of the source
    covered = {os.path.normpath(a.target) for a in unmounts if a.target is not None}
    return [e for e in entries if e.mounted and e.source == gone and e.target not in covered]


def lost_with_path(change: Change, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """Our mounts whose source is the device of the path a ``path-lost`` took away."""
    lost = change.path.devnode if change.path is not None else None
    if change.type is not ChangeType.PATH_LOST or not lost:
        return []
    return [e for e in entries if e.mounted and e.source == lost]


def device_changed(change: Change) -> bool:
    """A ``path-lost`` that took the namespace's device with it (without native multipath:
    the next path's disk is the device now)."""
    before, after = change.previous, change.namespace
    return (
        change.type is ChangeType.PATH_LOST
        and before is not None
        and after is not None
        and before.devnode != after.devnode
    )


def remount_changes(change: Change) -> list[Change]:
    """The additions to decide for the namespace of a device-changing ``path-lost``: the
    namespace and its partitions as they are now, with the reason."""
    ns, before = change.namespace, change.previous
    if ns is None or before is None or not device_changed(change):
        return []
    reason = f"device {before.devnode} went with its path; now {ns.devnode}"
    out = [Change(ChangeType.NAMESPACE_ADDED, change.seqnum, namespace=ns, reason=reason)]
    out += [
        Change(ChangeType.PARTITION_ADDED, change.seqnum, namespace=ns, partition=p, reason=reason)
        for p in ns.partitions
    ]
    return out


def detach_plan(change: Change, key: str, entries: list[LedgerEntry], why: str) -> Plan:
    """One plan that lazily detaches ``entries``, keyed and attributed like ``change``."""
    return Plan(
        change=dataclasses.replace(change, reason=change.reason or why),
        key=key,
        actions=tuple(detach_spec(e) for e in entries),
        explanation=(why,),
    )
