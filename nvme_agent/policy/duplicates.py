"""Never two mounts of one filesystem: which device of a filesystem UUID may be mounted.

One filesystem can show through two block devices: a namespace reached through two
controllers without native multipath when the topology could not tell they are one, a cloned
image, a snapshot attached next to its origin.  Two mounts of it are two independent writers
of one filesystem (ext4 corrupts it; xfs and btrfs refuse or misbehave), so a mount of a
filesystem UUID that another device present in the snapshot carries is refused.

Which one keeps it is decided by the snapshot alone (``decide`` is pure):

* a device that appears (a live add, a rule change, a reload) while another device of the
  same filesystem UUID is present is refused: the present one came first, and may be mounted.
  Two that appear in one burst both see each other and are both refused, never both mounted;
* among the devices found present at a fresh start (coldplug, no reason), the one the kernel
  created first keeps it: the lowest ``DISKSEQ``, then (subsystem NQN, NSID, partition
  number), so exactly one of them is mounted whatever order the plans are decided in.

The filesystem UUID comes from the disk and is not trusted: a copy can only lose to the
device that was there first, never displace it, and the value is compared, never used.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvme_agent.policy.facts import Facts
from nvme_agent.policy.templates import bounded
from nvme_agent.topology.changes import Change
from nvme_agent.topology.model import Filesystem, Namespace, Partition, TopologySnapshot

#: How much of a device-supplied UUID an explanation shows.
_SHOWN = 40


@dataclass(frozen=True, slots=True)
class Carrier:
    """A block device of the snapshot with a mountable filesystem that has a UUID."""

    devnode: str
    nsid: int
    order: tuple[bool, int, str, int, int]

    def describe(self) -> str:
        unknown, seq = self.order[0], self.order[1]
        return f"{self.devnode} (nsid {self.nsid}" + (")" if unknown else f", DISKSEQ {seq})")


def _mountable(fs: Filesystem | None) -> bool:
    return fs is not None and bool(fs.uuid) and fs.usage in (None, "filesystem")


def _order(ns: Namespace, part: Partition | None) -> tuple[bool, int, str, int, int]:
    # Unknown DISKSEQ last; partitions of one disk share its DISKSEQ.
    seq = ns.diskseq
    partn = (part.number or 0) if part is not None else 0
    return (seq is None, seq or 0, ns.subsysnqn or "", ns.nsid, partn)


def carriers(snapshot: TopologySnapshot, fs_uuid: str) -> list[Carrier]:
    """The devices of ``snapshot`` with a mountable filesystem of UUID ``fs_uuid`` (from the
    snapshot's table: the cost does not grow with the number of namespaces)."""
    found: list[Carrier] = []
    for ns, part in snapshot.carriers(fs_uuid):
        fs, devnode = (ns.fs, ns.devnode) if part is None else (part.fs, part.devnode)
        if devnode and _mountable(fs):
            found.append(Carrier(devnode, ns.nsid, _order(ns, part)))
    return found


def mount_conflict(change: Change, facts: Facts, snapshot: TopologySnapshot) -> str | None:
    """Why the target of ``change`` may not be mounted because another device present carries
    its filesystem, or None (see the module docstring)."""
    if not facts.fs_uuid or facts.fs_usage not in (None, "filesystem"):
        return None
    others = carriers(snapshot, facts.fs_uuid)
    mine = next((c for c in others if c.devnode == facts.devnode), None)
    rivals = [c for c in others if c.devnode != facts.devnode]
    if not rivals:
        return None
    uuid = bounded(facts.fs_uuid, _SHOWN)
    fresh_start = change.coldplug and not change.reason
    if fresh_start and mine is not None:
        first = min(others, key=lambda c: c.order)
        if first is mine:
            return None
        return (
            f"filesystem UUID {uuid!r} is also on {first.describe()}, which the kernel "
            "created first: one filesystem is never mounted twice"
        )
    names = ", ".join(c.describe() for c in sorted(rivals, key=lambda c: c.order))
    return (
        f"filesystem UUID {uuid!r} is also on {names}, which is present too: one filesystem "
        "is never mounted twice, and a device that appears next to another one of it is refused"
    )
