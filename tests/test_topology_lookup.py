"""The snapshot's lookup tables, kept up to date by the tracker, answer exactly what a scan
of the snapshot would, and a snapshot's tables never change after it was handed out."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.policy.duplicates import carriers
from nvme_agent.topology.lookup import Layered, build_tables
from nvme_agent.topology.model import Properties, TopologySnapshot
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology

NQNS = ("nqn.2014-08.org.example:a", "nqn.2014-08.org.example:b")
PCI = "/devices/pci0000:00/0000:00:04.0/nvme"
#: Filesystem UUIDs, in both cases: the table files them case-insensitively.
UUIDS = ("1111-aaaa", "1111-AAAA", "2222-bbbb", "")


def controller(name: str, nqn: str) -> DeviceRecord:
    attrs = {"serial": "S", "model": "M", "subsysnqn": nqn, "state": "live"}
    return DeviceRecord.build("add", f"{PCI}/{name}", "nvme", {}, attrs)


def fs_props(uuid: str, usage: str) -> dict[str, str]:
    if not uuid:
        return {}
    return {"ID_FS_TYPE": "ext4", "ID_FS_UUID": uuid, "ID_FS_USAGE": usage}


def disk(step: tuple[Any, ...]) -> DeviceRecord:
    action, ctrl, slot, nsid, devnode, uuid, usage, diskseq = step
    name = f"{ctrl}n{slot}"
    # DEVNAME is chosen apart from the devpath: two disks may claim one device node (a
    # stale one whose remove was lost), and the table must still answer the first in order.
    props = {"DEVNAME": f"/dev/nvme9n{devnode}", "DEVTYPE": "disk", "ID_NSID": str(nsid)}
    props |= {"DISKSEQ": str(diskseq)} | fs_props(uuid, usage)
    attrs: dict[str, str] = {}
    parents: tuple[tuple[str, str, Properties], ...] = ()
    if action != "remove":
        nqn = NQNS[int(ctrl[-1]) % 2]
        attrs = {"nsid": str(nsid), "size": "2048", "wwid": f"eui.{nsid:016x}"}
        parents = (("nvme", ctrl, Properties.of({"subsysnqn": nqn})),)
    return DeviceRecord.build(
        action, f"{PCI}/{ctrl}/{name}", "block", props, attrs, parents=parents
    )


def partition(step: tuple[Any, ...]) -> DeviceRecord:
    action, ctrl, slot, number, devnode, uuid, usage, _ = step
    name = f"{ctrl}n{slot}p{number}"
    props = {"DEVNAME": f"/dev/nvme9n{devnode}p{number}", "DEVTYPE": "partition"}
    props |= {"PARTN": str(number)} | fs_props(uuid, usage)
    return DeviceRecord.build(action, f"{PCI}/{ctrl}/{ctrl}n{slot}/{name}", "block", props, {})


step = st.tuples(
    st.sampled_from(["add", "add", "change", "remove"]),
    st.sampled_from(["nvme0", "nvme1", "nvme2"]),
    st.integers(1, 3),  # the disk's name
    st.integers(1, 3),  # nsid, or partition number
    st.integers(1, 3),  # device node
    st.sampled_from(UUIDS),
    st.sampled_from(["filesystem", "other"]),
    st.integers(1, 2),  # DISKSEQ
)
ops = st.lists(st.tuples(st.booleans(), step), max_size=50)


def kept(snap: TopologySnapshot) -> dict[str, Any]:
    """The filesystem UUID table the tracker handed to ``snap``, as a dict."""
    table = snap._index["fs_uuid"]
    assert isinstance(table, Layered)
    return table.to_dict()


def answers(snap: TopologySnapshot) -> dict[str, Any]:
    """What the snapshot answers, for every name its namespaces carry."""
    plain = build_tables(snap.namespaces)
    return {
        "nsid": {n: snap.namespace(n) for n in plain["nsid"]},
        "key": {k: snap.namespace(k[1], k[0]) for k in plain["key"]},
        "devnode": {d: snap.device(d) for d in plain["devnode"]},
        "fs_uuid": {u: snap.carriers(u.upper()) for u in plain["fs_uuid"]},
        "carriers": {u: carriers(snap, u) for u in UUIDS if u},
    }


def scanning(snap: TopologySnapshot) -> TopologySnapshot:
    """The same namespaces in a plain snapshot, which builds its tables by a scan."""
    return TopologySnapshot(controllers=snap.controllers, namespaces=snap.namespaces)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_kept_tables_answer_what_a_scan_would(ops: list[tuple[bool, tuple[Any, ...]]]) -> None:
    topo = Topology()
    for i in range(3):
        topo.apply(controller(f"nvme{i}", NQNS[i % 2]))
    handed: list[tuple[TopologySnapshot, dict[str, Any]]] = []
    for is_partition, s in ops:
        before = topo.snapshot()
        topo.apply(partition(s) if is_partition else disk(s))
        snap = topo.snapshot()
        # What the log says was touched turns the earlier namespaces into these.
        touched = snap.touched_since(before)
        assert touched is not None
        held = {ns.key: ns for ns in before.namespaces}
        for key, ns in touched:
            held.pop(key, None) if ns is None else held.__setitem__(key, ns)
        assert held == {ns.key: ns for ns in snap.namespaces}
        assert kept(snap) == build_tables(snap.namespaces)["fs_uuid"]  # a scan's order
        assert answers(snap) == answers(scanning(snap))
        handed.append((snap, kept(snap)))
    # Later changes never reached a snapshot handed out before them.
    for snap, then in handed:
        assert kept(snap) == then == build_tables(snap.namespaces)["fs_uuid"]


def test_the_log_answers_only_for_snapshots_of_one_log() -> None:
    topo = Topology()
    topo.apply(controller("nvme0", NQNS[0]))
    first = topo.snapshot()
    topo.apply(disk(("add", "nvme0", 1, 1, 1, "", "filesystem", 1)))
    second = topo.snapshot()
    assert [(key, ns is not None) for key, ns in second.touched_since(first) or []] == [
        ((NQNS[0], 1), True)
    ]
    assert first.touched_since(second) is None  # backwards: the log cannot say
    assert second.touched_since(scanning(first)) is None  # not the tracker's
    assert second.touched_since(second) == []


def test_a_changed_topology_copies_the_table_a_snapshot_holds() -> None:
    topo = Topology()
    topo.apply(controller("nvme0", NQNS[0]))
    add = ("add", "nvme0", 1, 1, 1, "1111-aaaa", "filesystem", 1)
    topo.apply(disk(add))
    first = topo.snapshot()
    assert [ns.nsid for ns, _ in first.carriers("1111-AAAA")] == [1]
    topo.apply(disk(("add", "nvme0", 2, 2, 2, "1111-aaaa", "filesystem", 1)))
    second = topo.snapshot()
    assert [ns.nsid for ns, _ in second.carriers("1111-aaaa")] == [1, 2]
    assert [ns.nsid for ns, _ in first.carriers("1111-aaaa")] == [1]
    topo.apply(disk(("remove", *add[1:])))
    assert [ns.nsid for ns, _ in topo.snapshot().carriers("1111-aaaa")] == [2]
    assert [ns.nsid for ns, _ in second.carriers("1111-aaaa")] == [1, 2]
    assert first.device("/dev/nvme9n1") is not None
    assert topo.snapshot().device("/dev/nvme9n1") is None


def test_many_filesystems_fold_into_new_bases_that_no_snapshot_saw_change() -> None:
    # Distinct UUIDs grow the overlay past its limit again and again: every fold makes a
    # new base, and the snapshots taken on either side of one keep what they saw.
    topo = Topology()
    topo.apply(controller("nvme0", NQNS[0]))
    handed: list[tuple[TopologySnapshot, dict[str, Any]]] = []
    for i in range(1, 150):
        uuid = f"{i:04x}-aaaa"
        topo.apply(disk(("add", "nvme0", i, i, i, uuid, "filesystem", 1)))
        if i % 3 == 0:
            topo.apply(disk(("remove", "nvme0", i, i, i, uuid, "filesystem", 1)))
        snap = topo.snapshot()
        assert kept(snap) == build_tables(snap.namespaces)["fs_uuid"]
        handed.append((snap, kept(snap)))
    for snap, then in handed:
        assert kept(snap) == then
