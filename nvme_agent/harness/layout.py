"""Realistic NVMe sysfs devices and udev properties, shaped on real-guest captures.

:class:`Layout` is a pure, in-memory model of what a Linux 6.1 guest's kernel and udev would
show for a set of NVMe controllers and namespaces.  Every operation (attach, detach, resize,
a filesystem appearing) returns the :class:`Event` list the guest would emit, in the order the
captures show at the ``UDEV`` level:

* attach: ``bdi``, ``nvme-generic`` char device ``ngXnY``, the ``block`` disk, (with native
  multipath and a partition table: a ``change`` of the disk), then the partitions;
* detach: ``ngXnY``, the partitions, ``bdi``, the disk.

With native multipath (``multipath=True``, the kernel default) the disk and its char device
live under ``/devices/virtual/nvme-subsystem/nvme-subsysN/`` and a hidden per-path disk
``nvmeXcYnZ`` (no uevents) appears under the controller; without it everything lives under
the PCI controller ``/devices/pci0000:00/0000:00:0N.0/nvme/nvmeY/``.  Block names follow
attach order (lowest free instance, like the kernel's IDA), never the NSID.

Controllers of QEMU's PCI vendor (0x1b36) get the kernel's "bogus Namespace Identifiers"
quirk: no ``uuid``/``nguid``/``eui`` attributes and a ``wwid`` synthesised as
``nvme.1b36-<serial hex>-<model hex>-<nsid hex>``.  Other controllers report a ``uuid`` and
``nguid`` and a ``wwid`` of ``uuid.<uuid>``.

Device numbers are fake and high (minor 900000 and up by default) so that they can never
collide with a real device in the host's udev database, which libudev would merge in.

The bed (:mod:`nvme_agent.harness.bed`) materialises these devices in a umockdev tree;
:func:`Device.record` turns them into
:class:`~nvme_agent.topology.records.DeviceRecord` for pure tests.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import ATTRIBUTES, PARENT_ATTRIBUTES, DeviceRecord

#: The first fake minor number.  Linux minors go up to 2**20 - 1.
MINOR_BASE = 900_000
BLOCK_MAJOR = 259
GENERIC_MAJOR = 244
CTRL_MAJOR = 245
QEMU_VENDOR = 0x1B36
SECTOR = 512


class LayoutError(ValueError):
    """An impossible operation: attach an attached namespace, unknown controller, ..."""


@dataclass
class Device:
    """One sysfs device: what the bed writes to ``/sys`` and what its events carry.

    ``properties`` are the udev properties (``DEVNAME`` with its ``/dev/`` prefix) except
    ``ACTION``/``DEVPATH``/``SUBSYSTEM``/``SEQNUM``, which each event adds.  ``silent`` devices
    (hidden multipath path disks) exist in sysfs but never send a uevent.  ``devnode`` is the
    node the bed creates under the fake ``/dev`` (``None``: none, e.g. real mode's loop device).
    """

    devpath: str
    subsystem: str
    devtype: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    dev: str | None = None
    devnode: str | None = None
    silent: bool = False
    parents: tuple[Device, ...] = ()

    @property
    def sysname(self) -> str:
        return self.devpath.rsplit("/", 1)[-1]

    def wire(self) -> dict[str, Any]:
        """The JSON form the bed controller understands."""
        return {
            "devpath": self.devpath,
            "subsystem": self.subsystem,
            "devtype": self.devtype,
            "attributes": dict(self.attributes),
            "properties": dict(self.properties),
            "dev": self.dev,
            "devnode": self.devnode,
        }

    def snapshot(self) -> Device:
        """A copy whose ``attributes`` and ``properties`` no later change of ``self`` touches.

        Parents are shared: they are the controller chain, which events never change.
        """
        return dataclasses.replace(
            self, attributes=dict(self.attributes), properties=dict(self.properties)
        )

    def record(self, action: str, seqnum: int = 0, *, coldplug: bool = False) -> DeviceRecord:
        """The :class:`DeviceRecord` intake would build for this device and ``action``.

        Mirrors :func:`nvme_agent.topology.intake.record_from_device`: only the attributes listed in
        :data:`~nvme_agent.topology.records.ATTRIBUTES`, none on ``remove``, parents nearest first.
        """
        props = {
            "ACTION": action,
            "DEVPATH": self.devpath,
            "SUBSYSTEM": self.subsystem,
            **self.properties,
        }
        if seqnum:
            props["SEQNUM"] = str(seqnum)
        if coldplug:
            props.pop("ACTION")
        wanted = ATTRIBUTES.get(self.subsystem, ())
        attrs = {} if action == "remove" else _pick(self.attributes, wanted)
        parents: tuple[tuple[str, str, Properties], ...] = ()
        if action != "remove":
            parents = tuple(
                (
                    p.subsystem,
                    p.sysname,
                    Properties.of(_pick(p.attributes, PARENT_ATTRIBUTES[p.subsystem])),
                )
                for p in self.parents
                if p.subsystem in ("nvme", "nvme-subsystem")
            )
        return DeviceRecord.build(
            action,
            self.devpath,
            self.subsystem,
            props,
            attrs,
            devtype=self.devtype,
            seqnum=seqnum,
            parents=parents,
            coldplug=coldplug,
        )


def _pick(attributes: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {n: attributes[n].strip() for n in names if n in attributes}


@dataclass(frozen=True)
class Event:
    """One uevent the guest would emit: ``action`` of ``device``.

    The event keeps a snapshot of the device as it was when the event was built, like a real
    uevent: a later change of the layout's device (e.g. udev adding ``NVME_HOST_IFACE`` on the
    multipath ``change`` that follows the disk's ``add``) does not leak into earlier events.
    """

    action: str
    device: Device

    def __post_init__(self) -> None:
        # Frozen dataclass: replace the field through object.__setattr__ (the documented way).
        object.__setattr__(self, "device", self.device.snapshot())

    def wire(self) -> dict[str, Any]:
        return {"action": self.action, "device": self.device.wire(), "silent": self.device.silent}


@dataclass(frozen=True)
class ControllerConfig:
    """An NVMe controller, as a scenario describes it."""

    name: str
    serial: str
    model: str = "QEMU NVMe Ctrl"
    subsysnqn: str = "nqn.2019-08.org.qemu:subsys0"
    firmware: str = "7.2.22"
    vendor_id: int = QEMU_VENDOR
    device_id: int = 0x0010
    pci_address: str | None = None
    bogus_ids: bool | None = None
    cntlid: int = 0

    @property
    def instance(self) -> int:
        if not self.name.startswith("nvme") or not self.name[4:].isdigit():
            raise LayoutError(f"controller name {self.name!r} is not nvmeN")
        return int(self.name[4:])

    @property
    def quirk(self) -> bool:
        """Whether the kernel ignores this controller's namespace identifiers."""
        return self.vendor_id == QEMU_VENDOR if self.bogus_ids is None else self.bogus_ids

    @property
    def address(self) -> str:
        return self.pci_address or f"0000:00:{4 + self.instance:02x}.0"


@dataclass(frozen=True)
class PartitionConfig:
    """A GPT partition on a namespace."""

    number: int
    size_bytes: int
    fs: str | None = None
    label: str | None = None
    partlabel: str | None = None


@dataclass(frozen=True)
class NamespaceConfig:
    """A namespace's contents and identity.

    ``generation`` distinguishes images put at the same NSID (a hot-swap): it feeds the
    derived uuid/nguid (real hardware) and the filesystem UUID.  Explicit ``uuid``/``nguid``
    win.  ``devname`` overrides ``DEVNAME`` (real mode points it at a loop device).
    """

    ctrl: str
    nsid: int
    size_bytes: int = 1 << 30
    fs: str | None = None
    label: str | None = None
    fs_uuid: str | None = None
    uuid: str | None = None
    nguid: str | None = None
    partitions: tuple[PartitionConfig, ...] = ()
    lba_size: int = 512
    read_only: bool = False
    generation: int = 0
    devname: str | None = None


@dataclass
class _Attached:
    config: NamespaceConfig
    instance: int
    disk: Device
    bdi: Device
    generic: Device
    path: Device | None
    partitions: list[Device]


@dataclass
class _Subsystem:
    nqn: str
    instance: int
    device: Device
    heads: dict[int, int] = field(default_factory=dict)  # nsid -> head instance


def _hex(text: str) -> str:
    return text.strip().encode().hex()


def _derived_uuid(*parts: object) -> str:
    return str(
        uuidlib.uuid5(uuidlib.NAMESPACE_URL, "nvme-agent-harness:" + ":".join(map(str, parts)))
    )


class Layout:
    """The device model of one fake guest.  See the module docstring."""

    def __init__(self, multipath: bool = True, minor_base: int = MINOR_BASE) -> None:
        self.multipath = multipath
        self.minor_base = minor_base
        self.controllers: dict[str, tuple[ControllerConfig, Device, Device]] = {}
        self.subsystems: dict[str, _Subsystem] = {}
        self.namespaces: dict[tuple[str, int], _Attached] = {}
        self._minors: dict[int, set[int]] = {}
        self._diskseq = 100

    # ----------------------------------------------------------------- allocation
    def _minor(self, major: int) -> int:
        used = self._minors.setdefault(major, set())
        minor = self.minor_base
        while minor in used:
            minor += 1
        used.add(minor)
        return minor

    def _free_minor(self, dev: str | None) -> None:
        if dev:
            major, minor = (int(x) for x in dev.split(":"))
            self._minors.get(major, set()).discard(minor)

    # ----------------------------------------------------------------- controllers
    def add_controller(self, cfg: ControllerConfig) -> list[Event]:
        """Add a controller (and its subsystem, if new).  Returns pci, subsystem, ctrl adds."""
        if cfg.name in self.controllers:
            raise LayoutError(f"controller {cfg.name} already exists")
        events: list[Event] = []
        pci = Device(
            devpath=f"/devices/pci0000:00/{cfg.address}",
            subsystem="pci",
            attributes={
                "vendor": f"0x{cfg.vendor_id:04x}",
                "device": f"0x{cfg.device_id:04x}",
                "subsystem_vendor": f"0x{cfg.vendor_id:04x}",
                "class": "0x010802",
            },
            properties={
                "DRIVER": "nvme",
                "PCI_CLASS": "10802",
                "PCI_ID": f"{cfg.vendor_id:04X}:{cfg.device_id:04X}",
                "PCI_SLOT_NAME": cfg.address,
            },
        )
        events.append(Event("add", pci))
        subsys = self.subsystems.get(cfg.subsysnqn)
        if subsys is None:
            used = {s.instance for s in self.subsystems.values()}
            instance = min(i for i in range(len(used) + 1) if i not in used)
            sdev = Device(
                devpath=f"/devices/virtual/nvme-subsystem/nvme-subsys{instance}",
                subsystem="nvme-subsystem",
                attributes={
                    "subsysnqn": cfg.subsysnqn,
                    "serial": cfg.serial.ljust(20),
                    "model": cfg.model.ljust(40),
                    "firmware_rev": cfg.firmware.ljust(8),
                    "iopolicy": "numa",
                    "subsystype": "nvm",
                },
            )
            subsys = _Subsystem(cfg.subsysnqn, instance, sdev)
            self.subsystems[cfg.subsysnqn] = subsys
            events.append(Event("add", sdev))
        minor = self._minor(CTRL_MAJOR)
        ctrl = Device(
            devpath=f"{pci.devpath}/nvme/{cfg.name}",
            subsystem="nvme",
            attributes={
                "address": cfg.address,
                "cntlid": str(cfg.cntlid),
                "cntrltype": "io",
                "dev": f"{CTRL_MAJOR}:{minor}",
                "firmware_rev": cfg.firmware.ljust(8),
                "model": cfg.model.ljust(40),
                "serial": cfg.serial.ljust(20),
                "state": "live",
                "subsysnqn": cfg.subsysnqn,
                "transport": "pcie",
                "numa_node": "-1",
                "queue_count": "3",
                "sqsize": "1023",
                "kato": "0",
            },
            properties={
                "MAJOR": str(CTRL_MAJOR),
                "MINOR": str(minor),
                "DEVNAME": f"/dev/{cfg.name}",
                "NVME_TRTYPE": "pcie",
            },
            dev=f"{CTRL_MAJOR}:{minor}",
            devnode=f"/dev/{cfg.name}",
            parents=(pci,),
        )
        events.append(Event("add", ctrl))
        self.controllers[cfg.name] = (cfg, pci, ctrl)
        return events

    def controller(self, name: str) -> ControllerConfig:
        try:
            return self.controllers[name][0]
        except KeyError:
            raise LayoutError(f"unknown controller {name!r}") from None

    def remove_controller(self, name: str) -> list[Event]:
        """Detach every namespace of the controller, then remove it (and an empty subsystem)."""
        cfg = self.controller(name)
        events: list[Event] = []
        for ctrl, nsid in sorted(k for k in self.namespaces if k[0] == name):
            events += self.detach(ctrl, nsid)
        _, pci, ctrl_dev = self.controllers.pop(name)
        self._free_minor(ctrl_dev.dev)
        events.append(Event("remove", ctrl_dev))
        if not any(c.subsysnqn == cfg.subsysnqn for c, _, _ in self.controllers.values()):
            events.append(Event("remove", self.subsystems.pop(cfg.subsysnqn).device))
        events.append(Event("remove", pci))
        return events

    # ----------------------------------------------------------------- namespaces
    def is_attached(self, ctrl: str, nsid: int) -> bool:
        return (ctrl, nsid) in self.namespaces

    def disk(self, ctrl: str, nsid: int) -> Device:
        """The visible block device of an attached namespace."""
        return self._get(ctrl, nsid).disk

    def config(self, ctrl: str, nsid: int) -> NamespaceConfig:
        return self._get(ctrl, nsid).config

    def _get(self, ctrl: str, nsid: int) -> _Attached:
        try:
            return self.namespaces[(ctrl, nsid)]
        except KeyError:
            raise LayoutError(f"namespace {nsid} is not attached to {ctrl}") from None

    def identifiers(self, ns: NamespaceConfig) -> dict[str, str]:
        """The identifier attributes the kernel shows for ``ns`` (wwid, maybe uuid/nguid)."""
        cfg = self.controller(ns.ctrl)
        if cfg.quirk:
            return {
                "wwid": f"nvme.{cfg.vendor_id:04x}-{_hex(cfg.serial)}-{_hex(cfg.model)}-"
                f"{ns.nsid:08x}"
            }
        uuid = ns.uuid or _derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "uuid")
        nguid = ns.nguid or _derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "nguid")
        nguid = nguid.replace("-", "")
        return {"uuid": uuid, "nguid": nguid, "wwid": f"uuid.{uuid}"}

    def attach(self, ns: NamespaceConfig) -> list[Event]:
        """The namespace appears (attach-ns, or QEMU ``device_add nvme-ns``)."""
        cfg = self.controller(ns.ctrl)
        if (ns.ctrl, ns.nsid) in self.namespaces:
            raise LayoutError(f"namespace {ns.nsid} is already attached to {ns.ctrl}")
        subsys = self.subsystems[cfg.subsysnqn]
        used = set(subsys.heads.values())
        head = min(i for i in range(1, len(used) + 2) if i not in used)
        subsys.heads[ns.nsid] = head
        _, _, ctrl_dev = self.controllers[ns.ctrl]
        self._diskseq += 1
        diskseq = self._diskseq
        ids = self.identifiers(ns)
        minor = self._minor(BLOCK_MAJOR)
        ns_dev = f"{BLOCK_MAJOR}:{minor}"

        if self.multipath:
            parent, parent_dev = subsys.device.devpath, subsys.device
            disk_name, ng_name = f"nvme{subsys.instance}n{head}", f"ng{subsys.instance}n{head}"
        else:
            parent, parent_dev = ctrl_dev.devpath, ctrl_dev
            disk_name, ng_name = f"nvme{cfg.instance}n{head}", f"ng{cfg.instance}n{head}"
        parents = (parent_dev,) if self.multipath else (ctrl_dev,)

        common = self._disk_attributes(ns, ids, diskseq)
        path: Device | None = None
        if self.multipath:
            path = Device(
                devpath=f"{ctrl_dev.devpath}/nvme{subsys.instance}c{cfg.instance}n{head}",
                subsystem="block",
                devtype="disk",
                attributes={**common, "hidden": "1", "capability": "2"},
                properties={"DEVTYPE": "disk", "DISKSEQ": str(diskseq)},
                silent=True,
                parents=(ctrl_dev,),
            )
        devname = ns.devname or f"/dev/{disk_name}"
        disk_props = self._disk_properties(cfg, ns, ids, diskseq, devname, minor)
        disk = Device(
            devpath=f"{parent}/{disk_name}",
            subsystem="block",
            devtype="disk",
            attributes={**common, "dev": ns_dev, "hidden": "0", "capability": "0"},
            properties=disk_props,
            dev=ns_dev,
            devnode=None if ns.devname else f"/dev/{disk_name}",
            parents=parents,
        )
        bdi = Device(devpath=f"/devices/virtual/bdi/{ns_dev}", subsystem="bdi")
        gminor = self._minor(GENERIC_MAJOR)
        generic = Device(
            devpath=f"{parent}/{ng_name}",
            subsystem="nvme-generic",
            attributes={"dev": f"{GENERIC_MAJOR}:{gminor}"},
            properties={
                "DEVNAME": f"/dev/{ng_name}",
                "MAJOR": str(GENERIC_MAJOR),
                "MINOR": str(gminor),
            },
            dev=f"{GENERIC_MAJOR}:{gminor}",
            devnode=f"/dev/{ng_name}",
            parents=parents,
        )
        partitions = [self._partition(disk, cfg, ns, p, diskseq) for p in ns.partitions]
        self.namespaces[(ns.ctrl, ns.nsid)] = _Attached(
            ns, head, disk, bdi, generic, path, partitions
        )
        events: list[Event] = []
        if path is not None:
            events.append(Event("add", path))
        events += [Event("add", bdi), Event("add", generic), Event("add", disk)]
        if partitions and self.multipath:
            disk.properties["NVME_HOST_IFACE"] = "none"
            events.append(Event("change", disk))
        events += [Event("add", p) for p in partitions]
        return events

    def detach(self, ctrl: str, nsid: int) -> list[Event]:
        """The namespace disappears (detach-ns, or QEMU ``device_del``)."""
        att = self._get(ctrl, nsid)
        del self.namespaces[(ctrl, nsid)]
        cfg = self.controller(ctrl)
        self.subsystems[cfg.subsysnqn].heads.pop(nsid, None)
        for dev in (att.disk, att.generic, *att.partitions):
            self._free_minor(dev.dev)
        events = [Event("remove", att.generic)]
        events += [Event("remove", p) for p in reversed(att.partitions)]
        events += [Event("remove", att.bdi), Event("remove", att.disk)]
        if att.path is not None:
            events.append(Event("remove", att.path))
        return events

    def resize(self, ctrl: str, nsid: int, size_bytes: int) -> list[Event]:
        """The namespace's capacity changes: a ``change`` with ``RESIZE=1`` (the kernel's
        ``set_capacity_and_notify``)."""
        att = self._get(ctrl, nsid)
        att.config = dataclasses.replace(att.config, size_bytes=size_bytes)
        sectors = str(size_bytes // SECTOR)
        att.disk.attributes["size"] = sectors
        if att.path is not None:
            att.path.attributes["size"] = sectors
        # RESIZE=1 belongs to this one uevent, not to the device's udev database entry.
        resized = att.disk.snapshot()
        resized.properties["RESIZE"] = "1"
        return [Event("change", resized)]

    def change(
        self, ctrl: str, nsid: int, *, fs: str | None, label: str | None = None
    ) -> list[Event]:
        """blkid finds new contents (e.g. mkfs on the whole namespace): a disk ``change``."""
        att = self._get(ctrl, nsid)
        att.config = dataclasses.replace(
            att.config, fs=fs, label=label, fs_uuid=None, generation=att.config.generation + 1
        )
        props = {k: v for k, v in att.disk.properties.items() if not k.startswith("ID_FS_")}
        fs_props = _fs_properties(att.config, att.config.fs, att.config.label, "disk")
        props.update(fs_props)
        # udev recomputes the links on the change: by-label/by-uuid follow the new contents.
        links = [
            link
            for link in props.get("DEVLINKS", "").split()
            if not link.startswith(("/dev/disk/by-label/", "/dev/disk/by-uuid/"))
        ]
        props["DEVLINKS"] = " ".join(links + _fs_links(fs_props))
        att.disk.properties = props
        return [Event("change", att.disk)]

    def devices(self) -> list[Device]:
        """Every device present now, parents before children (coldplug order)."""
        out: list[Device] = []
        for _cfg, pci, _ctrl in self.controllers.values():
            out.append(pci)
        out += [s.device for s in self.subsystems.values()]
        out += [ctrl for _cfg, _pci, ctrl in self.controllers.values()]
        for att in self.namespaces.values():
            if att.path is not None:
                out.append(att.path)
            out += [att.bdi, att.generic, att.disk, *att.partitions]
        return out

    # ----------------------------------------------------------------- builders
    def _disk_attributes(
        self, ns: NamespaceConfig, ids: Mapping[str, str], diskseq: int
    ) -> dict[str, str]:
        return {
            "alignment_offset": "0",
            "discard_alignment": "0",
            "diskseq": str(diskseq),
            "ext_range": "256",
            "nsid": str(ns.nsid),
            "range": "0",
            "removable": "0",
            "ro": "1" if ns.read_only else "0",
            "size": str(ns.size_bytes // SECTOR),
            "queue/logical_block_size": str(ns.lba_size),
            "queue/physical_block_size": str(ns.lba_size),
            "queue/hw_sector_size": str(ns.lba_size),
            "queue/rotational": "0",
            **ids,
        }

    def _disk_properties(
        self,
        cfg: ControllerConfig,
        ns: NamespaceConfig,
        ids: Mapping[str, str],
        diskseq: int,
        devname: str,
        minor: int,
    ) -> dict[str, str]:
        serial = f"{cfg.model.strip().replace(' ', '_')}_{cfg.serial.strip()}_{ns.nsid}"
        id_path = f"pci-{cfg.address}-nvme-{ns.nsid}"
        props = {
            "DEVNAME": devname,
            "DEVTYPE": "disk",
            "DISKSEQ": str(diskseq),
            "MAJOR": str(BLOCK_MAJOR),
            "MINOR": str(minor),
            "ID_SERIAL_SHORT": cfg.serial.strip(),
            "ID_WWN": ids["wwid"],
            "ID_MODEL": cfg.model.strip(),
            "ID_REVISION": cfg.firmware.strip(),
            "ID_NSID": str(ns.nsid),
            "ID_SERIAL": serial,
            "ID_PATH": id_path,
            "ID_PATH_TAG": id_path.replace(":", "_").replace(".", "_"),
            "TAGS": ":systemd:",
            "CURRENT_TAGS": ":systemd:",
        }
        links = [
            *_by_id_links(cfg, ids["wwid"], serial, id_path),
            f"/dev/disk/by-diskseq/{diskseq}",
        ]
        if ns.partitions:
            props["ID_PART_TABLE_TYPE"] = "gpt"
            props["ID_PART_TABLE_UUID"] = _derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "pt")
        else:
            fs_props = _fs_properties(ns, ns.fs, ns.label, "disk")
            props.update(fs_props)
            links += _fs_links(fs_props)
        props["DEVLINKS"] = " ".join(links)
        return props

    def _partition(
        self,
        disk: Device,
        cfg: ControllerConfig,
        ns: NamespaceConfig,
        part: PartitionConfig,
        diskseq: int,
    ) -> Device:
        minor = self._minor(BLOCK_MAJOR)
        name = f"{disk.sysname}p{part.number}"
        start = 2048 + sum(p.size_bytes // SECTOR for p in ns.partitions if p.number < part.number)
        partuuid = _derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "part", part.number)
        props = {
            k: v
            for k, v in disk.properties.items()
            if k.startswith(("ID_SERIAL", "ID_WWN", "ID_MODEL", "ID_REVISION", "ID_NSID"))
            or k.startswith(("ID_PATH", "ID_PART_TABLE"))
        }
        props.update(
            {
                "DEVNAME": f"/dev/{name}",
                "DEVTYPE": "partition",
                "DISKSEQ": str(diskseq),
                "PARTN": str(part.number),
                "MAJOR": str(BLOCK_MAJOR),
                "MINOR": str(minor),
                "ID_PART_ENTRY_SCHEME": "gpt",
                "ID_PART_ENTRY_UUID": partuuid,
                "ID_PART_ENTRY_TYPE": "0fc63daf-8483-4772-8e3d-6984cf47ae9b",
                "ID_PART_ENTRY_NUMBER": str(part.number),
                "ID_PART_ENTRY_OFFSET": str(start),
                "ID_PART_ENTRY_SIZE": str(part.size_bytes // SECTOR),
                "ID_PART_ENTRY_DISK": disk.dev or "",
                "TAGS": ":systemd:",
                "CURRENT_TAGS": ":systemd:",
            }
        )
        if part.partlabel:
            props["PARTNAME"] = part.partlabel
            props["ID_PART_ENTRY_NAME"] = part.partlabel
        fs_props = _fs_properties(
            dataclasses.replace(ns, generation=ns.generation * 100 + part.number),
            part.fs,
            part.label,
            "part",
        )
        props.update(fs_props)
        # 60-persistent-storage.rules: the disk's by-id/by-path links with -partN, plus
        # by-partuuid, by-partlabel and the filesystem's by-uuid/by-label.
        disk_links = _by_id_links(
            cfg, props.get("ID_WWN", ""), props.get("ID_SERIAL", ""), props.get("ID_PATH", "")
        )
        links = [f"{link}-part{part.number}" for link in disk_links]
        links.append(f"/dev/disk/by-partuuid/{partuuid}")
        if part.partlabel:
            links.append(f"/dev/disk/by-partlabel/{part.partlabel}")
        links += _fs_links(fs_props)
        props["DEVLINKS"] = " ".join(links)
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
                "size": str(part.size_bytes // SECTOR),
                "start": str(start),
            },
            properties=props,
            dev=f"{BLOCK_MAJOR}:{minor}",
            devnode=f"/dev/{name}",
            parents=disk.parents,
        )


def _by_id_links(cfg: ControllerConfig, wwid: str, serial: str, id_path: str) -> list[str]:
    """The disk's by-id and by-path links (udev 252 also keeps the legacy
    ``nvme-<model>_<serial>`` link without the NSID, shared by every namespace)."""
    legacy = f"{cfg.model.strip().replace(' ', '_')}_{cfg.serial.strip()}"
    return [
        f"/dev/disk/by-id/nvme-{serial}",
        f"/dev/disk/by-id/nvme-{wwid}",
        f"/dev/disk/by-id/nvme-{legacy}",
        f"/dev/disk/by-path/{id_path}",
    ]


def _fs_links(fs_props: Mapping[str, str]) -> list[str]:
    """by-label/by-uuid links of a filesystem's ``ID_FS_*`` properties."""
    links = []
    if fs_props.get("ID_FS_LABEL"):
        links.append(f"/dev/disk/by-label/{fs_props['ID_FS_LABEL']}")
    if "ID_FS_UUID" in fs_props:
        links.append(f"/dev/disk/by-uuid/{fs_props['ID_FS_UUID']}")
    return links


def _fs_properties(
    ns: NamespaceConfig, fs: str | None, label: str | None, what: str
) -> dict[str, str]:
    """blkid's ``ID_FS_*`` for a filesystem (nothing for a blank device)."""
    if not fs:
        return {}
    fs_uuid = ns.fs_uuid or _derived_uuid(ns.ctrl, ns.nsid, ns.generation, what, fs)
    props = {
        "ID_FS_UUID": fs_uuid,
        "ID_FS_UUID_ENC": fs_uuid,
        "ID_FS_TYPE": fs,
        "ID_FS_USAGE": "other" if fs == "swap" else "filesystem",
    }
    if fs in ("ext2", "ext3", "ext4"):
        props["ID_FS_VERSION"] = "1.0"
    if label is not None:
        props["ID_FS_LABEL"] = label
        props["ID_FS_LABEL_ENC"] = label
    return props
