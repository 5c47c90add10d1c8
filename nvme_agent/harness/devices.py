"""The fake guest's vocabulary: devices and the uevents about them, and the configurations
of controllers, namespaces and partitions that scenarios and tests describe.

:class:`Device` is one sysfs device as the bed writes it; :class:`Event` is one uevent, a
snapshot of its device; :meth:`Device.record` is the
:class:`~nvme_agent.topology.records.DeviceRecord` intake would build from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import (
    PARENT_ATTRIBUTES,
    DeviceRecord,
    attributes_read,
    reads_sysfs,
)

QEMU_VENDOR = 0x1B36


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

        Mirrors :func:`nvme_agent.topology.intake.record_from_device`: only the attributes
        listed by :func:`~nvme_agent.topology.records.attributes_read`, none where intake reads
        none (:func:`~nvme_agent.topology.records.reads_sysfs`), the ``nvme`` then the
        ``nvme-subsystem`` ancestor.
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
        wanted = attributes_read(self.subsystem, self.devtype)
        read = reads_sysfs(action, self.subsystem, self.sysname)
        attrs = _pick(self.attributes, wanted) if read else {}
        parents: tuple[tuple[str, str, Properties], ...] = ()
        if read:
            parents = tuple(
                (
                    p.subsystem,
                    p.sysname,
                    Properties.of(_pick(p.attributes, PARENT_ATTRIBUTES[p.subsystem])),
                )
                for p in sorted(self.ancestors(), key=lambda p: p.subsystem != "nvme")
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

    def ancestors(self) -> list[Device]:
        """Parents, nearest first, then theirs."""
        out: list[Device] = []
        todo = list(self.parents)
        while todo:
            parent = todo.pop(0)
            out.append(parent)
            todo += parent.parents
        return out


def _pick(attributes: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {n: attributes[n].strip() for n in names if n in attributes}


@dataclass(frozen=True)
class Event:
    """One uevent the guest would emit: ``action`` of ``device``.

    The event keeps a snapshot of the device as it was when the event was built, like a real
    uevent: a later change of the layout's device (e.g. udev adding ``NVME_HOST_IFACE`` on the
    multipath ``change`` that follows the disk's ``add``) does not leak into earlier events.
    ``extra`` are variables of this one uevent only (``RESIZE=1``, ``NVME_EVENT=connected``):
    they are in the event's properties but never in the device's ``uevent`` file.
    """

    action: str
    device: Device
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen dataclass: replace the field through object.__setattr__ (the documented way).
        snap = self.device.snapshot()
        snap.properties.update(self.extra)
        object.__setattr__(self, "device", snap)

    def wire(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "device": self.device.wire(),
            "silent": self.device.silent,
            "event_only": sorted(self.extra),
        }


@dataclass(frozen=True)
class ControllerConfig:
    """An NVMe controller, as a scenario describes it.

    ``transport`` ``pcie`` puts it on a PCI function ``pci_address`` (default
    ``0000:00:<4+N>.0``), behind the hotplug root port ``root_port`` if set; any other
    transport makes a fabrics controller reached at ``traddr``/``trsvcid``.  ``connecting``
    (default: true for fabrics) makes it appear with ``(efault)`` attributes until
    :meth:`Layout.connect`.
    """

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
    transport: str = "pcie"
    traddr: str = "127.0.0.1"
    trsvcid: str = "4420"
    root_port: str | None = None
    connecting: bool | None = None

    @property
    def instance(self) -> int:
        if not self.name.startswith("nvme") or not self.name[4:].isdigit():
            raise LayoutError(f"controller name {self.name!r} is not nvmeN")
        return int(self.name[4:])

    @property
    def fabrics(self) -> bool:
        return self.transport != "pcie"

    @property
    def quirk(self) -> bool:
        """Whether the kernel ignores this controller's namespace identifiers (a PCI quirk)."""
        if self.bogus_ids is not None:
            return self.bogus_ids
        return not self.fabrics and self.vendor_id == QEMU_VENDOR

    @property
    def pci_slot(self) -> str | None:
        if self.fabrics:
            return None
        return self.pci_address or f"0000:00:{4 + self.instance:02x}.0"

    @property
    def address(self) -> str:
        """The controller's ``address`` attribute."""
        return self.pci_slot or f"traddr={self.traddr},trsvcid={self.trsvcid}"

    @property
    def starts_connecting(self) -> bool:
        return self.fabrics if self.connecting is None else self.connecting


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
    """A namespace's contents and identity, and the controller it is first attached through.

    ``generation`` distinguishes images put at the same NSID (a hot-swap): it feeds the
    derived uuid/nguid (real hardware) and the filesystem UUID.  Explicit ``uuid``/``nguid``
    win.  ``devname`` overrides ``DEVNAME`` (real mode points it at a loop device);
    ``path_devnames`` overrides it for the disk of one controller (without native multipath
    each controller has a disk of its own: two loop devices of one image stand in for them).
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
    path_devnames: tuple[tuple[str, str], ...] = ()

    def devname_through(self, ctrl: str) -> str | None:
        """The ``DEVNAME`` override of the disk through controller ``ctrl``, if any."""
        return dict(self.path_devnames).get(ctrl, self.devname)
