"""Beyond one PCIe controller, through the real pyudev path: a fabrics controller that
connects, two controllers on one subsystem in both multipath modes, a controller hot-added
and hot-removed as a whole."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.bedlisten import Listener, reaches_agent

from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import (
    EFAULT,
    ControllerConfig,
    Event,
    Layout,
    LayoutError,
    NamespaceConfig,
)
from nvme_agent.topology.names import hidden_path

pytestmark = pytest.mark.umockdev

NQN = "nqn.2024-01.io.example:vol1"
TCP0 = ControllerConfig("nvme0", serial="3f9a1c07", subsysnqn=NQN, transport="tcp", cntlid=1)
TCP1 = ControllerConfig(
    "nvme1", serial="3f9a1c07", subsysnqn=NQN, transport="tcp", trsvcid="4421", cntlid=2
)
SHARED = "nqn.2019-08.org.qemu:shared"
PCI0 = ControllerConfig("nvme0", serial="SHARED01", subsysnqn=SHARED)
PCI1 = ControllerConfig("nvme1", serial="SHARED01", subsysnqn=SHARED, cntlid=1)
HOT = ControllerConfig(
    "nvme0",
    serial="SNHOT",
    subsysnqn="nqn.2019-08.org.qemu:SNHOT",
    root_port="0000:00:1c.0",
    pci_address="0000:01:00.0",
)


def visible(events: list[Event]) -> list[Event]:
    return [e for e in events if reaches_agent(e)]


@pytest.fixture
def nomp_bed(bed_support: None) -> Iterator[Bed]:
    with Bed(multipath=False) as b:
        yield b


# --------------------------------------------------------------------------- fabrics
def test_fabrics_controller_connects_through_efault(mp_bed: Bed) -> None:
    added = mp_bed.layout.add_controller(TCP0)
    scratch = Layout()
    count = len(visible(scratch.add_controller(TCP0) + scratch.connect("nvme0")))
    listener = Listener(mp_bed, count=count)
    mp_bed.apply(added)
    listener.wait_for(len(visible(added)))  # the agent reads the (efault) attributes first
    mp_bed.connect("nvme0")
    events = listener.finish()

    ctrl_add, subsys_add, ctrl_change = events
    assert (ctrl_add["action"], ctrl_add["subsystem"]) == ("add", "nvme")
    assert ctrl_add["devpath"] == "/devices/virtual/nvme-fabrics/ctl/nvme0"
    assert ctrl_add["parents"] == []  # no PCI function, no nvme parent
    attrs = ctrl_add["attributes"]
    assert attrs["serial"] == attrs["model"] == attrs["subsysnqn"] == EFAULT
    assert attrs["state"] == "connecting"
    assert attrs["transport"] == "tcp"
    assert attrs["address"] == "traddr=127.0.0.1,trsvcid=4420"
    props = ctrl_add["properties"]
    assert props["NVME_TRTYPE"] == "tcp" and props["NVME_TRSVCID"] == "4420"
    assert "NVME_EVENT" not in props
    assert (subsys_add["subsystem"], subsys_add["attributes"]["subsysnqn"]) == (
        "nvme-subsystem",
        NQN,
    )
    assert subsys_add["devpath"] == "/devices/virtual/nvme-subsystem/nvme-subsys0"
    assert ctrl_change["action"] == "change"
    assert ctrl_change["properties"]["NVME_EVENT"] == "connected"
    live = ctrl_change["attributes"]
    assert (live["serial"], live["subsysnqn"], live["state"]) == ("3f9a1c07", NQN, "live")
    # NVME_EVENT belongs to the one uevent: enumeration afterwards does not show it
    later = Listener(mp_bed, count=0)
    later.finish()
    (ctrl,) = [r for r in later.coldplug if r["subsystem"] == "nvme"]
    assert "NVME_EVENT" not in ctrl["properties"] and ctrl["attributes"]["state"] == "live"


def test_fabrics_namespace_has_uuid_identity_and_no_pci_path(mp_bed: Bed) -> None:
    mp_bed.add_controller(TCP0, quiet=True)
    events = mp_bed.layout.attach(NamespaceConfig("nvme0", 1, fs="ext4", label="tcpdata"))
    listener = Listener(mp_bed, count=len(visible(events)))
    mp_bed.apply(events)
    disk = next(e for e in listener.finish() if e["subsystem"] == "block")
    assert disk["devpath"] == "/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    assert disk["attributes"]["wwid"].startswith("uuid.")  # no QEMU quirk on fabrics
    assert disk["attributes"]["uuid"]
    assert "ID_PATH" not in disk["properties"]  # path_id stops at /devices/virtual
    assert not any("/by-path/" in link for link in disk["properties"]["DEVLINKS"].split())
    coldplug = Listener(mp_bed, count=0).coldplug
    hidden = [r for r in coldplug if hidden_path(r["devpath"].rsplit("/", 1)[-1])]
    assert [h["devpath"] for h in hidden] == ["/devices/virtual/nvme-fabrics/ctl/nvme0/nvme0c0n1"]


# --------------------------------------------------------------------------- two controllers
def _two_controllers(bed: Bed, a: ControllerConfig, b: ControllerConfig) -> None:
    bed.add_controller(a, quiet=True)
    bed.add_controller(b, quiet=True)
    bed.add_namespace(NamespaceConfig(a.name, 1, fs="ext4", label="shared"), quiet=True)
    bed.add_path(b.name, 1, quiet=True)


def _disks(records: list[dict[str, object]]) -> list[tuple[str, str]]:
    out = []
    for r in records:
        attrs = r["attributes"]
        assert isinstance(attrs, dict)
        if r["devtype"] == "disk":
            # intake reads nothing of a hidden path but its devpath (records.reads_sysfs),
            # and a visible disk's identifiers
            hidden = hidden_path(str(r["devpath"]).rsplit("/", 1)[-1]) is not None
            assert (attrs == {}) if hidden else ("nsid" in attrs), r
            out.append((str(r["devpath"]), "1" if hidden else "0"))
    return sorted(out)


def test_two_controllers_native_multipath_one_head_two_hidden_paths(mp_bed: Bed) -> None:
    _two_controllers(mp_bed, PCI0, PCI1)
    listener = Listener(mp_bed, count=0)
    listener.finish()
    assert _disks(listener.coldplug) == [
        ("/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0c0n1", "1"),
        ("/devices/pci0000:00/0000:00:05.0/nvme/nvme1/nvme0c1n1", "1"),
        ("/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1", "0"),
    ]
    subsystems = [r for r in listener.coldplug if r["subsystem"] == "nvme-subsystem"]
    assert len(subsystems) == 1  # one subsystem, its instance from the first controller

    # A path goes: only a hidden disk, which sends no uevent; the head stays.
    events = mp_bed.layout.remove_path("nvme1", 1)
    assert events and not visible(events)
    mp_bed.apply(events)
    after = Listener(mp_bed, count=0)
    after.finish()
    assert _disks(after.coldplug) == [
        ("/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0c0n1", "1"),
        ("/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1", "0"),
    ]


def test_two_controllers_without_multipath_two_disks_for_one_namespace(nomp_bed: Bed) -> None:
    _two_controllers(nomp_bed, PCI0, PCI1)
    listener = Listener(nomp_bed, count=0)
    listener.finish()
    disks = [r for r in listener.coldplug if r["devtype"] == "disk"]
    assert [(d["devpath"], d["attributes"]["nsid"]) for d in disks] == [
        ("/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1", "1"),
        ("/devices/pci0000:00/0000:00:05.0/nvme/nvme1/nvme1n1", "1"),
    ]
    assert disks[0]["attributes"]["wwid"] == disks[1]["attributes"]["wwid"]
    assert [p[0] for p in disks[1]["parents"]] == ["nvme"]

    # The path through nvme1 goes: its own ng1n1 and nvme1n1 leave, nvme0n1 stays.
    events = nomp_bed.layout.remove_path("nvme1", 1)
    watcher = Listener(nomp_bed, count=len(visible(events)))
    nomp_bed.apply(events)
    gone = watcher.finish()
    assert [(e["action"], e["devpath"].rsplit("/", 1)[-1]) for e in gone] == [
        ("remove", "ng1n1"),
        ("remove", "nvme1n1"),
    ]
    assert nomp_bed.layout.disk("nvme0", 1).sysname == "nvme0n1"


def test_a_subsystem_instance_is_not_reused_while_the_subsystem_lives() -> None:
    layout = Layout()
    layout.add_controller(PCI0)
    layout.add_controller(PCI1)
    layout.remove_controller("nvme0")  # nvme-subsys0 lives on through nvme1
    with pytest.raises(LayoutError, match="still held by nvme-subsys0"):
        layout.add_controller(ControllerConfig("nvme0", serial="OTHER", subsysnqn="nqn.other"))


# --------------------------------------------------------------------------- PCIe hotplug
def test_pcie_hotplug_adds_and_removes_a_whole_controller(mp_bed: Bed) -> None:
    ns = NamespaceConfig("nvme0", 1, size_bytes=2 << 30, fs="ext4", label="volume")
    scratch = Layout()
    plugged = scratch.add_controller(HOT) + scratch.connect("nvme0") + scratch.attach(ns)
    unplugged = scratch.remove_controller("nvme0")
    listener = Listener(mp_bed, count=len(visible(plugged + unplugged)))
    added = mp_bed.add_controller(HOT) + mp_bed.add_namespace(ns)
    listener.wait_for(len(visible(added)))
    mp_bed.remove_controller("nvme0")
    events = listener.finish()

    got = [(e["action"], e["subsystem"], e["devpath"]) for e in events]
    port = "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0"
    assert got[0] == ("add", "nvme", f"{port}/nvme/nvme0")
    assert got[1] == ("add", "nvme-subsystem", "/devices/virtual/nvme-subsystem/nvme-subsys0")
    disk = next(e for e in events if e["devtype"] == "disk" and e["action"] == "add")
    assert disk["properties"]["ID_PATH"] == "pci-0000:01:00.0-nvme-1"
    # removal: the namespace's devices, then the controller, then its subsystem
    assert [g[1] for g in got if g[0] == "remove"] == [
        "nvme-generic",
        "block",
        "nvme",
        "nvme-subsystem",
    ]
    assert not mp_bed.layout.controllers and not mp_bed.layout.subsystems
    # the PCI function went too; the root port (present from boot) stays
    root = Listener(mp_bed, count=0)
    root.finish()
    assert root.coldplug == []
    assert (mp_bed.root is not None) and (
        __import__("os").path.isdir(f"{mp_bed.root}/sys/devices/pci0000:00/0000:00:1c.0")
    )
    assert not __import__("os").path.exists(f"{mp_bed.root}/sys{port}")
