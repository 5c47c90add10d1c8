"""The live NVMe topology: device records in, typed changes out.

:class:`Topology` is the only mutable piece of the model.  It is fed :class:`DeviceRecord`s in
arrival order and answers each with zero or more :class:`Change`s.

* Disks are tracked by devpath (what ``remove`` events carry); namespaces by (subsystem NQN,
  nsid), never by the block device name (``nvme0nN`` follows attach order, not NSIDs).
* A namespace is reached through one or more **paths**.  With native multipath the visible
  head ``nvmeXnY`` is the namespace and the paths are its controllers (the hidden
  ``nvmeXcYnZ`` disks when seen, else the subsystem's controllers).  Without it every
  controller has its own disk for the namespace (``nvme0n1`` and ``nvme1n1``): the first disk
  seen is the namespace's device, the others are further paths, and the namespace is removed
  only when its last disk goes.
* A controller is announced once it is live: a fabrics controller that is still connecting
  reads ``(efault)`` for its attributes and is held back until they complete.

Duplicate and out-of-order input (the add of a known device, the remove of an unknown one, a
partition before its disk) is absorbed here and logged at debug level, never raised.  Every
update costs the same whatever the number of namespaces: lookups go through indexes, the
snapshot handed to the policy is rebuilt only after a change, once, and its lookup tables are
kept up to date here rather than rebuilt (:mod:`~nvme_agent.topology.lookup`).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Iterable

from nvme_agent.topology.build import (
    DiskContext,
    build_controller,
    build_namespace,
    build_partition,
    not_live_reason,
)
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.diff import (
    diff_snapshots,
    instance_reason,
    is_new_instance,
    path_changes,
    removal,
)
from nvme_agent.topology.lookup import Key, Lookup
from nvme_agent.topology.model import (
    Controller,
    Namespace,
    NamespacePath,
    Partition,
    Properties,
    TopologySnapshot,
)
from nvme_agent.topology.names import (
    CTRL_RE,
    DISK_RE,
    PART_RE,
    controller_of,
    generic_disk,
    generic_of,
    hidden_path,
    is_multipath_head,
    parent_dir,
    path_segment,
)
from nvme_agent.topology.records import DeviceRecord, clean_value

log = logging.getLogger(__name__)


_SUPERSEDED = "superseded: remove event lost"


class Topology:
    """The agent's current view of controllers, subsystems, namespaces, paths and partitions."""

    def __init__(self) -> None:
        self.controllers: dict[str, Controller] = {}  # announced (live), by name
        self.namespaces: dict[Key, Namespace] = {}  # the namespace: its device plus all paths
        self._pending: dict[str, Controller] = {}  # controllers seen but not live yet
        self._subsystems: dict[str, str | None] = {}  # nvme-subsysN -> NQN
        self._devices: dict[str, Namespace] = {}  # disk devpath -> the namespace as it shows it
        self._key_of: dict[str, Key] = {}  # disk devpath -> namespace key
        self._groups: dict[Key, list[str]] = {}  # key -> disk devpaths, the device first
        # The snapshot's order, kept sorted as namespaces come and go, so that a snapshot is a
        # copy of a list rather than a sort of every namespace after each change.
        self._order: list[Key] = []
        self._ordered: list[Namespace] = []  # namespaces in the order of _order
        self._hidden: dict[str, dict[str, str]] = {}  # head name -> {controller: path devpath}
        self._heads: dict[str, str] = {}  # multipath head name -> devpath
        self._pending_parts: dict[str, dict[str, Partition]] = {}
        self._generics: dict[str, str] = {}  # ng devpath -> ng name
        self._lookup = Lookup()  # the snapshot's tables, kept namespace by namespace
        self._snapshot: TopologySnapshot | None = None

    # ----------------------------------------------------------------- queries
    def snapshot(self) -> TopologySnapshot:
        """An immutable copy, namespaces ordered by (NQN, nsid); the same object until the
        topology changes, so a burst of decisions shares one."""
        if self._snapshot is None:
            self._snapshot = TopologySnapshot.indexed(
                tuple(self.controllers[k] for k in sorted(self.controllers)),
                tuple(self._ordered),
                self._lookup.share(),
            )
        return self._snapshot

    def by_key(self, subsysnqn: str | None, nsid: int) -> Namespace | None:
        """The namespace ``nsid`` of ``subsysnqn`` (of any subsystem when ``None``)."""
        if subsysnqn is None:
            return self.snapshot().namespace(nsid)
        return self.namespaces.get((subsysnqn, nsid))

    def find_device(self, devnode: str) -> tuple[Namespace, Partition | None] | None:
        """The namespace (and partition) whose device node is ``devnode``."""
        return self.snapshot().device(devnode)

    # ----------------------------------------------------------------- intake
    def apply(self, record: DeviceRecord) -> list[Change]:
        """Fold one record into the topology and return the changes it caused."""
        action = record.action
        if action in ("bind", "unbind", "move", "online", "offline"):
            # bind/unbind concern drivers; the devices they affect send their own add/remove.
            log.debug("ignoring %s of %s", action, record.devpath)
            return []
        handler = {
            "block": self._apply_block,
            "nvme": self._apply_controller,
            "nvme-subsystem": self._apply_subsystem,
            "nvme-generic": self._apply_generic,
        }.get(record.subsystem)
        if handler is None:
            return []
        return handler(record)

    def apply_all(self, records: Iterable[DeviceRecord]) -> list[Change]:
        changes: list[Change] = []
        for record in records:
            changes.extend(self.apply(record))
        return changes

    def reconcile(self, records: Iterable[DeviceRecord]) -> list[Change]:
        """Replace the view with a fresh enumeration and return what differs.

        Used after a netlink overrun (ENOBUFS) and at restart: instead of guessing which
        events were lost, rebuild and diff.
        """
        fresh = Topology()
        fresh.apply_all(records)
        changes = diff_snapshots(self.snapshot(), fresh.snapshot())
        self.__dict__.update(fresh.__dict__)
        return changes

    # ----------------------------------------------------------------- controllers
    def _apply_subsystem(self, record: DeviceRecord) -> list[Change]:
        if record.action == "remove":
            self._subsystems.pop(record.sysname, None)
        else:
            self._subsystems[record.sysname] = record.attr("subsysnqn")
        return []

    def _controller(self, name: str) -> Controller | None:
        return self.controllers.get(name) or self._pending.get(name)

    def _apply_controller(self, record: DeviceRecord) -> list[Change]:
        name = record.sysname
        if not CTRL_RE.match(name):
            return []
        if record.action == "remove":
            return self._remove_controller(record)
        known = self.controllers.get(name)
        base = known or self._pending.get(name)
        if base is not None and base.devpath != record.devpath:
            base = None  # another device under a reused name: nothing of the old one carries over
        ctrl = build_controller(record, base)
        if known is None:
            return self._announce(record, ctrl)
        if known.devpath != ctrl.devpath or known.subsysnqn != ctrl.subsysnqn:
            # Same kernel name, different controller: the old one went away unseen.
            changes = self._forget_controller(known, record.seqnum)
            return changes + self._announce(record, ctrl)
        self.controllers[name] = ctrl
        if ctrl == known:
            return []
        log.debug("controller %s updated: state %s -> %s", name, known.state, ctrl.state)
        self._snapshot = None
        # Its paths now show the new state; the set of paths stays the same.
        return self._refresh(self._reached_through(name), record.seqnum, record.coldplug)

    def _announce(self, record: DeviceRecord, ctrl: Controller) -> list[Change]:
        """Announce a live controller; hold back one that is still connecting."""
        reason = not_live_reason(record, ctrl)
        if reason is not None:
            self._pending[ctrl.name] = ctrl
            log.debug("controller %s not live yet (%s): not announced", ctrl.name, reason)
            return []
        self._pending.pop(ctrl.name, None)
        self.controllers[ctrl.name] = ctrl
        self._snapshot = None
        added = Change(
            ChangeType.CONTROLLER_ADDED, record.seqnum, controller=ctrl, coldplug=record.coldplug
        )
        # Multipath heads whose paths are inferred from the subsystem gain one through it.
        affected = self._reached_through(ctrl.name) + self._inferred_heads(ctrl.subsysnqn)
        return [added, *self._refresh(affected, record.seqnum, record.coldplug)]

    def _remove_controller(self, record: DeviceRecord) -> list[Change]:
        name = record.sysname
        if self._pending.pop(name, None) is not None:
            log.debug("controller %s went away before it was live", name)
        old = self.controllers.get(name)
        if old is None:
            log.debug("remove of unknown controller %s", record.devpath)
            return []
        return self._forget_controller(old, record.seqnum)

    def _forget_controller(self, old: Controller, seqnum: int) -> list[Change]:
        """Drop ``old`` and every path through it; ``controller-removed`` comes last."""
        del self.controllers[old.name]
        self._snapshot = None
        reason = f"controller {old.name} removed"
        changes: list[Change] = []
        # Its own disks normally went first (udev orders children before parents); a disk
        # whose remove was lost cannot outlive its controller.
        for devpath in [d for d in self._devices if parent_dir(d) == old.devpath]:
            changes.extend(self._detach(devpath, seqnum, reason))
        for hidden in self._hidden.values():
            hidden.pop(old.name, None)
        changes.extend(self._refresh(self._reached_through(old.name), seqnum, reason=reason))
        changes.append(Change(ChangeType.CONTROLLER_REMOVED, seqnum, controller=old))
        return changes

    def _reached_through(self, ctrl: str) -> list[Key]:
        return [k for k, ns in self.namespaces.items() if ctrl in ns.controllers]

    def _inferred_heads(self, subsysnqn: str | None) -> list[Key]:
        if subsysnqn is None:
            return []
        return [
            k
            for k, ns in self.namespaces.items()
            if ns.multipath and ns.subsysnqn == subsysnqn and ns.name not in self._hidden
        ]

    def _refresh(
        self,
        keys: Iterable[Key],
        seqnum: int,
        coldplug: bool = False,
        reason: str | None = None,
    ) -> list[Change]:
        """Rebuild the paths of ``keys``; the paths that came or went, as changes."""
        changes: list[Change] = []
        for key in dict.fromkeys(keys):
            before = self.namespaces[key]
            lost, added = path_changes(before, self._publish(key))
            changes.extend(
                dataclasses.replace(c, seqnum=seqnum, coldplug=coldplug, reason=reason)
                for c in lost + added
            )
        return changes

    # ----------------------------------------------------------------- generic char devices
    def _apply_generic(self, record: DeviceRecord) -> list[Change]:
        disk = generic_disk(record.devpath)
        if disk is None:
            return []
        generic: str | None = None
        if record.action == "remove":
            self._generics.pop(record.devpath, None)
        else:
            self._generics[record.devpath] = generic = record.sysname
        dev = self._devices.get(disk)
        if dev is not None:
            self._devices[disk] = dataclasses.replace(dev, generic=generic)
            self._republish(disk)
        return []

    # ----------------------------------------------------------------- block devices
    def _apply_block(self, record: DeviceRecord) -> list[Change]:
        name = record.sysname
        hidden = hidden_path(name)
        if hidden is not None:
            return self._apply_hidden_path(record, *hidden)
        devtype = record.devtype or record.properties.get("DEVTYPE")
        if devtype == "partition" or PART_RE.match(name):
            return self._apply_partition(record) if PART_RE.match(name) else []
        if not DISK_RE.match(name):
            return []  # not an NVMe namespace (loop, virtio, ...): never ours
        if record.action == "remove":
            self._pending_parts.pop(record.devpath, None)
            if record.devpath not in self._devices:
                log.debug("remove of unknown disk %s", record.devpath)
                return []
            return self._detach(record.devpath, record.seqnum)
        return self._add_or_change_disk(record)

    def _apply_hidden_path(self, record: DeviceRecord, head: str, ctrl: str) -> list[Change]:
        """A hidden multipath path disk: which controller reaches which head.  Enumeration
        lists them; the kernel sends no uevents for them."""
        if record.action == "remove":
            known = self._hidden.get(head)
            if known is None or known.pop(ctrl, None) is None:
                log.debug("remove of unknown path %s", record.devpath)
                return []
        else:
            self._hidden.setdefault(head, {})[ctrl] = record.devpath
        key = self._key_of.get(self._heads.get(head, ""))
        return [] if key is None else self._refresh([key], record.seqnum, record.coldplug)

    def _context(self, record: DeviceRecord, old: Namespace | None) -> DiskContext:
        """What the tracker knows about the disk of ``record`` beyond the record itself."""
        nqn: str | None = None
        if is_multipath_head(record.devpath):
            subsys = record.parent("nvme-subsystem")
            if subsys is not None:
                nqn = clean_value(subsys[1].get("subsysnqn"))
            if nqn is None:
                nqn = self._subsystems.get(path_segment(record.devpath, "nvme-subsystem") or "")
            names = self._mp_controllers(record.sysname, nqn)
        else:
            parent = record.parent("nvme")
            name = parent[0] if parent else controller_of(record.devpath)
            if parent is not None:
                nqn = clean_value(parent[1].get("subsysnqn"))
            ctrl = self._controller(name) if name else None
            nqn = nqn or (ctrl.subsysnqn if ctrl else None)
            names = (name,) if name else ()
        if old is not None:
            nqn = nqn or old.subsysnqn
            names = names or old.controllers
        return DiskContext(
            subsysnqn=nqn,
            controllers=names,
            ctrl=self._controller(names[0]) if names else None,
            generic=self._generics.get(generic_of(record.devpath) or ""),
        )

    def _mp_controllers(self, head: str, subsysnqn: str | None) -> tuple[str, ...]:
        """Controllers reaching a multipath head: its hidden path disks when enumeration saw
        them, else every live controller of its subsystem."""
        hidden = self._hidden.get(head)
        if hidden is not None:
            return tuple(sorted(hidden))
        if subsysnqn is None:
            return ()
        return tuple(sorted(c.name for c in self.controllers.values() if c.subsysnqn == subsysnqn))

    def _add_or_change_disk(self, record: DeviceRecord) -> list[Change]:
        old = self._devices.get(record.devpath)
        new = build_namespace(record, old, self._context(record, old))
        if new is None:
            return []
        if old is None:
            return self._attach(new, record)
        reason = _instance_change(old, new)
        if reason is not None:
            gone = self._detach(record.devpath, record.seqnum, reason)
            fresh = dataclasses.replace(new, partitions=())
            return gone + self._attach(fresh, record, reason)
        self._devices[record.devpath] = new
        key = self._key_of[record.devpath]
        before = self.namespaces[key]
        after = self._republish(record.devpath)
        if after is None:
            log.debug("%s %s: another path of nsid %s", record.action, record.devpath, new.nsid)
            return []
        changes: list[Change] = []
        if before.size_bytes != after.size_bytes and after.size_bytes is not None:
            changes.append(
                Change(
                    ChangeType.NAMESPACE_RESIZED, record.seqnum, namespace=after, previous=before
                )
            )
        if before.fs != after.fs:
            changes.append(
                Change(
                    ChangeType.NAMESPACE_CHANGED,
                    record.seqnum,
                    namespace=after,
                    previous=before,
                    reason="filesystem changed",
                )
            )
        if not changes:
            log.debug("%s %s: nothing changed", record.action, record.devpath)
        return changes

    def _attach(
        self, dev: Namespace, record: DeviceRecord, reason: str | None = None
    ) -> list[Change]:
        """A disk appears: a new namespace, or one more path of a known one."""
        key = dev.key
        changes = self._supersede(dev, record.seqnum) if key in self._groups else []
        self._devices[dev.devpath] = dev
        self._key_of[dev.devpath] = key
        if dev.multipath:
            self._heads[dev.name] = dev.devpath
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = [dev.devpath]
            index = bisect.bisect_left(self._order, key)
            self._order.insert(index, key)
            self._ordered.insert(index, dev)  # a placeholder until published
            ns = self._publish(key)
            changes.append(
                Change(
                    ChangeType.NAMESPACE_ADDED,
                    record.seqnum,
                    namespace=ns,
                    coldplug=record.coldplug,
                    reason=reason,
                )
            )
            return changes + self._adopt_pending(dev.devpath, record)
        before = self.namespaces[key]
        group.append(dev.devpath)
        self._adopt_pending(dev.devpath, record)  # another path's partitions: not announced
        after = self._publish(key)
        path = next((p for p in after.paths if p.devpath == dev.devpath), self._disk_path(dev))
        changes.append(
            Change(
                ChangeType.PATH_ADDED,
                record.seqnum,
                namespace=after,
                previous=before,
                path=path,
                coldplug=record.coldplug,
                reason=reason,
            )
        )
        return changes

    def _supersede(self, dev: Namespace, seqnum: int) -> list[Change]:
        """Make room for ``dev`` among the known disks of its namespace.

        A disk of the same controller (or, with native multipath, the same subsystem) at
        another devpath is stale: its remove was lost.  A namespace whose identity differs
        from ``dev``'s is gone: one NSID of one subsystem is one namespace at a time.
        """
        owner = _owner(dev.devpath)
        changes: list[Change] = []
        for stale in [d for d in self._groups[dev.key] if _owner(d) == owner]:
            changes.extend(self._detach(stale, seqnum, _SUPERSEDED))
        ns = self.namespaces.get(dev.key)
        if ns is not None and ns.identity != dev.identity:
            changes.extend(self._drop(dev.key, seqnum, instance_reason(ns, dev)))
        return changes

    def _detach(self, devpath: str, seqnum: int, reason: str | None = None) -> list[Change]:
        """A disk goes: one path fewer, or the namespace with its last one."""
        dev = self._devices.pop(devpath)
        key = self._key_of.pop(devpath)
        if dev.multipath and self._heads.get(dev.name) == devpath:
            del self._heads[dev.name]
            self._hidden.pop(dev.name, None)  # its hidden paths went with it, silently
        group = self._groups[key]
        group.remove(devpath)
        before = self.namespaces[key]
        if not group:
            return self._drop(key, seqnum, reason)
        after = self._publish(key)
        lost = next(
            (p for p in before.paths if p.devpath == devpath),
            NamespacePath(controller=None, device=dev.name, devpath=devpath, devnode=dev.devnode),
        )
        return [
            Change(
                ChangeType.PATH_LOST,
                seqnum,
                namespace=after,
                previous=before,
                path=lost,
                reason=reason,
            )
        ]

    def _drop(self, key: Key, seqnum: int, reason: str | None) -> list[Change]:
        """Forget the namespace ``key`` with all its disks; its removal changes."""
        for devpath in self._groups.pop(key):
            self._devices.pop(devpath, None)
            self._key_of.pop(devpath, None)
        ns = self.namespaces.pop(key)
        self._lookup.put(ns, None)
        index = bisect.bisect_left(self._order, key)
        del self._order[index]
        del self._ordered[index]
        self._snapshot = None
        return removal(ns, reason, seqnum)

    def _publish(self, key: Key) -> Namespace:
        """Rebuild the namespace ``key`` from its device and its paths."""
        group = self._groups[key]
        device = self._devices[group[0]]
        if device.multipath:
            names = self._mp_controllers(device.name, device.subsysnqn) or device.controllers
            hidden = self._hidden.get(device.name) or {}
            paths = tuple(self._path(c, hidden.get(c)) for c in names)
        else:
            paths = tuple(self._disk_path(self._devices[d]) for d in group)
            names = tuple(dict.fromkeys(p.controller for p in paths if p.controller))
        ns = dataclasses.replace(device, paths=paths, controllers=names or device.controllers)
        self._lookup.put(self.namespaces.get(key), ns)
        self.namespaces[key] = ns
        self._ordered[bisect.bisect_left(self._order, key)] = ns
        self._snapshot = None
        return ns

    def _republish(self, devpath: str) -> Namespace | None:
        """Rebuild the namespace of ``devpath``; it, if that disk is its device, else ``None``
        (the disk is another path: what it shows is not what the namespace is)."""
        key = self._key_of[devpath]
        ns = self._publish(key)
        return ns if self._groups[key][0] == devpath else None

    def _path(self, ctrl_name: str, devpath: str | None) -> NamespacePath:
        ctrl = self._controller(ctrl_name)
        return NamespacePath(
            controller=ctrl_name,
            device=devpath.rsplit("/", 1)[-1] if devpath else None,
            devpath=devpath,
            transport=ctrl.transport if ctrl else None,
            address=ctrl.address if ctrl else None,
            state=ctrl.state if ctrl else None,
        )

    def _disk_path(self, dev: Namespace) -> NamespacePath:
        name = dev.controllers[0] if dev.controllers else None
        ctrl = self._controller(name) if name else None
        return NamespacePath(
            controller=name,
            device=dev.name,
            devpath=dev.devpath,
            devnode=dev.devnode,
            transport=ctrl.transport if ctrl else None,
            address=ctrl.address if ctrl else None,
            state=ctrl.state if ctrl else None,
        )

    # ----------------------------------------------------------------- partitions
    def _apply_partition(self, record: DeviceRecord) -> list[Change]:
        disk = parent_dir(record.devpath)
        dev = self._devices.get(disk)
        if record.action == "remove":
            return self._remove_partition(record, disk, dev)
        if dev is None:
            # Partition before its disk: hold it until the disk shows up.
            log.debug("partition %s before its disk; holding it", record.devpath)
            part = build_partition(record, None)
            self._pending_parts.setdefault(disk, {})[record.devpath] = part
            return []
        old = next((p for p in dev.partitions if p.devpath == record.devpath), None)
        part = build_partition(record, old)
        parts = [p for p in dev.partitions if p.devpath != record.devpath] + [part]
        parts.sort(key=_partition_order)
        self._devices[disk] = dataclasses.replace(dev, partitions=tuple(parts))
        ns = self._republish(disk)
        if ns is None:
            return []  # a partition as another path shows it
        if old is None:
            return [
                Change(
                    ChangeType.PARTITION_ADDED,
                    record.seqnum,
                    namespace=ns,
                    partition=part,
                    coldplug=record.coldplug,
                )
            ]
        if old.fs != part.fs:
            return [
                Change(
                    ChangeType.NAMESPACE_CHANGED,
                    record.seqnum,
                    namespace=ns,
                    partition=part,
                    reason=f"filesystem on {part.name} changed",
                )
            ]
        log.debug("%s of known partition %s: nothing changed", record.action, record.devpath)
        return []

    def _remove_partition(
        self, record: DeviceRecord, disk: str, dev: Namespace | None
    ) -> list[Change]:
        pending = self._pending_parts.get(disk)
        if pending is not None:
            pending.pop(record.devpath, None)
        if dev is None:
            log.debug("remove of partition %s of unknown disk", record.devpath)
            return []
        part = next((p for p in dev.partitions if p.devpath == record.devpath), None)
        if part is None:
            log.debug("remove of unknown partition %s", record.devpath)
            return []
        remaining = tuple(p for p in dev.partitions if p.devpath != record.devpath)
        self._devices[disk] = dataclasses.replace(dev, partitions=remaining)
        ns = self._republish(disk)
        if ns is None:
            return []
        return [Change(ChangeType.PARTITION_REMOVED, record.seqnum, namespace=ns, partition=part)]

    def _adopt_pending(self, devpath: str, record: DeviceRecord) -> list[Change]:
        pending = self._pending_parts.pop(devpath, None)
        if not pending:
            return []
        parts = sorted(pending.values(), key=_partition_order)
        self._devices[devpath] = dataclasses.replace(
            self._devices[devpath], partitions=tuple(parts)
        )
        ns = self._republish(devpath)
        if ns is None:
            return []
        return [
            Change(
                ChangeType.PARTITION_ADDED,
                record.seqnum,
                namespace=ns,
                partition=p,
                coldplug=record.coldplug,
            )
            for p in parts
        ]


def _owner(devpath: str) -> str | None:
    """Who exposes a disk: its controller, or with native multipath its subsystem."""
    if is_multipath_head(devpath):
        return "subsystem:" + (path_segment(devpath, "nvme-subsystem") or "")
    return controller_of(devpath)


def _partition_order(part: Partition) -> tuple[int, str]:
    return (part.number or 0, part.name)


def _instance_change(old: Namespace, new: Namespace) -> str | None:
    """Why the disk at one devpath now holds a different namespace (``None``: it does not)."""
    if is_new_instance(old, new):
        return instance_reason(old, new)
    if old.key != new.key:
        return f"subsystem changed: {old.subsysnqn} -> {new.subsysnqn}"
    return None


__all__ = ["Key", "Properties", "Topology", "diff_snapshots"]
