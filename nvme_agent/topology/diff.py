"""The difference between two topology snapshots, as typed changes; when a disk is a new one.

Used after a netlink overrun and at restart (the previous run's state file against a fresh
enumeration): instead of guessing which events were lost, compare.
"""

from __future__ import annotations

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, NamespacePath, TopologySnapshot


def is_new_instance(old: Namespace, new: Namespace) -> bool:
    """True when ``new`` is a different disk than ``old`` under the same key.

    A different identity (or nsid) is conclusive.  A different DISKSEQ of the same device
    means the kernel created a new gendisk: a detach and reattach happened, even if a weak
    identity cannot tell the images apart.  Another device that was already a path of ``old``
    (without native multipath each controller has its own disk) is the same namespace.
    """
    if old.nsid != new.nsid or old.identity != new.identity:
        return True
    if old.devpath != new.devpath and any(p.devpath == new.devpath for p in old.paths):
        return False
    return old.diskseq is not None and new.diskseq is not None and old.diskseq != new.diskseq


def instance_reason(old: Namespace, new: Namespace) -> str:
    if old.identity != new.identity:
        return f"identity changed: {old.identity} -> {new.identity}"
    return f"new disk instance: diskseq {old.diskseq} -> {new.diskseq}"


def removal(ns: Namespace, reason: str | None, seqnum: int = 0) -> list[Change]:
    """A namespace going away: its partitions first, then itself."""
    out = [
        Change(ChangeType.PARTITION_REMOVED, seqnum, namespace=ns, partition=p, reason=reason)
        for p in ns.partitions
    ]
    out.append(Change(ChangeType.NAMESPACE_REMOVED, seqnum, namespace=ns, reason=reason))
    return out


def addition(ns: Namespace, reason: str | None) -> list[Change]:
    out = [Change(ChangeType.NAMESPACE_ADDED, namespace=ns, reason=reason)]
    out.extend(
        Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=p, reason=reason)
        for p in ns.partitions
    )
    return out


def path_changes(before: Namespace, after: Namespace) -> tuple[list[Change], list[Change]]:
    """(lost, added) paths between two states of one namespace, matched by controller."""
    old = _paths_by_controller(before.paths)
    new = _paths_by_controller(after.paths)
    lost = [
        Change(ChangeType.PATH_LOST, namespace=after, previous=before, path=p)
        for c, p in old.items()
        if c not in new
    ]
    added = [
        Change(ChangeType.PATH_ADDED, namespace=after, previous=before, path=p)
        for c, p in new.items()
        if c not in old
    ]
    return lost, added


def _paths_by_controller(paths: tuple[NamespacePath, ...]) -> dict[str | None, NamespacePath]:
    return {p.controller: p for p in paths}


def _same_namespace(before: Namespace, after: Namespace) -> tuple[list[Change], list[Change]]:
    """(removals, additions) of a namespace present in both snapshots."""
    changes: list[Change] = []
    additions: list[Change] = []
    if before.size_bytes != after.size_bytes:
        changes.append(Change(ChangeType.NAMESPACE_RESIZED, namespace=after, previous=before))
    if before.fs != after.fs:
        changes.append(
            Change(
                ChangeType.NAMESPACE_CHANGED,
                namespace=after,
                previous=before,
                reason="filesystem changed",
            )
        )
    before_parts = {p.devpath: p for p in before.partitions}
    after_parts = {p.devpath: p for p in after.partitions}
    changes.extend(
        Change(ChangeType.PARTITION_REMOVED, namespace=after, partition=part)
        for path, part in before_parts.items()
        if path not in after_parts
    )
    additions.extend(
        Change(ChangeType.PARTITION_ADDED, namespace=after, partition=part)
        for path, part in after_parts.items()
        if path not in before_parts
    )
    if before.paths:  # a state file of an older version knows no paths: nothing to compare
        lost, added = path_changes(before, after)
        changes.extend(lost)
        additions.extend(added)
    return changes, additions


def diff_snapshots(old: TopologySnapshot, new: TopologySnapshot) -> list[Change]:
    """Changes that turn ``old`` into ``new`` (removals first, then additions).

    Namespaces are matched on (NQN, nsid); a different identity or DISKSEQ under the same key
    is a removal plus an addition, never a change.
    """
    changes: list[Change] = []
    old_ns = {n.key: n for n in old.namespaces}
    new_ns = {n.key: n for n in new.namespaces}
    additions: list[Change] = []
    for key, before in old_ns.items():
        after = new_ns.get(key)
        if after is None:
            changes.extend(removal(before, "gone"))
        elif is_new_instance(before, after):
            reason = instance_reason(before, after)
            changes.extend(removal(before, reason))
            additions.extend(addition(after, reason))
        else:
            removed, added = _same_namespace(before, after)
            changes.extend(removed)
            additions.extend(added)
    for key, after in new_ns.items():
        if key not in old_ns:
            additions.extend(addition(after, None))
    old_ctrl = {c.name: c for c in old.controllers}
    new_ctrl = {c.name: c for c in new.controllers}
    for name, ctrl in old_ctrl.items():
        if name not in new_ctrl or new_ctrl[name].devpath != ctrl.devpath:
            changes.append(Change(ChangeType.CONTROLLER_REMOVED, controller=ctrl))
    ctrl_adds = [
        Change(ChangeType.CONTROLLER_ADDED, controller=c)
        for name, c in new_ctrl.items()
        if name not in old_ctrl or old_ctrl[name].devpath != c.devpath
    ]
    return changes + ctrl_adds + additions
