"""Realistic NVMe sysfs devices and uevents, shaped on real-guest captures and the kernel.

:class:`Layout` is a pure, in-memory model of what a Linux 6.1 guest's kernel shows for a set
of NVMe controllers, subsystems and namespaces.  Every operation returns the :class:`Event`
list the guest would emit, in the order the captures show at the ``UDEV`` level; what udev's
rules add to the block devices is imitated in :mod:`.udevrules`.

**Controllers** are PCIe functions (``/devices/pci0000:00/[<root port>/]<slot>/nvme/nvmeN``,
optionally behind a hotplug root port) or fabrics controllers
(``/devices/virtual/nvme-fabrics/ctl/nvmeN``, ``transport`` tcp, ``address``
``traddr=...,trsvcid=...``, no PCI parent).  A controller may come up *connecting*: its
``add`` shows ``(efault)`` for ``serial``/``model``/``firmware_rev``/``subsysnqn`` and state
``connecting`` (the kernel prints a NULL subsystem's strings so), and :meth:`Layout.connect`
then fills them in with a ``change`` carrying ``NVME_EVENT=connected``.  The first controller
of an NQN creates its ``nvme-subsysN``, whose instance is that controller's (and stays held
while the subsystem lives, as in the kernel).

**Namespaces** belong to a subsystem; each controller of it that reaches a namespace is a
*path*.  With native multipath (``multipath=True``, the kernel default) the disk
``nvmeSnH`` and its char device ``ngSnH`` live under
``/devices/virtual/nvme-subsystem/nvme-subsysS/`` and stay while any path is left; each path is
a hidden disk ``nvmeScCnH`` under its controller that sends no uevents.  Without it every path
is a disk ``nvmeCnH`` (with ``ngCnH``) of its own under its controller, so one namespace
reached through two controllers is two block devices.  ``H`` comes from the subsystem's IDA
(lowest free, never the NSID).

* attach: ``bdi``, ``ngXnY``, the disk, (native multipath with a partition table: a
  ``change`` of the disk), then the partitions;
* detach: ``ngXnY``, the partitions, ``bdi``, the disk.

Controllers of QEMU's PCI vendor (0x1b36) get the kernel's "bogus Namespace Identifiers"
quirk: no ``uuid``/``nguid``/``eui`` attributes and a ``wwid`` synthesised as
``nvme.1b36-<serial hex>-<model hex>-<nsid hex>``.  Other controllers (and every fabrics
target) report a ``uuid`` and ``nguid`` and a ``wwid`` of ``uuid.<uuid>``.

Device numbers are fake and high (minor 900000 and up by default) so that they can never
collide with a real device in the host's udev database, which libudev would merge in.

The bed (:mod:`nvme_agent.harness.bed`) materialises these devices in a umockdev tree;
:func:`Device.record` turns them into
:class:`~nvme_agent.topology.records.DeviceRecord` for pure tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from nvme_agent.harness import kernel, udevrules
from nvme_agent.harness.devices import (
    QEMU_VENDOR,
    ControllerConfig,
    Device,
    Event,
    LayoutError,
    NamespaceConfig,
    PartitionConfig,
)
from nvme_agent.harness.kernel import (
    BLOCK_MAJOR,
    CTRL_MAJOR,
    EFAULT,
    FABRICS_CTL,
    GENERIC_MAJOR,
    MISC_MAJOR,
)
from nvme_agent.harness.udevrules import DiskIdentity, PartitionEntry, derived_uuid

#: The first fake minor number.  Linux minors go up to 2**20 - 1.
MINOR_BASE = 900_000
SECTOR = udevrules.SECTOR
TRANSPORTS = ("pcie", "tcp", "rdma", "fc")

__all__ = [
    "EFAULT",
    "MINOR_BASE",
    "QEMU_VENDOR",
    "TRANSPORTS",
    "ControllerConfig",
    "Device",
    "Event",
    "Layout",
    "LayoutError",
    "NamespaceConfig",
    "PartitionConfig",
]


@dataclass
class _View:
    """The visible devices of a namespace: one disk with its bdi, char device, partitions."""

    disk: Device
    bdi: Device
    generic: Device
    partitions: list[Device]

    def devices(self) -> list[Device]:
        return [self.bdi, self.generic, self.disk, *self.partitions]


@dataclass
class _Path:
    """One controller's path to a namespace: a hidden disk, or (no multipath) a view."""

    hidden: Device | None = None
    view: _View | None = None


@dataclass
class _Head:
    config: NamespaceConfig
    nqn: str
    instance: int
    ids: dict[str, str]
    view: _View | None = None
    paths: dict[str, _Path] = field(default_factory=dict)

    def views(self) -> list[_View]:
        own = [self.view] if self.view is not None else []
        return own + [p.view for p in self.paths.values() if p.view is not None]


@dataclass
class _Subsystem:
    nqn: str
    instance: int
    device: Device
    config: ControllerConfig  # the first controller's: it names the subsystem's strings
    members: list[str] = field(default_factory=list)
    heads: dict[int, _Head] = field(default_factory=dict)


@dataclass
class _Controller:
    config: ControllerConfig
    device: Device
    owned: list[Device]  # the PCI function: it goes with the controller
    live: bool


def _lowest_free(used: Iterable[int], start: int) -> int:
    taken = set(used)
    n = start
    while n in taken:
        n += 1
    return n


class Layout:
    """The device model of one fake guest.  See the module docstring."""

    def __init__(self, multipath: bool = True, minor_base: int = MINOR_BASE) -> None:
        self.multipath = multipath
        self.minor_base = minor_base
        self.controllers: dict[str, _Controller] = {}
        self.subsystems: dict[str, _Subsystem] = {}
        self._shared: dict[str, Device] = {}  # root ports, the fabrics ctl: never removed
        self._minors: dict[int, set[int]] = {}
        self._diskseq = 100

    # ----------------------------------------------------------------- allocation
    def _minor(self, major: int) -> int:
        used = self._minors.setdefault(major, set())
        minor = _lowest_free(used, self.minor_base)
        used.add(minor)
        return minor

    def _free_minor(self, dev: str | None) -> None:
        if dev:
            major, minor = (int(x) for x in dev.split(":"))
            self._minors.get(major, set()).discard(minor)

    def _next_diskseq(self) -> int:
        self._diskseq += 1
        return self._diskseq

    # ----------------------------------------------------------------- controllers
    def add_controller(self, cfg: ControllerConfig) -> list[Event]:
        """A controller appears (boot, PCIe hotplug, ``nvme connect``), with its subsystem if
        it is the first of its NQN: parents, the controller, then the subsystem."""
        self._check_new_controller(cfg)
        events, parent = self._controller_parents(cfg)
        owned: list[Device] = []
        if not cfg.fabrics:
            pci = kernel.pci_function(cfg, parent)
            owned.append(pci)
            events.append(Event("add", pci))
            parent = pci
        live = not cfg.starts_connecting
        minor = self._minor(CTRL_MAJOR)
        ctrl = Device(
            devpath=f"{parent.devpath}/nvme/{cfg.name}"
            if not cfg.fabrics
            else f"{parent.devpath}/{cfg.name}",
            subsystem="nvme",
            attributes=kernel.controller_attributes(cfg, live=live),
            properties=kernel.controller_properties(cfg, minor),
            dev=f"{CTRL_MAJOR}:{minor}",
            devnode=f"/dev/{cfg.name}",
            parents=(parent,),
        )
        ctrl.attributes["dev"] = ctrl.dev or ""
        events.append(Event("add", ctrl))
        subsys = self.subsystems.get(cfg.subsysnqn)
        if subsys is None:
            subsys = _Subsystem(cfg.subsysnqn, cfg.instance, kernel.subsystem_device(cfg), cfg)
            self.subsystems[cfg.subsysnqn] = subsys
            events.append(Event("add", subsys.device))
        subsys.members.append(cfg.name)
        self.controllers[cfg.name] = _Controller(cfg, ctrl, owned, live)
        return events

    def _check_new_controller(self, cfg: ControllerConfig) -> None:
        if cfg.name in self.controllers:
            raise LayoutError(f"controller {cfg.name} already exists")
        if cfg.transport not in TRANSPORTS:
            raise LayoutError(f"unknown transport {cfg.transport!r} (known: {TRANSPORTS})")
        for subsys in self.subsystems.values():
            if subsys.instance == cfg.instance:
                # The kernel keeps a subsystem's instance out of the controller IDA.
                raise LayoutError(
                    f"{cfg.name}: instance {cfg.instance} is still held by "
                    f"nvme-subsys{subsys.instance} ({subsys.nqn})"
                )

    def _controller_parents(self, cfg: ControllerConfig) -> tuple[list[Event], Device]:
        """The shared parent (fabrics ctl, PCI root port or bus), created on first use."""
        if cfg.fabrics:
            path, make = FABRICS_CTL, self._fabrics_ctl
        elif cfg.root_port:
            path, make = f"/devices/pci0000:00/{cfg.root_port}", kernel.root_port
        else:
            return [], Device(devpath="/devices/pci0000:00", subsystem="")
        if path in self._shared:
            return [], self._shared[path]
        device = make(path)
        self._shared[path] = device
        return [Event("add", device)], device

    def _fabrics_ctl(self, path: str) -> Device:
        minor = self._minor(MISC_MAJOR)
        return Device(
            devpath=path,
            subsystem="nvme-fabrics",
            properties={
                "MAJOR": str(MISC_MAJOR),
                "MINOR": str(minor),
                "DEVNAME": "/dev/nvme-fabrics",
            },
            dev=f"{MISC_MAJOR}:{minor}",
            devnode="/dev/nvme-fabrics",
        )

    def connect(self, name: str) -> list[Event]:
        """A connecting controller goes live: its attributes are filled in and a ``change``
        with ``NVME_EVENT=connected`` follows (nothing for a controller already live)."""
        ctrl = self._controller(name)
        if ctrl.live:
            return []
        ctrl.live = True
        ctrl.device.attributes.update(kernel.controller_attributes(ctrl.config, live=True))
        return [Event("change", ctrl.device, {"NVME_EVENT": "connected"})]

    def controller(self, name: str) -> ControllerConfig:
        return self._controller(name).config

    def _controller(self, name: str) -> _Controller:
        try:
            return self.controllers[name]
        except KeyError:
            raise LayoutError(f"unknown controller {name!r}") from None

    def is_live(self, name: str) -> bool:
        return self._controller(name).live

    def members(self, ctrl: str) -> list[str]:
        """The controllers of ``ctrl``'s subsystem, in the order they joined."""
        return list(self._subsystem_of(ctrl).members)

    def remove_controller(self, name: str) -> list[Event]:
        """The controller goes (PCIe hot-unplug, ``nvme disconnect``): its paths (and every
        namespace it was the last path of), the controller, an empty subsystem, its PCI
        function."""
        ctrl = self._controller(name)
        subsys = self._subsystem_of(name)
        events: list[Event] = []
        for nsid in sorted(n for n, head in subsys.heads.items() if name in head.paths):
            events += self.remove_path(name, nsid)
        del self.controllers[name]
        subsys.members.remove(name)
        self._free_minor(ctrl.device.dev)
        events.append(Event("remove", ctrl.device))
        if not subsys.members:
            del self.subsystems[subsys.nqn]
            events.append(Event("remove", subsys.device))
        events += [Event("remove", dev) for dev in reversed(ctrl.owned)]
        return events

    def _subsystem_of(self, ctrl: str) -> _Subsystem:
        return self.subsystems[self._controller(ctrl).config.subsysnqn]

    # ----------------------------------------------------------------- namespaces
    def is_attached(self, ctrl: str, nsid: int) -> bool:
        """Whether ``ctrl`` has a path to namespace ``nsid``."""
        if ctrl not in self.controllers:
            return False
        head = self._subsystem_of(ctrl).heads.get(nsid)
        return head is not None and ctrl in head.paths

    def has_namespace(self, ctrl: str, nsid: int) -> bool:
        """Whether ``ctrl``'s subsystem has namespace ``nsid`` (through any controller)."""
        return ctrl in self.controllers and nsid in self._subsystem_of(ctrl).heads

    def namespace_present(self, ctrl: str, nsid: int) -> bool:
        """Whether the namespace first attached through ``ctrl`` as ``nsid`` still exists,
        reachable through any path (``ctrl`` itself may be gone)."""
        return any(
            head.config.ctrl == ctrl and nsid == head.config.nsid
            for subsys in self.subsystems.values()
            for head in subsys.heads.values()
        )

    def nsids(self, ctrl: str) -> list[int]:
        """The namespaces of ``ctrl``'s subsystem (through any controller)."""
        return sorted(self._subsystem_of(ctrl).heads)

    def paths(self, ctrl: str, nsid: int) -> list[str]:
        """The controllers that reach namespace ``nsid`` of ``ctrl``'s subsystem."""
        return list(self._head(ctrl, nsid).paths)

    def disk(self, ctrl: str, nsid: int) -> Device:
        """The visible block device of namespace ``nsid`` as ``ctrl`` reaches it."""
        head = self._head(ctrl, nsid)
        if head.view is not None:
            return head.view.disk
        path = head.paths.get(ctrl)
        if path is None or path.view is None:
            raise LayoutError(f"nsid {nsid} is not attached to {ctrl}")
        return path.view.disk

    def config(self, ctrl: str, nsid: int) -> NamespaceConfig:
        return self._head(ctrl, nsid).config

    def _head(self, ctrl: str, nsid: int) -> _Head:
        head = self._subsystem_of(ctrl).heads.get(nsid)
        if head is None:
            raise LayoutError(f"nsid {nsid} is not attached to {ctrl}")
        return head

    def identifiers(self, ns: NamespaceConfig) -> dict[str, str]:
        """The identifier attributes the kernel shows for ``ns`` (wwid, maybe uuid/nguid)."""
        return kernel.identifiers(self._subsystem_of(ns.ctrl).config, ns)

    def attach(self, ns: NamespaceConfig) -> list[Event]:
        """A new namespace appears through controller ``ns.ctrl`` (attach-ns, QEMU
        ``device_add nvme-ns``, a target enabling it).  Other controllers of the subsystem
        reach it once :meth:`add_path` says so."""
        subsys = self._subsystem_of(ns.ctrl)
        old = subsys.heads.get(ns.nsid)
        if old is not None:
            where = ", ".join(old.paths) or "no controller"
            raise LayoutError(f"nsid {ns.nsid} is already attached to {where}")
        head = _Head(
            config=ns,
            nqn=subsys.nqn,
            instance=_lowest_free((h.instance for h in subsys.heads.values()), 1),
            ids=kernel.identifiers(subsys.config, ns),
        )
        subsys.heads[ns.nsid] = head
        return self._add_path(subsys, head, ns.ctrl)

    def add_path(self, ctrl: str, nsid: int) -> list[Event]:
        """Controller ``ctrl`` reaches an existing namespace of its subsystem (attach-ns
        ``-c``, a second port).  With native multipath this is a hidden disk only: silent."""
        head = self._head(ctrl, nsid)
        if ctrl in head.paths:
            raise LayoutError(f"nsid {nsid} is already attached to {ctrl}")
        return self._add_path(self._subsystem_of(ctrl), head, ctrl)

    def _add_path(self, subsys: _Subsystem, head: _Head, name: str) -> list[Event]:
        ctrl = self.controllers[name].device
        if not self.multipath:
            view = self._view(
                ctrl, f"{name}n{head.instance}", f"ng{name[4:]}n{head.instance}", head
            )
            head.paths[name] = _Path(view=view)
            return _view_added(view, self.multipath)
        attrs = kernel.disk_attributes(head.config, head.ids, self._next_diskseq())
        hidden = Device(
            devpath=f"{ctrl.devpath}/nvme{subsys.instance}c{name[4:]}n{head.instance}",
            subsystem="block",
            devtype="disk",
            attributes={**attrs, "hidden": "1", "capability": "2"},
            properties={"DEVTYPE": "disk", "DISKSEQ": attrs["diskseq"]},
            silent=True,
            parents=(ctrl,),
        )
        head.paths[name] = _Path(hidden=hidden)
        events = [Event("add", hidden)]
        if head.view is None:
            stem = f"{subsys.instance}n{head.instance}"
            head.view = self._view(subsys.device, f"nvme{stem}", f"ng{stem}", head)
            events += _view_added(head.view, self.multipath)
        return events

    def remove_path(self, ctrl: str, nsid: int) -> list[Event]:
        """Controller ``ctrl`` no longer reaches namespace ``nsid`` (detach-ns ``-c``, a port
        or controller gone).  The namespace goes with its last path."""
        subsys = self._subsystem_of(ctrl)
        head = self._head(ctrl, nsid)
        path = head.paths.pop(ctrl, None)
        if path is None:
            raise LayoutError(f"nsid {nsid} is not attached to {ctrl}")
        events = [Event("remove", path.hidden)] if path.hidden is not None else []
        if path.view is not None:
            events += self._view_removed(path.view)
        if not head.paths:
            if head.view is not None:
                events += self._view_removed(head.view)
            del subsys.heads[nsid]
        return events

    def detach(self, ctrl: str, nsid: int) -> list[Event]:
        """The namespace disappears from ``ctrl``'s subsystem, through every path
        (detach-ns, QEMU ``device_del``, a target disabling it)."""
        events: list[Event] = []
        for name in self.paths(ctrl, nsid):
            events += self.remove_path(name, nsid)
        return events

    def resize(self, ctrl: str, nsid: int, size_bytes: int) -> list[Event]:
        """The namespace's capacity changes: a ``change`` with ``RESIZE=1`` (the kernel's
        ``set_capacity_and_notify``) of each visible disk; hidden paths follow silently."""
        head = self._head(ctrl, nsid)
        head.config = dataclasses.replace(head.config, size_bytes=size_bytes)
        sectors = str(size_bytes // SECTOR)
        events: list[Event] = []
        for path in head.paths.values():
            if path.hidden is not None:
                path.hidden.attributes["size"] = sectors
                events.append(Event("change", path.hidden))
        for view in head.views():
            view.disk.attributes["size"] = sectors
            # RESIZE=1 belongs to this one uevent, not to the device's udev database entry.
            events.append(Event("change", view.disk, {"RESIZE": "1"}))
        return events

    def change(
        self, ctrl: str, nsid: int, *, fs: str | None, label: str | None = None
    ) -> list[Event]:
        """blkid finds new contents (e.g. mkfs on the whole namespace): a disk ``change``."""
        head = self._head(ctrl, nsid)
        cfg = dataclasses.replace(
            head.config, fs=fs, label=label, fs_uuid=None, generation=head.config.generation + 1
        )
        head.config = cfg
        fs_props = _fs(cfg, cfg.fs, cfg.label, "disk")
        events: list[Event] = []
        for view in head.views():
            view.disk.properties = udevrules.with_content(
                view.disk.properties, table_uuid=None, fs=fs_props
            )
            events.append(Event("change", view.disk))
        return events

    def devices(self) -> list[Device]:
        """Every device present now, parents before children (coldplug order)."""
        out = sorted(self._shared.values(), key=lambda d: d.devpath)
        for ctrl in self.controllers.values():
            out += ctrl.owned
        out += [ctrl.device for ctrl in self.controllers.values()]
        out += [s.device for s in self.subsystems.values()]
        for subsys in self.subsystems.values():
            for head in subsys.heads.values():
                out += [p.hidden for p in head.paths.values() if p.hidden is not None]
                for view in head.views():
                    out += view.devices()
        return out

    # ----------------------------------------------------------------- builders
    def _view(self, parent: Device, disk_name: str, ng_name: str, head: _Head) -> _View:
        ns = head.config
        diskseq = self._next_diskseq()
        minor = self._minor(BLOCK_MAJOR)
        dev = f"{BLOCK_MAJOR}:{minor}"
        ident = self._disk_identity(parent, head)
        devname = ns.devname_through(parent.sysname) if parent.subsystem == "nvme" else ns.devname
        props = {
            "DEVNAME": devname or f"/dev/{disk_name}",
            "DEVTYPE": "disk",
            "DISKSEQ": str(diskseq),
            "MAJOR": str(BLOCK_MAJOR),
            "MINOR": str(minor),
            **udevrules.disk_properties(ident, diskseq),
        }
        table = None
        if ns.partitions:
            table = derived_uuid(head.nqn, ns.nsid, ns.generation, "pt")
        props = udevrules.with_content(props, table_uuid=table, fs=_fs(ns, ns.fs, ns.label, "disk"))
        disk = Device(
            devpath=f"{parent.devpath}/{disk_name}",
            subsystem="block",
            devtype="disk",
            attributes={
                **kernel.disk_attributes(ns, head.ids, diskseq),
                "dev": dev,
                "hidden": "0",
                "capability": "0",
            },
            properties=props,
            dev=dev,
            devnode=None if devname else f"/dev/{disk_name}",
            parents=(parent,),
        )
        gminor = self._minor(GENERIC_MAJOR)
        generic = Device(
            devpath=f"{parent.devpath}/{ng_name}",
            subsystem="nvme-generic",
            attributes={"dev": f"{GENERIC_MAJOR}:{gminor}"},
            properties={
                "DEVNAME": f"/dev/{ng_name}",
                "MAJOR": str(GENERIC_MAJOR),
                "MINOR": str(gminor),
            },
            dev=f"{GENERIC_MAJOR}:{gminor}",
            devnode=f"/dev/{ng_name}",
            parents=(parent,),
        )
        bdi = Device(devpath=f"/devices/virtual/bdi/{dev}", subsystem="bdi")
        parts = [self._partition(disk, ident, head, p, diskseq) for p in ns.partitions]
        return _View(disk, bdi, generic, parts)

    def _disk_identity(self, parent: Device, head: _Head) -> DiskIdentity:
        """What udev reads for a disk under ``parent`` (a controller, or the subsystem)."""
        if parent.subsystem == "nvme":
            cfg = self.controllers[parent.sysname].config
            slot = cfg.pci_slot
        else:
            subsys = next(s for s in self.subsystems.values() if s.device is parent)
            cfg = subsys.config
            # path_id asks controller nvme<subsystem instance>: the first, if still there.
            first = self.controllers.get(f"nvme{subsys.instance}")
            slot = first.config.pci_slot if first is not None else None
        return DiskIdentity(
            serial=udevrules.attr_value(cfg.serial),
            model=udevrules.attr_value(cfg.model),
            firmware=udevrules.attr_value(cfg.firmware),
            wwid=udevrules.attr_value(head.ids["wwid"]),
            nsid=head.config.nsid,
            id_path=udevrules.id_path(slot, head.config.nsid),
        )

    def _partition(
        self, disk: Device, ident: DiskIdentity, head: _Head, part: PartitionConfig, diskseq: int
    ) -> Device:
        ns = head.config
        minor = self._minor(BLOCK_MAJOR)
        name = f"{disk.sysname}p{part.number}"
        start = 2048 + sum(p.size_bytes // SECTOR for p in ns.partitions if p.number < part.number)
        entry = PartitionEntry(
            number=part.number,
            start=start,
            sectors=part.size_bytes // SECTOR,
            partuuid=derived_uuid(head.nqn, ns.nsid, ns.generation, "part", part.number),
            partlabel=part.partlabel,
        )
        fs_props = _fs(
            dataclasses.replace(ns, generation=ns.generation * 100 + part.number),
            part.fs,
            part.label,
            "part",
        )
        props = {
            "DEVNAME": f"/dev/{name}",
            "DEVTYPE": "partition",
            "DISKSEQ": str(diskseq),
            "PARTN": str(part.number),
            "MAJOR": str(BLOCK_MAJOR),
            "MINOR": str(minor),
            **udevrules.partition_properties(
                disk.properties, ident, entry, disk.dev or "", fs_props
            ),
        }
        return Device(
            devpath=f"{disk.devpath}/{name}",
            subsystem="block",
            devtype="partition",
            attributes={
                "alignment_offset": "0",
                "dev": f"{BLOCK_MAJOR}:{minor}",
                "discard_alignment": "0",
                "partition": str(part.number),
                "ro": "0",
                "size": str(entry.sectors),
                "start": str(start),
            },
            properties=props,
            dev=f"{BLOCK_MAJOR}:{minor}",
            devnode=f"/dev/{name}",
            parents=disk.parents,
        )

    def _view_removed(self, view: _View) -> list[Event]:
        for dev in (view.disk, view.generic, *view.partitions):
            self._free_minor(dev.dev)
        events = [Event("remove", view.generic)]
        events += [Event("remove", p) for p in reversed(view.partitions)]
        return [*events, Event("remove", view.bdi), Event("remove", view.disk)]


def _view_added(view: _View, multipath: bool) -> list[Event]:
    events = [Event("add", view.bdi), Event("add", view.generic), Event("add", view.disk)]
    if view.partitions and multipath:
        # The captures: udev's partition scan of a multipath head ends in a disk `change`
        # (with NVME_HOST_IFACE) before the partitions' adds.
        view.disk.properties["NVME_HOST_IFACE"] = "none"
        events.append(Event("change", view.disk))
    return events + [Event("add", p) for p in view.partitions]


def _fs(ns: NamespaceConfig, fs: str | None, label: str | None, what: str) -> dict[str, str]:
    """blkid's view of a filesystem made for ``ns``."""
    fs_uuid = ns.fs_uuid or derived_uuid(ns.ctrl, ns.nsid, ns.generation, what, fs)
    return udevrules.fs_properties(
        fs, udevrules.blkid_label(label) if label is not None else None, fs_uuid
    )
