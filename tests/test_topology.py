"""Topology diff semantics on synthetic records: hot-swap, duplicates, order, resize, overrun."""

from __future__ import annotations

from typing import Any

from nvme_agent.harness.layout import ControllerConfig, Layout, NamespaceConfig, PartitionConfig
from nvme_agent.harness.scenario import coldplug_order
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology, diff_snapshots

NQN = "nqn.2019-08.org.qemu:subsys0"
CTRL = "/devices/pci0000:00/0000:00:04.0/nvme/nvme0"
SUBSYS = "/devices/virtual/nvme-subsystem/nvme-subsys0"


def ctrl(action: str = "add", name: str = "nvme0", devpath: str = CTRL) -> DeviceRecord:
    attrs = {"serial": "SN1", "model": "QEMU NVMe Ctrl", "subsysnqn": NQN, "cntlid": "0"}
    return DeviceRecord.build(action, devpath, "nvme", {"DEVNAME": f"/dev/{name}"}, attrs)


def disk(
    action: str,
    nsid: int,
    name: str,
    *,
    size: int = 2048,
    uuid: str | None = None,
    fs: str | None = None,
    label: str | None = None,
    diskseq: int = 1,
    multipath: bool = False,
    seq: int = 0,
) -> DeviceRecord:
    base = SUBSYS if multipath else CTRL
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "disk", "ID_NSID": str(nsid)}
    props["DISKSEQ"] = str(diskseq)
    if fs:
        props["ID_FS_TYPE"] = fs
        props["ID_FS_USAGE"] = "filesystem"
    if label:
        props["ID_FS_LABEL"] = label
    attrs: dict[str, str] = {}
    parents: tuple[tuple[str, str, Properties], ...] = ()
    if action != "remove":
        attrs = {"nsid": str(nsid), "size": str(size), "wwid": f"nvme.1b36-aa-bb-{nsid:08x}"}
        if uuid:
            attrs["uuid"] = uuid
        if multipath:
            parents = (("nvme-subsystem", "nvme-subsys0", Properties.of({"subsysnqn": NQN})),)
        else:
            parents = (("nvme", "nvme0", Properties.of({"subsysnqn": NQN})),)
    return DeviceRecord.build(
        action, f"{base}/{name}", "block", props, attrs, parents=parents, seqnum=seq
    )


def part(action: str, disk_name: str, n: int, fs: str | None = "ext4") -> DeviceRecord:
    name = f"{disk_name}p{n}"
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "partition", "PARTN": str(n)}
    if fs:
        props["ID_FS_TYPE"] = fs
    return DeviceRecord.build(action, f"{CTRL}/{disk_name}/{name}", "block", props)


def types(changes: list[Change]) -> list[tuple[str, int | None]]:
    return [(c.type.value, c.nsid) for c in changes]


def test_hot_swap_is_removal_then_addition_never_a_change() -> None:
    topo = Topology()
    topo.apply(ctrl())
    topo.apply(disk("add", 1, "nvme0n1", fs="ext4", label="old"))
    out = topo.apply(disk("remove", 1, "nvme0n1"))
    out += topo.apply(disk("add", 1, "nvme0n1", fs="xfs", label="new", diskseq=2))
    assert types(out) == [("namespace-removed", 1), ("namespace-added", 1)]
    assert out[0].namespace is not None and out[0].namespace.fs is not None
    assert out[0].namespace.fs.label == "old"
    assert out[1].namespace is not None and out[1].namespace.fs is not None
    assert out[1].namespace.fs.label == "new"


def test_swap_without_remove_event_is_detected_by_identity() -> None:
    topo = Topology()
    topo.apply(disk("add", 1, "nvme0n1", uuid="11111111-1111-4111-8111-111111111111"))
    out = topo.apply(disk("change", 1, "nvme0n1", uuid="22222222-2222-4222-8222-222222222222"))
    assert types(out) == [("namespace-removed", 1), ("namespace-added", 1)]
    assert out[1].reason is not None and "identity changed" in out[1].reason


def test_weak_identity_swap_is_detected_by_diskseq() -> None:
    topo = Topology()
    topo.apply(disk("add", 1, "nvme0n1", diskseq=3))
    out = topo.apply(disk("add", 1, "nvme0n1", diskseq=19))
    assert types(out) == [("namespace-removed", 1), ("namespace-added", 1)]


def test_duplicate_add_and_unknown_remove_are_idempotent() -> None:
    topo = Topology()
    assert types(topo.apply(disk("add", 1, "nvme0n1"))) == [("namespace-added", 1)]
    assert topo.apply(disk("add", 1, "nvme0n1")) == []
    assert topo.apply(disk("change", 1, "nvme0n1")) == []
    assert topo.apply(disk("remove", 7, "nvme0n7")) == []
    assert topo.apply(part("remove", "nvme0n9", 1)) == []
    assert types(topo.apply(disk("remove", 1, "nvme0n1"))) == [("namespace-removed", 1)]
    assert topo.apply(disk("remove", 1, "nvme0n1")) == []


def test_partition_before_its_disk_is_held_then_added() -> None:
    topo = Topology()
    assert topo.apply(part("add", "nvme0n1", 1)) == []
    out = topo.apply(disk("add", 1, "nvme0n1"))
    assert [c.type for c in out] == [ChangeType.NAMESPACE_ADDED, ChangeType.PARTITION_ADDED]
    assert out[1].partition is not None and out[1].partition.name == "nvme0n1p1"


def test_disk_removal_removes_remaining_partitions_first() -> None:
    topo = Topology()
    topo.apply(disk("add", 1, "nvme0n1"))
    topo.apply(part("add", "nvme0n1", 1))
    topo.apply(part("add", "nvme0n1", 2))
    out = topo.apply(disk("remove", 1, "nvme0n1"))
    assert [c.type.value for c in out] == [
        "partition-removed",
        "partition-removed",
        "namespace-removed",
    ]


def test_resize_and_filesystem_appearing() -> None:
    topo = Topology()
    topo.apply(disk("add", 1, "nvme0n1", size=2048))
    out = topo.apply(disk("change", 1, "nvme0n1", size=4096))
    assert types(out) == [("namespace-resized", 1)]
    assert out[0].previous is not None and out[0].previous.size_bytes == 2048 * 512
    assert out[0].namespace is not None and out[0].namespace.size_bytes == 4096 * 512
    out = topo.apply(disk("change", 1, "nvme0n1", size=4096, fs="ext4"))
    assert types(out) == [("namespace-changed", 1)]


def test_names_never_key_namespaces() -> None:
    topo = Topology()
    topo.apply(disk("add", 4, "nvme0n1"))
    topo.apply(disk("add", 2, "nvme0n2"))
    snap = topo.snapshot()
    assert [(n.nsid, n.name) for n in snap.namespaces] == [(2, "nvme0n2"), (4, "nvme0n1")]


def test_multipath_head_reaches_controllers_through_paths_or_nqn() -> None:
    topo = Topology()
    topo.apply(ctrl())
    topo.apply(ctrl(name="nvme1", devpath="/devices/pci0000:00/0000:00:05.0/nvme/nvme1"))
    topo.apply(disk("add", 1, "nvme0n1", multipath=True))
    ns = topo.snapshot().namespace(1)
    assert ns is not None and ns.multipath and ns.controllers == ("nvme0", "nvme1")
    assert ns.subsysnqn == NQN
    # A hidden path device narrows it down (coldplug sees these; they send no uevents).
    path = DeviceRecord.build("add", f"{CTRL}/nvme0c0n2", "block", {"DEVTYPE": "disk"})
    assert topo.apply(path) == []
    topo.apply(disk("add", 2, "nvme0n2", multipath=True))
    ns2 = topo.snapshot().namespace(2)
    assert ns2 is not None and ns2.controllers == ("nvme0",)


def test_non_nvme_block_devices_are_never_modelled() -> None:
    topo = Topology()
    rec = DeviceRecord.build("add", "/devices/pci0000:00/0000:00:02.0/virtio1/block/vda", "block")
    assert topo.apply(rec) == []
    loop = DeviceRecord.build("add", "/devices/virtual/block/loop0", "block", {"DEVTYPE": "disk"})
    assert topo.apply(loop) == []
    assert topo.snapshot().namespaces == ()


def test_reconcile_after_overrun_reports_only_the_difference() -> None:
    topo = Topology()
    topo.apply(ctrl())
    topo.apply(disk("add", 1, "nvme0n1"))
    topo.apply(disk("add", 2, "nvme0n2"))
    # Lost events: nsid 2 went away, nsid 3 came, nsid 1 was resized.
    fresh = [ctrl(), disk("add", 1, "nvme0n1", size=8192), disk("add", 3, "nvme0n2", diskseq=5)]
    out = topo.reconcile(fresh)
    assert sorted(types(out)) == [
        ("namespace-added", 3),
        ("namespace-removed", 2),
        ("namespace-resized", 1),
    ]
    assert [n.nsid for n in topo.snapshot().namespaces] == [1, 3]


def test_diff_of_identical_snapshots_is_empty() -> None:
    topo = Topology()
    topo.apply(ctrl())
    topo.apply(disk("add", 1, "nvme0n1"))
    topo.apply(part("add", "nvme0n1", 1))
    snap = topo.snapshot()
    assert diff_snapshots(snap, snap) == []


def test_burst_of_256_adds_is_recorded_in_order() -> None:
    topo = Topology()
    topo.apply(ctrl())
    out = []
    for i in range(1, 257):
        out += topo.apply(disk("add", i, f"nvme0n{i}", seq=1000 + i))
    assert [c.nsid for c in out] == list(range(1, 257))
    assert len(topo.snapshot().namespaces) == 256


def _layout_coldplug(multipath: bool) -> list[DeviceRecord]:
    layout = Layout(multipath=multipath)
    layout.add_controller(ControllerConfig("nvme0", "ORDER0"))
    layout.add_controller(ControllerConfig("nvme1", "ORDER0"))
    parts = (PartitionConfig(1, 64 << 20, fs="ext4", label="p"),)
    for nsid in range(1, 7):
        layout.attach(NamespaceConfig("nvme0", nsid, fs="xfs", partitions=parts[: nsid % 2]))
        if nsid % 3 == 0:
            layout.add_path("nvme1", nsid)
    return [d.record("add", coldplug=True) for d in coldplug_order(layout)]


def _built(records: list[DeviceRecord]) -> tuple[Topology, int]:
    """The topology of ``records`` and how many times it (re)built a namespace."""
    topology, count = Topology(), [0]
    publish = topology._publish

    def counting(key: Any) -> Any:
        count[0] += 1
        return publish(key)

    topology._publish = counting  # type: ignore[method-assign]
    topology.apply_all(records)
    return topology, count[0]


def test_coldplug_builds_each_disk_once_with_its_generic_whatever_the_order() -> None:
    # Generics are enumerated before the disks (records.COLDPLUG_ORDER): each disk is
    # built once with its generic, the same topology as when the generic comes after it.
    for multipath in (True, False):
        records = _layout_coldplug(multipath)
        kinds = [r.subsystem for r in records]
        assert kinds.index("block") > max(i for i, k in enumerate(kinds) if k == "nvme-generic")
        generic_last = [r for r in records if r.subsystem != "nvme-generic"] + [
            r for r in records if r.subsystem == "nvme-generic"
        ]
        (first, builds), (last, builds_after) = _built(records), _built(generic_last)
        snap = first.snapshot()
        assert snap.to_dict() == last.snapshot().to_dict()
        assert len(snap.namespaces) == 6 and all(ns.generic for ns in snap.namespaces)
        assert builds_after - builds >= len(snap.namespaces)  # one rebuild per generic spared
