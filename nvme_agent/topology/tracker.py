"""The live NVMe topology and the diff that turns device records into typed changes.

:class:`Topology` is the only mutable piece of the model.  It is fed :class:`DeviceRecord`s in
arrival order and answers each with zero or more :class:`Change`s.  It never keys anything on
the block device name (``nvme0nN`` follows attach order, not NSIDs): namespaces are indexed
by devpath (what ``remove`` events carry) and by (subsystem NQN, nsid).

Duplicate and out-of-order input (the add of a known device, the remove of an unknown one, a
partition before its disk) is absorbed here and logged at debug level, never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import (
    Controller,
    Filesystem,
    Identity,
    Namespace,
    Partition,
    Properties,
    TopologySnapshot,
)
from nvme_agent.topology.records import DeviceRecord

log = logging.getLogger(__name__)

#: Visible namespace disks: nvme<subsys-or-ctrl instance>n<ns index>.
DISK_RE = re.compile(r"^nvme(\d+)n(\d+)$")
#: Hidden per-path devices of native multipath: nvme<subsys>c<ctrl>n<ns index>.
PATH_RE = re.compile(r"^nvme(\d+)c(\d+)n(\d+)$")
PART_RE = re.compile(r"^(nvme\d+n\d+)p(\d+)$")
GENERIC_RE = re.compile(r"^ng(\d+)n(\d+)$")
CTRL_RE = re.compile(r"^nvme(\d+)$")


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


def _attr(record: DeviceRecord, name: str) -> str | None:
    value = record.attributes.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass
class _SubsystemInfo:
    subsysnqn: str | None
    serial: str | None
    model: str | None


@dataclass
class Topology:
    """The agent's current view of controllers, subsystems, namespaces and partitions."""

    controllers: dict[str, Controller] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)  # by devpath
    _subsystems: dict[str, _SubsystemInfo] = field(default_factory=dict)
    _ctrl_by_devpath: dict[str, str] = field(default_factory=dict)
    _pending_parts: dict[str, dict[str, Partition]] = field(default_factory=dict)
    _generics: dict[str, str] = field(default_factory=dict)  # ng devpath -> ng name
    _paths: dict[str, set[str]] = field(default_factory=dict)  # head name -> controllers

    # ----------------------------------------------------------------- queries
    def snapshot(self) -> TopologySnapshot:
        """An immutable copy, namespaces ordered by (NQN, nsid)."""
        return TopologySnapshot(
            controllers=tuple(self.controllers[k] for k in sorted(self.controllers)),
            namespaces=tuple(sorted(self.namespaces.values(), key=lambda n: n.key)),
        )

    def by_key(self, subsysnqn: str | None, nsid: int) -> Namespace | None:
        for ns in self.namespaces.values():
            if ns.nsid == nsid and (subsysnqn is None or ns.subsysnqn == subsysnqn):
                return ns
        return None

    def find_device(self, devnode: str) -> tuple[Namespace, Partition | None] | None:
        """The namespace (and partition) whose device node is ``devnode``."""
        for ns in self.namespaces.values():
            if ns.devnode == devnode:
                return ns, None
            for part in ns.partitions:
                if part.devnode == devnode:
                    return ns, part
        return None

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
            self._subsystems[record.sysname] = _SubsystemInfo(
                subsysnqn=_attr(record, "subsysnqn"),
                serial=_attr(record, "serial"),
                model=_attr(record, "model"),
            )
        return []

    def _apply_controller(self, record: DeviceRecord) -> list[Change]:
        name = record.sysname
        if not CTRL_RE.match(name):
            return []
        if record.action == "remove":
            old = self.controllers.pop(name, None)
            self._ctrl_by_devpath.pop(record.devpath, None)
            if old is None:
                log.debug("remove of unknown controller %s", record.devpath)
                return []
            return [Change(ChangeType.CONTROLLER_REMOVED, record.seqnum, controller=old)]
        ctrl = Controller(
            name=name,
            devpath=record.devpath,
            serial=_attr(record, "serial"),
            model=_attr(record, "model"),
            firmware=_attr(record, "firmware_rev"),
            subsysnqn=_attr(record, "subsysnqn"),
            cntlid=_int(_attr(record, "cntlid")),
            transport=_attr(record, "transport") or record.properties.get("NVME_TRTYPE"),
            address=_attr(record, "address"),
            state=_attr(record, "state"),
        )
        old = self.controllers.get(name)
        if old is not None and not record.attributes:
            return []  # a change event whose attributes could not be read: keep what we know
        self.controllers[name] = ctrl
        self._ctrl_by_devpath[record.devpath] = name
        if old is None:
            return [
                Change(
                    ChangeType.CONTROLLER_ADDED,
                    record.seqnum,
                    controller=ctrl,
                    coldplug=record.coldplug,
                )
            ]
        if old.devpath != ctrl.devpath or old.subsysnqn != ctrl.subsysnqn:
            # Same kernel name, different controller: the old one went away unseen.
            return [
                Change(ChangeType.CONTROLLER_REMOVED, record.seqnum, controller=old),
                Change(ChangeType.CONTROLLER_ADDED, record.seqnum, controller=ctrl),
            ]
        if old != ctrl:
            log.debug("controller %s updated: state %s -> %s", name, old.state, ctrl.state)
        return []

    # ----------------------------------------------------------------- generic char devices
    def _apply_generic(self, record: DeviceRecord) -> list[Change]:
        match = GENERIC_RE.match(record.sysname)
        if not match:
            return []
        head = f"nvme{match.group(1)}n{match.group(2)}"
        parent_dir = record.devpath.rsplit("/", 1)[0]
        if record.action == "remove":
            self._generics.pop(record.devpath, None)
            generic: str | None = None
        else:
            self._generics[record.devpath] = record.sysname
            generic = record.sysname
        for devpath, ns in self.namespaces.items():
            if ns.name == head and devpath.rsplit("/", 1)[0] == parent_dir:
                self.namespaces[devpath] = dataclasses.replace(ns, generic=generic)
        return []

    def _generic_for(self, ns_name: str, devpath: str) -> str | None:
        match = DISK_RE.match(ns_name)
        if not match:
            return None
        wanted = f"{devpath.rsplit('/', 1)[0]}/ng{match.group(1)}n{match.group(2)}"
        return self._generics.get(wanted)

    # ----------------------------------------------------------------- block devices
    def _apply_block(self, record: DeviceRecord) -> list[Change]:
        name = record.sysname
        path = PATH_RE.match(name)
        if path is not None:
            # Hidden multipath path device: it tells which controller reaches which head.
            head = f"nvme{path.group(1)}n{path.group(3)}"
            ctrls = self._paths.setdefault(head, set())
            if record.action == "remove":
                ctrls.discard(f"nvme{path.group(2)}")
            else:
                ctrls.add(f"nvme{path.group(2)}")
            return []
        devtype = record.devtype or record.properties.get("DEVTYPE")
        if devtype == "partition" or PART_RE.match(name):
            if not PART_RE.match(name):
                return []
            return self._apply_partition(record)
        if not DISK_RE.match(name):
            return []  # not an NVMe namespace (loop, virtio, ...): never ours
        if record.action == "remove":
            return self._remove_disk(record)
        return self._add_or_change_disk(record)

    def _build_namespace(self, record: DeviceRecord, old: Namespace | None) -> Namespace | None:
        props = record.properties
        nsid = _int(_attr(record, "nsid")) or _int(props.get("ID_NSID"))
        if nsid is None:
            if old is not None:
                nsid = old.nsid
            else:
                log.warning("%s: no nsid attribute or ID_NSID property; ignored", record.devpath)
                return None
        multipath = "/nvme-subsystem/" in record.devpath
        subsys = record.parent("nvme-subsystem")
        ctrl_parent = record.parent("nvme")
        subsysnqn: str | None = None
        controllers: tuple[str, ...] = ()
        if multipath:
            if subsys is not None:
                subsysnqn = (subsys[1].get("subsysnqn") or "").strip() or None
            if subsysnqn is None:
                info = self._subsystems.get(_path_segment(record.devpath, "nvme-subsystem") or "")
                subsysnqn = info.subsysnqn if info else None
            paths = self._paths.get(record.sysname)
            if paths:
                controllers = tuple(sorted(paths))
            else:
                controllers = tuple(
                    sorted(
                        c.name
                        for c in self.controllers.values()
                        if subsysnqn is not None and c.subsysnqn == subsysnqn
                    )
                )
        else:
            ctrl_name = ctrl_parent[0] if ctrl_parent else _path_segment(record.devpath, "nvme")
            if ctrl_name:
                controllers = (ctrl_name,)
                if ctrl_parent is not None:
                    subsysnqn = (ctrl_parent[1].get("subsysnqn") or "").strip() or None
                if subsysnqn is None and ctrl_name in self.controllers:
                    subsysnqn = self.controllers[ctrl_name].subsysnqn
        if subsysnqn is None and old is not None:
            subsysnqn = old.subsysnqn
        if not controllers and old is not None:
            controllers = old.controllers
        ctrl = self.controllers.get(controllers[0]) if controllers else None

        uuid = _attr(record, "uuid")
        nguid = _attr(record, "nguid")
        eui64 = _attr(record, "eui")
        wwid = _attr(record, "wwid") or props.get("ID_WWN") or None
        if not record.attributes and old is not None:
            # Attributes unreadable (raced with removal): keep the identifiers we had.
            uuid, nguid, eui64, wwid = old.uuid, old.nguid, old.eui64, wwid or old.wwid
        sectors = _int(_attr(record, "size"))
        size_bytes = sectors * 512 if sectors is not None else (old.size_bytes if old else None)
        lba = _int(_attr(record, "queue/logical_block_size"))
        return Namespace(
            nsid=nsid,
            name=record.sysname,
            devpath=record.devpath,
            devnode=props.get("DEVNAME") or (old.devnode if old else f"/dev/{record.sysname}"),
            identity=Identity.derive(
                uuid=uuid,
                nguid=nguid,
                eui64=eui64,
                wwid=wwid,
                subsysnqn=subsysnqn,
                nsid=nsid,
            ),
            subsysnqn=subsysnqn,
            controllers=controllers,
            multipath=multipath,
            size_bytes=size_bytes,
            lba_size=lba if lba is not None else (old.lba_size if old else None),
            uuid=uuid,
            nguid=nguid,
            eui64=eui64,
            wwid=wwid,
            serial=props.get("ID_SERIAL_SHORT") or (ctrl.serial if ctrl else None),
            model=props.get("ID_MODEL") or (ctrl.model if ctrl else None),
            transport=ctrl.transport if ctrl else None,
            diskseq=_int(_attr(record, "diskseq")) or _int(props.get("DISKSEQ")),
            read_only=_attr(record, "ro") == "1",
            fs=Filesystem.from_properties(props),
            generic=self._generic_for(record.sysname, record.devpath)
            or (old.generic if old else None),
            partitions=old.partitions if old else (),
            properties=props,
        )

    def _add_or_change_disk(self, record: DeviceRecord) -> list[Change]:
        old = self.namespaces.get(record.devpath)
        new = self._build_namespace(record, old)
        if new is None:
            return []
        changes: list[Change] = []
        if old is None:
            # The same (NQN, nsid) still known at another devpath: its remove was lost.
            stale = self.by_key(new.subsysnqn, new.nsid)
            if stale is not None:
                changes.extend(self._drop(stale, record.seqnum, "superseded: remove event lost"))
            self.namespaces[record.devpath] = new
            changes.append(
                Change(
                    ChangeType.NAMESPACE_ADDED,
                    record.seqnum,
                    namespace=new,
                    coldplug=record.coldplug,
                )
            )
            changes.extend(self._adopt_pending(new, record))
            return changes
        if _is_new_instance(old, new):
            reason = _instance_reason(old, new)
            changes.extend(self._drop(old, record.seqnum, reason))
            new = dataclasses.replace(new, partitions=())
            self.namespaces[record.devpath] = new
            changes.append(
                Change(ChangeType.NAMESPACE_ADDED, record.seqnum, namespace=new, reason=reason)
            )
            return changes
        self.namespaces[record.devpath] = new
        if old.size_bytes != new.size_bytes and new.size_bytes is not None:
            changes.append(
                Change(ChangeType.NAMESPACE_RESIZED, record.seqnum, namespace=new, previous=old)
            )
        if old.fs != new.fs:
            changes.append(
                Change(
                    ChangeType.NAMESPACE_CHANGED,
                    record.seqnum,
                    namespace=new,
                    previous=old,
                    reason="filesystem changed",
                )
            )
        if not changes:
            log.debug("%s %s: nothing changed", record.action, record.devpath)
        return changes

    def _drop(self, ns: Namespace, seqnum: int, reason: str | None = None) -> list[Change]:
        """Forget ``ns`` (and its partitions), returning the removal changes, partitions first."""
        self.namespaces.pop(ns.devpath, None)
        changes = [
            Change(
                ChangeType.PARTITION_REMOVED,
                seqnum,
                namespace=ns,
                partition=part,
                reason=reason,
            )
            for part in ns.partitions
        ]
        changes.append(Change(ChangeType.NAMESPACE_REMOVED, seqnum, namespace=ns, reason=reason))
        return changes

    def _remove_disk(self, record: DeviceRecord) -> list[Change]:
        old = self.namespaces.get(record.devpath)
        self._pending_parts.pop(record.devpath, None)
        if old is None:
            log.debug("remove of unknown disk %s", record.devpath)
            return []
        return self._drop(old, record.seqnum)

    # ----------------------------------------------------------------- partitions
    def _build_partition(self, record: DeviceRecord, old: Partition | None) -> Partition:
        props = record.properties
        sectors = _int(_attr(record, "size"))
        return Partition(
            name=record.sysname,
            devpath=record.devpath,
            devnode=props.get("DEVNAME") or (old.devnode if old else f"/dev/{record.sysname}"),
            number=_int(props.get("PARTN")) or _int(_attr(record, "partition")),
            size_bytes=sectors * 512 if sectors is not None else (old.size_bytes if old else None),
            fs=Filesystem.from_properties(props),
            partlabel=props.get("ID_PART_ENTRY_NAME") or props.get("PARTNAME") or None,
            partuuid=props.get("ID_PART_ENTRY_UUID") or None,
            properties=props,
        )

    def _apply_partition(self, record: DeviceRecord) -> list[Change]:
        parent_path = record.devpath.rsplit("/", 1)[0]
        ns = self.namespaces.get(parent_path)
        if record.action == "remove":
            pending = self._pending_parts.get(parent_path)
            if pending is not None:
                pending.pop(record.devpath, None)
            if ns is None:
                log.debug("remove of partition %s of unknown disk", record.devpath)
                return []
            part = next((p for p in ns.partitions if p.devpath == record.devpath), None)
            if part is None:
                log.debug("remove of unknown partition %s", record.devpath)
                return []
            ns = dataclasses.replace(
                ns, partitions=tuple(p for p in ns.partitions if p.devpath != record.devpath)
            )
            self.namespaces[parent_path] = ns
            return [
                Change(ChangeType.PARTITION_REMOVED, record.seqnum, namespace=ns, partition=part)
            ]
        if ns is None:
            # Partition before its disk: hold it until the disk shows up.
            log.debug("partition %s before its disk; holding it", record.devpath)
            part = self._build_partition(record, None)
            self._pending_parts.setdefault(parent_path, {})[record.devpath] = part
            return []
        old = next((p for p in ns.partitions if p.devpath == record.devpath), None)
        part = self._build_partition(record, old)
        parts = [p for p in ns.partitions if p.devpath != record.devpath] + [part]
        parts.sort(key=lambda p: (p.number or 0, p.name))
        ns = dataclasses.replace(ns, partitions=tuple(parts))
        self.namespaces[parent_path] = ns
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

    def _adopt_pending(self, ns: Namespace, record: DeviceRecord) -> list[Change]:
        pending = self._pending_parts.pop(ns.devpath, None)
        if not pending:
            return []
        parts = sorted(pending.values(), key=lambda p: (p.number or 0, p.name))
        ns = dataclasses.replace(ns, partitions=tuple(parts))
        self.namespaces[ns.devpath] = ns
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


def _path_segment(devpath: str, after: str) -> str | None:
    """The path component following ``after`` (e.g. 'nvme0' in '.../nvme/nvme0/nvme0n1')."""
    parts = devpath.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == after:
            return parts[i + 1]
    return None


def _is_new_instance(old: Namespace, new: Namespace) -> bool:
    """True when ``new`` is a different disk than ``old`` at the same devpath.

    A different identity (or nsid) is conclusive.  A different DISKSEQ means the kernel
    created a new gendisk: a detach and reattach happened, even if a weak identity cannot
    tell the images apart.
    """
    if old.nsid != new.nsid or old.identity != new.identity:
        return True
    return old.diskseq is not None and new.diskseq is not None and old.diskseq != new.diskseq


def _instance_reason(old: Namespace, new: Namespace) -> str:
    if old.identity != new.identity:
        return f"identity changed: {old.identity} -> {new.identity}"
    return f"new disk instance: diskseq {old.diskseq} -> {new.diskseq}"


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
            changes.extend(_removal(before, "gone"))
            continue
        if _is_new_instance(before, after):
            reason = _instance_reason(before, after)
            changes.extend(_removal(before, reason))
            additions.extend(_addition(after, reason))
            continue
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
    for key, after in new_ns.items():
        if key not in old_ns:
            additions.extend(_addition(after, None))
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


def _removal(ns: Namespace, reason: str | None) -> list[Change]:
    out = [
        Change(ChangeType.PARTITION_REMOVED, namespace=ns, partition=p, reason=reason)
        for p in ns.partitions
    ]
    out.append(Change(ChangeType.NAMESPACE_REMOVED, namespace=ns, reason=reason))
    return out


def _addition(ns: Namespace, reason: str | None) -> list[Change]:
    out = [Change(ChangeType.NAMESPACE_ADDED, namespace=ns, reason=reason)]
    out.extend(
        Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=p, reason=reason)
        for p in ns.partitions
    )
    return out


__all__ = ["Properties", "Topology", "diff_snapshots"]
