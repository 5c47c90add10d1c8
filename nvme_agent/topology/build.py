"""Value objects from device records: a controller, a namespace as one disk shows it, a partition.

Pure functions: what the tracker knows beyond the record (the subsystem NQN, the controllers
that reach a disk, its generic char device) comes in as a :class:`DiskContext`.  Values a record
lacks (a ``remove`` has no attributes, a racing ``change`` may read none, a controller that is
still connecting reads ``(efault)``) are taken from the previous object, never invented.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nvme_agent.topology.model import (
    NOT_LIVE_STATES,
    Controller,
    Filesystem,
    Identity,
    Namespace,
    Partition,
)
from nvme_agent.topology.records import DeviceRecord

log = logging.getLogger(__name__)


def to_int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


def build_controller(record: DeviceRecord, old: Controller | None) -> Controller:
    """The controller ``record`` shows, with what it cannot read kept from ``old``."""

    def keep(value: object, name: str) -> Any:
        return value if value is not None or old is None else getattr(old, name)

    transport = record.attr("transport") or record.properties.get("NVME_TRTYPE") or None
    return Controller(
        name=record.sysname,
        devpath=record.devpath,
        serial=keep(record.attr("serial"), "serial"),
        model=keep(record.attr("model"), "model"),
        firmware=keep(record.attr("firmware_rev"), "firmware"),
        subsysnqn=keep(record.attr("subsysnqn"), "subsysnqn"),
        cntlid=keep(to_int(record.attr("cntlid")), "cntlid"),
        transport=keep(transport, "transport"),
        address=keep(record.attr("address"), "address"),
        state=keep(record.attr("state"), "state"),
    )


def not_live_reason(record: DeviceRecord, ctrl: Controller) -> str | None:
    """Why ``ctrl`` must not be announced yet (``None``: it is live, or nothing says otherwise).

    Only positive evidence counts: a placeholder attribute or a connecting state.  A record
    without attributes (a replayed capture) is taken as it is.
    """
    unread = record.placeholders()
    if unread:
        return f"attributes not readable yet ({', '.join(sorted(unread))})"
    if ctrl.state in NOT_LIVE_STATES:
        return f"state {ctrl.state}"
    return None


@dataclass(frozen=True, slots=True)
class DiskContext:
    """What the tracker knows about a disk that its own record does not say."""

    subsysnqn: str | None
    controllers: tuple[str, ...]
    ctrl: Controller | None  # the controller whose serial/model/transport the disk reports
    generic: str | None


def build_namespace(
    record: DeviceRecord, old: Namespace | None, ctx: DiskContext
) -> Namespace | None:
    """The namespace as the disk of ``record`` shows it (``None`` without any nsid)."""
    props = record.properties
    nsid = to_int(record.attr("nsid")) or to_int(props.get("ID_NSID"))
    if nsid is None:
        if old is None:
            log.warning("%s: no nsid attribute or ID_NSID property; ignored", record.devpath)
            return None
        nsid = old.nsid
    uuid, nguid, eui64 = record.attr("uuid"), record.attr("nguid"), record.attr("eui")
    wwid = record.attr("wwid") or props.get("ID_WWN") or None
    if not record.attributes and old is not None:
        # Attributes unreadable (raced with removal): keep the identifiers we had.
        uuid, nguid, eui64, wwid = old.uuid, old.nguid, old.eui64, wwid or old.wwid
    sectors = to_int(record.attr("size"))
    lba = to_int(record.attr("queue/logical_block_size"))
    ctrl = ctx.ctrl
    return Namespace(
        nsid=nsid,
        name=record.sysname,
        devpath=record.devpath,
        devnode=props.get("DEVNAME") or (old.devnode if old else f"/dev/{record.sysname}"),
        identity=Identity.derive(
            uuid=uuid, nguid=nguid, eui64=eui64, wwid=wwid, subsysnqn=ctx.subsysnqn, nsid=nsid
        ),
        subsysnqn=ctx.subsysnqn,
        controllers=ctx.controllers,
        multipath="/nvme-subsystem/" in record.devpath,
        size_bytes=sectors * 512 if sectors is not None else (old.size_bytes if old else None),
        lba_size=lba if lba is not None else (old.lba_size if old else None),
        uuid=uuid,
        nguid=nguid,
        eui64=eui64,
        wwid=wwid,
        serial=props.get("ID_SERIAL_SHORT") or (ctrl.serial if ctrl else None),
        model=props.get("ID_MODEL") or (ctrl.model if ctrl else None),
        transport=ctrl.transport if ctrl else None,
        diskseq=to_int(record.attr("diskseq")) or to_int(props.get("DISKSEQ")),
        read_only=record.attr("ro") == "1",
        fs=Filesystem.from_properties(props),
        generic=ctx.generic or (old.generic if old else None),
        partitions=old.partitions if old else (),
        properties=props,
    )


def build_partition(record: DeviceRecord, old: Partition | None) -> Partition:
    props = record.properties
    sectors = to_int(record.attr("size"))
    return Partition(
        name=record.sysname,
        devpath=record.devpath,
        devnode=props.get("DEVNAME") or (old.devnode if old else f"/dev/{record.sysname}"),
        number=to_int(props.get("PARTN")) or to_int(record.attr("partition")),
        size_bytes=sectors * 512 if sectors is not None else (old.size_bytes if old else None),
        fs=Filesystem.from_properties(props),
        partlabel=props.get("ID_PART_ENTRY_NAME") or props.get("PARTNAME") or None,
        partuuid=props.get("ID_PART_ENTRY_UUID") or None,
        properties=props,
    )
