"""The bed delivers realistic NVMe devices through the real pyudev path, in both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.bedlisten import Listener, reaches_agent

from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import (
    MINOR_BASE,
    ControllerConfig,
    Layout,
    NamespaceConfig,
    PartitionConfig,
)
from nvme_agent.topology.names import hidden_path

pytestmark = pytest.mark.umockdev

QEMU = ControllerConfig("nvme0", serial="RIGCTRL0", subsysnqn="nqn.2019-08.org.qemu:rig")


def test_add_and_remove_reach_a_pyudev_monitor(bed: Bed) -> None:
    bed.add_controller(QEMU, quiet=True)
    ns = NamespaceConfig(
        "nvme0",
        nsid=4,
        size_bytes=256 << 20,
        partitions=(
            PartitionConfig(1, 100 << 20, fs="ext4", label="nspart1", partlabel="rig-data"),
            PartitionConfig(2, 150 << 20, partlabel="rig-blank"),
        ),
    )
    scratch = Layout(multipath=bed.layout.multipath)
    scratch.add_controller(QEMU)
    visible = [e for e in scratch.attach(ns) + scratch.detach("nvme0", 4) if reaches_agent(e)]
    listener = Listener(bed, count=len(visible))
    added = bed.add_namespace(ns)
    # The listener looks each added block device up by number in sysfs: let it handle the adds
    # before the devices go away, or that lookup races the removal.
    listener.wait_for(sum(1 for e in added if reaches_agent(e)))
    removed = bed.remove_namespace("nvme0", 4)
    events = listener.finish()

    # bdi and hidden path devices never reach the agent's filtered monitor
    sent = [e for e in added + removed if reaches_agent(e)]
    assert [(e["action"], e["devpath"]) for e in events] == [
        (e.action, e.device.devpath) for e in sent
    ]
    disk = next(e for e in events if e["devtype"] == "disk" and e["action"] == "add")
    assert disk["attributes"]["nsid"] == "4"
    assert disk["attributes"]["size"] == str((256 << 20) // 512)
    assert disk["attributes"]["wwid"] == (
        "nvme.1b36-5249474354524c30-51454d55204e564d65204374726c-00000004"
    )
    assert "uuid" not in disk["attributes"]  # QEMU's bogus-identifier quirk
    assert disk["properties"]["ID_NSID"] == "4"
    assert disk["properties"]["DEVNAME"] == "/dev/nvme0n1"  # first attached: n1, not n4
    assert disk["by_number"] == disk["devpath"]  # /sys/dev/block link mended
    expected_parent = "nvme-subsystem" if bed.layout.multipath else "nvme"
    assert [p[0] for p in disk["parents"]] == [expected_parent]
    if bed.layout.multipath:
        assert disk["devpath"].startswith("/devices/virtual/nvme-subsystem/nvme-subsys0/")
    else:
        assert disk["devpath"].startswith("/devices/pci0000:00/0000:00:04.0/nvme/nvme0/")
    part = next(e for e in events if e["devtype"] == "partition" and e["action"] == "add")
    assert part["properties"]["ID_FS_TYPE"] == "ext4"
    assert part["properties"]["ID_FS_LABEL"] == "nspart1"
    for event in events:
        if event["action"] == "remove":
            assert event["attributes"] == {}  # sysfs is gone, like the kernel's
            assert event["properties"]["DEVNAME"]
    # the records built by the layout match what intake really built, field by field
    by_path = {(e.action, e.device.devpath): e.device for e in sent}
    for event in events:
        record = by_path[(event["action"], event["devpath"])].record(event["action"])
        assert dict(record.attributes) == event["attributes"]
        assert [list(p[:2]) for p in record.parents] == event["parents"]


def test_coldplug_enumeration_sees_the_layout(bed: Bed) -> None:
    bed.add_controller(QEMU, quiet=True)
    bed.add_namespace(NamespaceConfig("nvme0", 1, fs="ext4", label="data"), quiet=True)
    listener = Listener(bed, count=0)
    listener.finish()
    subsystems = [r["subsystem"] for r in listener.coldplug]
    assert subsystems.count("nvme") == 1 and subsystems.count("nvme-subsystem") == 1
    disks = [r for r in listener.coldplug if r["devtype"] == "disk"]
    hidden = [d for d in disks if hidden_path(d["devpath"].rsplit("/", 1)[-1])]
    assert len(hidden) == (1 if bed.layout.multipath else 0)
    assert all(d["attributes"] == {} for d in hidden)  # intake reads only their devpath
    visible = [d for d in disks if d not in hidden]
    assert all(d["attributes"]["nsid"] == "1" for d in visible)
    assert [d["properties"]["ID_FS_LABEL"] for d in visible] == ["data"]


def test_real_hardware_identifiers(mp_bed: Bed) -> None:
    ctrl = ControllerConfig(
        "nvme0",
        serial="S4EWNX0R",
        model="Samsung SSD 980",
        vendor_id=0x144D,
        subsysnqn="nqn.1994-11.com.samsung:nvme:980M.2:S4EWNX0R",
    )
    mp_bed.add_controller(ctrl, quiet=True)
    mp_bed.add_namespace(
        NamespaceConfig("nvme0", 1, uuid="6a2b0f4e-1f5c-4a5e-9c1e-1234567890ab"), quiet=True
    )
    listener = Listener(mp_bed, count=0)
    listener.finish()
    disks = [r for r in listener.coldplug if r["devtype"] == "disk"]
    (disk,) = [d for d in disks if not hidden_path(d["devpath"].rsplit("/", 1)[-1])]
    assert disk["attributes"]["uuid"] == "6a2b0f4e-1f5c-4a5e-9c1e-1234567890ab"
    assert disk["attributes"]["wwid"] == "uuid.6a2b0f4e-1f5c-4a5e-9c1e-1234567890ab"
    assert len(disk["attributes"]["nguid"]) == 32


def test_burst_of_256_namespaces_arrives_complete_and_in_order(mp_bed: Bed) -> None:
    mp_bed.add_controller(QEMU, quiet=True)
    listener = Listener(mp_bed, count=2 * 256)  # ng + disk per namespace (bdi filtered)
    mp_bed.burst(NamespaceConfig("nvme0", nsid) for nsid in range(1, 257))
    events = listener.finish()
    disks = [e for e in events if e["devtype"] == "disk"]
    assert [int(d["attributes"]["nsid"]) for d in disks] == list(range(1, 257))
    seqnums = [e["seqnum"] for e in events]
    assert seqnums == sorted(seqnums) and len(set(seqnums)) == len(seqnums)


def test_remove_probe_reports_umockdev_behaviour(mp_bed: Bed) -> None:
    # 0.17.x: remove_device() emits nothing; 0.18.4+ emits remove.  Either is fine; the bed
    # sends its own events and only needs to know.
    assert isinstance(mp_bed.remove_emits, bool)


def test_fake_minors_cannot_collide_with_real_devices(bed: Bed) -> None:
    bed.add_controller(QEMU, quiet=True)
    events = bed.add_namespace(NamespaceConfig("nvme0", 1, fs="ext4"), quiet=True)
    minors = [int(e.device.dev.split(":")[1]) for e in events if e.device.dev]
    assert minors and min(minors) >= MINOR_BASE
    root = Path(bed.root or "")
    for e in events:
        if e.device.dev and e.device.subsystem == "block":
            assert (root / "sys/dev/block" / e.device.dev).is_symlink()
            assert (root / "dev/.node" / Path(e.device.devnode or "x").name).is_symlink()
