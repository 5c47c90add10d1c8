"""The one shape in which device events enter the agent.

Intake (real pyudev), the capture replayer and unit tests all produce :class:`DeviceRecord`;
the topology consumes nothing else.  Keeping pyudev objects out of the model means a record
is a plain value that can be logged, compared and replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.topology.model import Properties
from nvme_agent.topology.names import hidden_path

#: sysfs attributes read at intake, by subsystem (a block device: a disk's), and only those
#: the topology is built from: each is a file read per event (issue 13).  A ``remove`` event
#: has none: by the time it arrives the sysfs directory is gone, so the topology must remember
#: what it saw.
ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "block": (
        "nsid",
        "wwid",
        "uuid",
        "nguid",
        "eui",
        "size",
        "queue/logical_block_size",
        "ro",
        "diskseq",
    ),
    "nvme": (
        "serial",
        "model",
        "firmware_rev",
        "subsysnqn",
        "cntlid",
        "transport",
        "address",
        "state",
    ),
    "nvme-subsystem": ("subsysnqn",),
    "nvme-generic": (),
}
#: Of a partition, its own: the namespace's identifiers are not in its sysfs directory.
PARTITION_ATTRIBUTES: tuple[str, ...] = ("size", "partition")


def attributes_read(subsystem: str, devtype: str | None) -> tuple[str, ...]:
    """The sysfs attributes intake reads of a device (:data:`ATTRIBUTES`)."""
    if subsystem != "block" or devtype == "disk":
        return ATTRIBUTES.get(subsystem, ())
    if devtype == "partition":
        return PARTITION_ATTRIBUTES
    return ATTRIBUTES["block"] + ("partition",)  # DEVTYPE unknown: either


#: sysfs attributes read of a device's NVMe ancestors (``DeviceRecord.parents``): only what the
#: tracker uses.  Read for every event of every disk, so nothing more.
PARENT_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "nvme": ("subsysnqn",),
    "nvme-subsystem": ("subsysnqn",),
}


def reads_sysfs(action: str, subsystem: str, sysname: str) -> bool:
    """Whether intake reads a device's attributes and ancestors (else properties only).

    A remove's sysfs directory is gone.  Of a hidden multipath path (``nvme0c1n1``) the
    tracker reads only which controller reaches which head, from its devpath: half of the
    disks of a multipath coldplug, and their attributes were a sixth of its time (issue 13).
    """
    return action != "remove" and not (subsystem == "block" and hidden_path(sysname))


#: What the kernel's ``vsprintf`` prints for a bad or missing string: a fabrics controller
#: that is still connecting answers ``(efault)`` for its serial, model and subsystem NQN.
#: Such a value is never data; it means "not known yet".
PLACEHOLDERS = frozenset({"(efault)", "(null)", "(einval)"})


def clean_value(value: str | None) -> str | None:
    """``value`` stripped; ``None`` when it is empty or a kernel placeholder."""
    if value is None:
        return None
    value = value.strip()
    if not value or value in PLACEHOLDERS:
        return None
    return value


#: Subsystems the agent listens to.  ``bdi`` is deliberately absent: it carries nothing that
#: the block device does not.
SUBSYSTEMS: tuple[str, ...] = ("block", "nvme", "nvme-generic", "nvme-subsystem")

#: Order in which coldplug enumerates: parents before children, and a disk's generic
#: character device before the disk, which then is built with it once (after it, each
#: generic rebuilt its namespace again: a tenth of a 1,000-namespace coldplug, issue 13).
COLDPLUG_ORDER: tuple[str, ...] = ("nvme-subsystem", "nvme", "nvme-generic", "block")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A udev event (or a coldplug enumeration result, with ``action='add'``).

    ``parents`` lists (subsystem, sysname, attributes) of the ancestors that matter to NVMe
    (the controller ``nvme``, the ``nvme-subsystem``), nearest first.
    """

    action: str
    devpath: str
    subsystem: str
    sysname: str
    devtype: str | None = None
    seqnum: int = 0
    properties: Properties = field(default_factory=Properties)
    attributes: Properties = field(default_factory=Properties)
    parents: tuple[tuple[str, str, Properties], ...] = ()
    coldplug: bool = False

    @classmethod
    def build(
        cls,
        action: str,
        devpath: str,
        subsystem: str,
        properties: Mapping[str, str] | None = None,
        attributes: Mapping[str, str] | None = None,
        *,
        devtype: str | None = None,
        seqnum: int = 0,
        parents: tuple[tuple[str, str, Properties], ...] = (),
        coldplug: bool = False,
    ) -> DeviceRecord:
        props = dict(properties or {})
        return cls(
            action=action,
            devpath=devpath,
            subsystem=subsystem,
            sysname=devpath.rstrip("/").rsplit("/", 1)[-1],
            devtype=devtype if devtype is not None else props.get("DEVTYPE"),
            seqnum=seqnum or int(props.get("SEQNUM", "0") or 0),
            properties=Properties.of(props),
            attributes=Properties.of(dict(attributes or {})),
            parents=parents,
            coldplug=coldplug,
        )

    def attr(self, name: str) -> str | None:
        """The sysfs attribute ``name``, stripped; ``None`` if absent, empty or a placeholder."""
        return clean_value(self.attributes.get(name))

    def placeholders(self) -> tuple[str, ...]:
        """Names of the attributes that read as a kernel placeholder (``(efault)``...)."""
        return tuple(k for k, v in self.attributes.items() if v.strip() in PLACEHOLDERS)

    def parent(self, subsystem: str) -> tuple[str, Properties] | None:
        """Nearest ancestor of ``subsystem`` as (sysname, attributes), if any."""
        for sub, name, attrs in self.parents:
            if sub == subsystem:
                return name, attrs
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "devpath": self.devpath,
            "subsystem": self.subsystem,
            "devtype": self.devtype,
            "seqnum": self.seqnum,
            "properties": dict(self.properties),
            "attributes": dict(self.attributes),
        }
