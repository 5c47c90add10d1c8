"""Property tests of the topology: any order of disks coming and going over several controllers,
and whatever a controller or a disk says about itself."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.model import Properties, TopologySnapshot
from nvme_agent.topology.records import PLACEHOLDERS, DeviceRecord
from nvme_agent.topology.tracker import Topology

NQN = "nqn.2014-08.org.example:prop"
PCI = "/devices/pci0000:00/0000:00:04.0/nvme"
CONTROLLERS = ("nvme0", "nvme1", "nvme2")


def controller(name: str) -> DeviceRecord:
    attrs = {"serial": "S", "model": "M", "subsysnqn": NQN, "state": "live"}
    return DeviceRecord.build("add", f"{PCI}/{name}", "nvme", {}, attrs)


def disk(action: str, ctrl: str, nsid: int, diskseq: int) -> DeviceRecord:
    name = f"{ctrl}n{nsid}"
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "disk", "ID_NSID": str(nsid)}
    props["DISKSEQ"] = str(diskseq)
    attrs: dict[str, str] = {}
    parents: tuple[tuple[str, str, Properties], ...] = ()
    if action != "remove":
        attrs = {"nsid": str(nsid), "size": "2048", "wwid": f"eui.{nsid:016x}"}
        parents = (("nvme", ctrl, Properties.of({"subsysnqn": NQN})),)
    return DeviceRecord.build(
        action, f"{PCI}/{ctrl}/{name}", "block", props, attrs, parents=parents
    )


#: (action, controller, nsid, diskseq)
steps = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "change"]),
        st.sampled_from(CONTROLLERS),
        st.integers(1, 3),
        st.integers(1, 2),
    ),
    max_size=40,
)


def check_indexes(snap: TopologySnapshot) -> None:
    for ns in snap.namespaces:
        assert snap.namespace(ns.nsid, ns.subsysnqn) is ns
        assert snap.namespace(ns.nsid) is next(n for n in snap.namespaces if n.nsid == ns.nsid)
        assert ns.devnode is not None and snap.device(ns.devnode) == (ns, None)
    for c in snap.controllers:
        assert snap.controller(c.name) is c


@settings(max_examples=100, deadline=None)
@given(steps)
def test_a_namespace_lives_exactly_as_long_as_one_of_its_disks(
    ops: list[tuple[str, str, int, int]],
) -> None:
    topo = Topology()
    for name in CONTROLLERS:
        topo.apply(controller(name))
    present: dict[int, set[str]] = {}  # nsid -> controllers whose disk exists
    for action, ctrl, nsid, diskseq in ops:
        before = len(present.get(nsid, set()))
        known = ctrl in present.get(nsid, set())
        out = topo.apply(disk(action, ctrl, nsid, diskseq))
        if action == "remove":
            present.get(nsid, set()).discard(ctrl)
        else:
            present.setdefault(nsid, set()).add(ctrl)
        after = len(present.get(nsid, set()))
        types = [c.type for c in out]
        if before == 0 and after == 1:
            assert types == [ChangeType.NAMESPACE_ADDED]
        elif before == 1 and after == 0:
            assert types == [ChangeType.NAMESPACE_REMOVED]
        elif after == before + 1:
            assert types == [ChangeType.PATH_ADDED]
        elif after == before - 1:
            assert types == [ChangeType.PATH_LOST]
        elif not known or action == "remove":
            assert types == []  # unknown removes are absorbed
        assert all(c.nsid == nsid for c in out)
        snap = topo.snapshot()
        expected = {n: cs for n, cs in present.items() if cs}
        assert {ns.nsid: {p.controller for p in ns.paths} for ns in snap.namespaces} == expected
        for ns in snap.namespaces:
            assert ns.devnode in {p.devnode for p in ns.paths}
            assert set(ns.controllers) == expected[ns.nsid]
        check_indexes(snap)


def test_the_snapshot_is_shared_until_something_changes() -> None:
    topo = Topology()
    topo.apply(controller("nvme0"))
    first = topo.snapshot()
    assert topo.snapshot() is first
    topo.apply(disk("add", "nvme0", 1, 1))
    second = topo.snapshot()
    assert second is not first and len(second.namespaces) == 1
    topo.apply(disk("add", "nvme0", 1, 1))  # a duplicate changes nothing...
    assert topo.apply(disk("remove", "nvme0", 9, 1)) == []
    assert [n.nsid for n in topo.snapshot().namespaces] == [1]


values = st.one_of(st.sampled_from(sorted(PLACEHOLDERS)), st.text(max_size=40))
attributes = st.dictionaries(
    st.sampled_from(
        ["serial", "model", "firmware_rev", "subsysnqn", "cntlid", "transport", "address", "state"]
    ),
    values,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(attributes, min_size=1, max_size=4), attributes)
def test_whatever_a_controller_says_no_placeholder_reaches_the_model(
    updates: list[dict[str, str]], disk_attrs: dict[str, str]
) -> None:
    topo = Topology()
    out = []
    for i, attrs in enumerate(updates):
        action = "add" if i == 0 else "change"
        rec = DeviceRecord.build(
            action, "/devices/virtual/nvme-fabrics/ctl/nvme4", "nvme", {}, attrs
        )
        out += topo.apply(rec)
    parent = (("nvme", "nvme4", Properties.of(disk_attrs)),)
    props = {"DEVNAME": "/dev/nvme4n1", "DEVTYPE": "disk", "ID_NSID": "1"}
    rec = DeviceRecord.build(
        "add",
        "/devices/virtual/nvme-fabrics/ctl/nvme4/nvme4n1",
        "block",
        props,
        disk_attrs,
        parents=parent,
    )
    out += topo.apply(rec)
    snap = topo.snapshot()
    for data in [c.to_dict() for c in snap.controllers] + [n.to_dict() for n in snap.namespaces]:
        assert not set(flatten(data)) & PLACEHOLDERS, data
    for change in out:
        assert not set(flatten(change.to_dict())) & PLACEHOLDERS


def flatten(data: object) -> list[object]:
    """Every scalar in a JSON-shaped value."""
    if isinstance(data, dict):
        return [x for v in data.values() for x in flatten(v)]
    if isinstance(data, list):
        return [x for v in data for x in flatten(v)]
    return [data]
