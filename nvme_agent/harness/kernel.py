"""The kernel's side of a fake NVMe device: sysfs attributes and uevent variables.

What the Linux 6.1 NVMe driver shows for a controller (``nvme_class_uevent``, the
``(efault)`` strings of a controller whose subsystem is not set up yet), its PCI function or
the fabrics ``ctl`` device, a subsystem, and a namespace disk (identifiers with QEMU's
"bogus Namespace Identifiers" quirk or without).  What udev adds on top lives in
:mod:`.udevrules`.
"""

from __future__ import annotations

from collections.abc import Mapping

from nvme_agent.harness.devices import ControllerConfig, Device, NamespaceConfig
from nvme_agent.harness.udevrules import SECTOR, derived_uuid

BLOCK_MAJOR = 259
GENERIC_MAJOR = 244
CTRL_MAJOR = 245
MISC_MAJOR = 10
#: What the kernel prints for a string of a controller whose subsystem is not set up yet.
EFAULT = "(efault)"
FABRICS_CTL = "/devices/virtual/nvme-fabrics/ctl"


def _hex(text: str) -> str:
    return text.strip().encode("utf-8", "surrogateescape").hex()


def identifiers(cfg: ControllerConfig, ns: NamespaceConfig) -> dict[str, str]:
    if cfg.quirk:
        return {
            "wwid": f"nvme.{cfg.vendor_id:04x}-{_hex(cfg.serial)}-{_hex(cfg.model)}-{ns.nsid:08x}"
        }
    uuid = ns.uuid or derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "uuid")
    nguid = ns.nguid or derived_uuid(cfg.subsysnqn, ns.nsid, ns.generation, "nguid")
    nguid = nguid.replace("-", "")
    return {"uuid": uuid, "nguid": nguid, "wwid": f"uuid.{uuid}"}


def disk_attributes(ns: NamespaceConfig, ids: Mapping[str, str], diskseq: int) -> dict[str, str]:
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


def controller_attributes(cfg: ControllerConfig, *, live: bool) -> dict[str, str]:
    """The controller's sysfs attributes (without ``dev``); the identity strings read
    ``(efault)`` until it is live."""
    strings = {
        "firmware_rev": cfg.firmware.ljust(8),
        "model": cfg.model.ljust(40),
        "serial": cfg.serial.ljust(20),
        "subsysnqn": cfg.subsysnqn,
    }
    attrs = {
        "address": cfg.address,
        "cntlid": str(cfg.cntlid) if live else "0",
        "cntrltype": "io",
        "dctype": "none",
        "state": "live" if live else "connecting",
        "transport": cfg.transport,
        "numa_node": "-1",
        "queue_count": "3",
        "sqsize": "1023",
        "kato": "0",
        **(strings if live else dict.fromkeys(strings, EFAULT)),
    }
    if cfg.fabrics:
        attrs.update(
            kato="5",
            sqsize="127",
            ctrl_loss_tmo="600",
            reconnect_delay="10",
            fast_io_fail_tmo="off",
            hostnqn="nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001",
        )
    return attrs


def controller_properties(cfg: ControllerConfig, minor: int) -> dict[str, str]:
    """The kernel's uevent variables of a controller (``nvme_class_uevent``)."""
    props = {
        "MAJOR": str(CTRL_MAJOR),
        "MINOR": str(minor),
        "DEVNAME": f"/dev/{cfg.name}",
        "NVME_TRTYPE": cfg.transport,
    }
    if cfg.fabrics:
        props.update(
            NVME_TRADDR=cfg.traddr,
            NVME_TRSVCID=cfg.trsvcid,
            NVME_HOST_TRADDR="none",
            NVME_HOST_IFACE="none",
        )
    return props


def pci_function(cfg: ControllerConfig, parent: Device) -> Device:
    slot = cfg.pci_slot or ""
    return Device(
        devpath=f"{parent.devpath}/{slot}",
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
            "PCI_SLOT_NAME": slot,
        },
        parents=(parent,) if parent.subsystem else (),
    )


def root_port(path: str) -> Device:
    """QEMU's ``pcie-root-port`` (1b36:000c), present from boot."""
    return Device(
        devpath=path,
        subsystem="pci",
        attributes={"vendor": "0x1b36", "device": "0x000c", "class": "0x060400"},
        properties={
            "DRIVER": "pcieport",
            "PCI_CLASS": "60400",
            "PCI_ID": "1B36:000C",
            "PCI_SLOT_NAME": path.rsplit("/", 1)[-1],
        },
    )


def subsystem_device(cfg: ControllerConfig) -> Device:
    return Device(
        devpath=f"/devices/virtual/nvme-subsystem/nvme-subsys{cfg.instance}",
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
