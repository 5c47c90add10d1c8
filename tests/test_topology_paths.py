"""Paths of one namespace across controllers, fabrics controllers, controllers not live yet.

Issue 12, defects 2 and 3: a connecting fabrics controller was announced with ``(efault)``
values and then removed and added again; without native multipath the second controller's
disk for the same namespace replaced the first in the model.
"""

from __future__ import annotations

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.diff import diff_snapshots
from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.snapshot_io import snapshot_from_dict
from nvme_agent.topology.tracker import Topology

NQN = "nqn.2014-08.org.example:target1"
PCI = "/devices/pci0000:00/0000:00:04.0/nvme"
FABRICS = "/devices/virtual/nvme-fabrics/ctl"
SUBSYS = "/devices/virtual/nvme-subsystem/nvme-subsys0"
UUID1 = "6a1b1f4e-0000-4000-8000-000000000001"
UUID2 = "6a1b1f4e-0000-4000-8000-000000000002"


def ctrl_path(name: str, fabrics: bool = False) -> str:
    return f"{FABRICS}/{name}" if fabrics else f"{PCI}/{name}"


def controller(
    name: str,
    action: str = "add",
    *,
    fabrics: bool = False,
    state: str = "live",
    **attrs: str,
) -> DeviceRecord:
    values = {
        "serial": "SN1",
        "model": "Linux",
        "firmware_rev": "6.1.0",
        "subsysnqn": NQN,
        "cntlid": name[len("nvme") :],
        "transport": "tcp" if fabrics else "pcie",
        "address": "traddr=127.0.0.1,trsvcid=4420" if fabrics else "0000:00:04.0",
        "state": state,
    }
    values.update(attrs)
    if action == "remove":
        values = {}
    return DeviceRecord.build(
        action, ctrl_path(name, fabrics), "nvme", {"DEVNAME": f"/dev/{name}"}, values
    )


def connecting(name: str, **attrs: str) -> DeviceRecord:
    """What sysfs answers while ``nvme connect`` is still bringing the controller up."""
    values = {k: "(efault)" for k in ("serial", "model", "firmware_rev", "subsysnqn")}
    values["state"] = "connecting"
    values.update(attrs)
    return controller(name, fabrics=True, **values)


def disk(
    action: str,
    ctrl: str,
    name: str,
    nsid: int = 1,
    *,
    fabrics: bool = False,
    uuid: str = UUID1,
    diskseq: int = 1,
    fs: str | None = "ext4",
    fs_uuid: str = "f5e1d0c0-0000-4000-8000-00000000aaaa",
) -> DeviceRecord:
    """A per-controller disk (no native multipath)."""
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "disk", "ID_NSID": str(nsid)}
    props["DISKSEQ"] = str(diskseq)
    if fs:
        props.update(ID_FS_TYPE=fs, ID_FS_USAGE="filesystem", ID_FS_UUID=fs_uuid)
    attrs: dict[str, str] = {}
    parents: tuple[tuple[str, str, Properties], ...] = ()
    if action != "remove":
        attrs = {"nsid": str(nsid), "size": "2048", "uuid": uuid, "wwid": f"uuid.{uuid}"}
        parents = (("nvme", ctrl, Properties.of({"subsysnqn": NQN})),)
    return DeviceRecord.build(
        action,
        f"{ctrl_path(ctrl, fabrics)}/{name}",
        "block",
        props,
        attrs,
        parents=parents,
    )


def part(action: str, ctrl: str, disk_name: str, n: int = 1) -> DeviceRecord:
    name = f"{disk_name}p{n}"
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "partition", "PARTN": str(n)}
    props["ID_FS_TYPE"] = "ext4"
    return DeviceRecord.build(action, f"{PCI}/{ctrl}/{disk_name}/{name}", "block", props)


def head(action: str, name: str, nsid: int) -> DeviceRecord:
    """A native multipath head."""
    props = {"DEVNAME": f"/dev/{name}", "DEVTYPE": "disk", "ID_NSID": str(nsid)}
    attrs = {} if action == "remove" else {"nsid": str(nsid), "size": "2048", "uuid": UUID1}
    parents = (("nvme-subsystem", "nvme-subsys0", Properties.of({"subsysnqn": NQN})),)
    return DeviceRecord.build(
        action, f"{SUBSYS}/{name}", "block", props, attrs, parents=parents if attrs else ()
    )


def hidden(action: str, name: str) -> DeviceRecord:
    """A hidden multipath path disk ``nvme<S>c<C>n<N>`` under its controller."""
    ctrl = "nvme" + name.split("c", 1)[1].split("n", 1)[0]
    return DeviceRecord.build(action, f"{PCI}/{ctrl}/{name}", "block", {"DEVTYPE": "disk"})


def kinds(changes: list[Change]) -> list[str]:
    return [c.type.value for c in changes]


# ----------------------------------------------------------------- controllers not live yet


def test_a_connecting_fabrics_controller_is_announced_once_with_real_values() -> None:
    topo = Topology()
    assert topo.apply(connecting("nvme1")) == []
    assert topo.snapshot().controllers == ()
    out = topo.apply(controller("nvme1", "change", fabrics=True))
    assert kinds(out) == ["controller-added"]
    ctrl = out[0].controller
    assert ctrl is not None
    assert (ctrl.serial, ctrl.subsysnqn, ctrl.state) == ("SN1", NQN, "live")
    assert (ctrl.transport, ctrl.address) == ("tcp", "traddr=127.0.0.1,trsvcid=4420")
    assert "(efault)" not in out[0].summary()
    # More change events of a live controller announce nothing.
    assert topo.apply(controller("nvme1", "change", fabrics=True)) == []


def test_placeholders_alone_hold_a_controller_back_whatever_its_state() -> None:
    topo = Topology()
    assert topo.apply(connecting("nvme1", state="live")) == []
    assert topo.apply(connecting("nvme1", state="(efault)")) == []
    assert kinds(topo.apply(controller("nvme1", "change", fabrics=True))) == ["controller-added"]


def test_a_controller_that_never_came_up_is_never_reported() -> None:
    topo = Topology()
    topo.apply(connecting("nvme1"))
    assert topo.apply(controller("nvme1", "remove", fabrics=True)) == []
    assert topo.snapshot().controllers == ()


def test_unreadable_attributes_of_a_live_controller_keep_what_was_known() -> None:
    topo = Topology()
    topo.apply(controller("nvme1", fabrics=True))
    resetting = connecting("nvme1", state="resetting")
    assert topo.apply(resetting) == []  # not a removal plus an addition
    ctrl = topo.snapshot().controller("nvme1")
    assert ctrl is not None
    assert (ctrl.serial, ctrl.subsysnqn, ctrl.state) == ("SN1", NQN, "resetting")


def test_a_different_subsystem_under_the_same_name_is_a_new_controller() -> None:
    topo = Topology()
    topo.apply(controller("nvme1", fabrics=True))
    out = topo.apply(controller("nvme1", "change", fabrics=True, subsysnqn="nqn.other"))
    assert kinds(out) == ["controller-removed", "controller-added"]


# ----------------------------------------------------------------- fabrics paths


def test_a_fabrics_namespace_has_a_path_with_transport_address_and_state() -> None:
    topo = Topology()
    topo.apply(controller("nvme1", fabrics=True))
    out = topo.apply(disk("add", "nvme1", "nvme1n1", fabrics=True))
    assert kinds(out) == ["namespace-added"]
    ns = topo.snapshot().namespace(1, NQN)
    assert ns is not None and ns.controllers == ("nvme1",) and ns.transport == "tcp"
    (path,) = ns.paths
    assert (path.controller, path.device, path.devnode) == ("nvme1", "nvme1n1", "/dev/nvme1n1")
    assert (path.transport, path.address, path.state) == (
        "tcp",
        "traddr=127.0.0.1,trsvcid=4420",
        "live",
    )
    # A state change of the controller shows on the path, and is no topology change.
    assert topo.apply(controller("nvme1", "change", fabrics=True, state="resetting")) == []
    ns = topo.snapshot().namespace(1, NQN)
    assert ns is not None and ns.paths[0].state == "resetting"


# ----------------------------------------------------------------- two controllers, no multipath


def two_paths() -> tuple[Topology, list[Change]]:
    topo = Topology()
    topo.apply(controller("nvme0"))
    topo.apply(controller("nvme1"))
    out = topo.apply(disk("add", "nvme0", "nvme0n1"))
    out += topo.apply(disk("add", "nvme1", "nvme1n1"))
    return topo, out


def test_one_namespace_behind_two_controllers_is_one_namespace_with_two_paths() -> None:
    topo, out = two_paths()
    assert kinds(out) == ["namespace-added", "path-added"]
    assert out[1].path is not None and out[1].path.device == "nvme1n1"
    assert out[1].ctrl == "nvme1"
    (ns,) = topo.snapshot().namespaces
    assert ns.devnode == "/dev/nvme0n1"  # the first disk is the namespace's device
    assert ns.controllers == ("nvme0", "nvme1")
    assert [(p.controller, p.devnode) for p in ns.paths] == [
        ("nvme0", "/dev/nvme0n1"),
        ("nvme1", "/dev/nvme1n1"),
    ]
    assert topo.find_device("/dev/nvme0n1") == (ns, None)


def test_the_namespace_goes_only_with_its_last_disk() -> None:
    topo, _ = two_paths()
    out = topo.apply(disk("remove", "nvme0", "nvme0n1"))
    assert kinds(out) == ["path-lost"]
    lost = out[0]
    assert lost.path is not None and lost.path.devnode == "/dev/nvme0n1"
    assert lost.previous is not None and lost.previous.devnode == "/dev/nvme0n1"
    assert lost.namespace is not None and lost.namespace.devnode == "/dev/nvme1n1"
    (ns,) = topo.snapshot().namespaces
    assert ns.controllers == ("nvme1",)
    out = topo.apply(disk("remove", "nvme1", "nvme1n1"))
    assert kinds(out) == ["namespace-removed"]
    assert topo.snapshot().namespaces == ()


def test_another_paths_disk_and_partitions_change_nothing_the_policy_sees() -> None:
    topo, _ = two_paths()
    topo.apply(part("add", "nvme0", "nvme0n1"))
    assert topo.apply(part("add", "nvme1", "nvme1n1")) == []
    assert topo.apply(disk("change", "nvme1", "nvme1n1", fs=None)) == []
    (ns,) = topo.snapshot().namespaces
    assert [p.devnode for p in ns.partitions] == ["/dev/nvme0n1p1"]
    # When the device's disk goes, the namespace is what the other disk shows.
    topo.apply(disk("remove", "nvme0", "nvme0n1"))
    (ns,) = topo.snapshot().namespaces
    assert [p.devnode for p in ns.partitions] == ["/dev/nvme1n1p1"]
    assert topo.apply(part("remove", "nvme1", "nvme1n1")) != []


def test_a_disk_of_the_same_controller_at_a_new_place_supersedes_the_old_one() -> None:
    topo, _ = two_paths()
    out = topo.apply(disk("add", "nvme0", "nvme0n2"))  # nvme0n1's remove was lost
    assert kinds(out) == ["path-lost", "path-added"]
    assert out[0].reason is not None and "superseded" in out[0].reason
    (ns,) = topo.snapshot().namespaces
    assert sorted(p.device or "" for p in ns.paths) == ["nvme0n2", "nvme1n1"]


def test_a_different_namespace_at_the_same_nsid_replaces_all_its_paths() -> None:
    topo, _ = two_paths()
    out = topo.apply(disk("add", "nvme0", "nvme0n2", uuid=UUID2))
    assert kinds(out)[-2:] == ["namespace-removed", "namespace-added"]
    (ns,) = topo.snapshot().namespaces
    assert ns.uuid == UUID2 and [p.device for p in ns.paths] == ["nvme0n2"]


def test_a_new_disk_instance_on_another_path_is_that_path_again() -> None:
    topo, _ = two_paths()
    out = topo.apply(disk("add", "nvme1", "nvme1n1", diskseq=7))
    assert kinds(out) == ["path-lost", "path-added"]
    (ns,) = topo.snapshot().namespaces
    assert ns.devnode == "/dev/nvme0n1"


def test_a_controller_removed_before_its_disks_takes_its_paths() -> None:
    topo, _ = two_paths()
    out = topo.apply(controller("nvme1", "remove"))
    assert kinds(out) == ["path-lost", "controller-removed"]
    (ns,) = topo.snapshot().namespaces
    assert ns.controllers == ("nvme0",)


# ----------------------------------------------------------------- native multipath


def test_hidden_paths_coming_and_going_are_path_changes_of_the_head() -> None:
    topo = Topology()
    topo.apply(controller("nvme0"))
    topo.apply(controller("nvme1"))
    topo.apply(hidden("add", "nvme0c0n1"))
    assert kinds(topo.apply(head("add", "nvme0n1", 1))) == ["namespace-added"]
    ns = topo.snapshot().namespace(1)
    assert ns is not None and ns.multipath and ns.controllers == ("nvme0",)
    assert ns.paths[0].device == "nvme0c0n1"
    out = topo.apply(hidden("add", "nvme0c1n1"))
    assert kinds(out) == ["path-added"] and out[0].ctrl == "nvme1"
    out = topo.apply(hidden("remove", "nvme0c0n1"))
    assert kinds(out) == ["path-lost"] and out[0].ctrl == "nvme0"
    ns = topo.snapshot().namespace(1)
    assert ns is not None and ns.devnode == "/dev/nvme0n1" and ns.controllers == ("nvme1",)


def test_multipath_paths_follow_the_subsystems_controllers() -> None:
    topo = Topology()
    topo.apply(controller("nvme0"))
    topo.apply(head("add", "nvme0n1", 1))
    out = topo.apply(controller("nvme1"))
    assert kinds(out) == ["controller-added", "path-added"]
    out = topo.apply(controller("nvme0", "remove"))
    assert kinds(out) == ["path-lost", "controller-removed"]
    ns = topo.snapshot().namespace(1)
    assert ns is not None and ns.controllers == ("nvme1",)
    assert kinds(topo.apply(head("remove", "nvme0n1", 1))) == ["namespace-removed"]


# ----------------------------------------------------------------- diff and state file


def test_a_path_lost_while_the_agent_was_down_is_a_path_change() -> None:
    topo, _ = two_paths()
    before = snapshot_from_dict(topo.snapshot().to_dict())
    fresh = Topology()
    fresh.apply_all([controller("nvme0"), controller("nvme1"), disk("add", "nvme1", "nvme1n1")])
    out = diff_snapshots(before, fresh.snapshot())
    assert kinds(out) == ["path-lost"]
    assert out[0].path is not None and out[0].path.controller == "nvme0"


def test_a_state_file_without_paths_compares_no_paths() -> None:
    topo, _ = two_paths()
    data = topo.snapshot().to_dict()
    for ns in data["namespaces"]:
        del ns["paths"]
    assert diff_snapshots(snapshot_from_dict(data), topo.snapshot()) == []


def test_json_shapes_only_grow() -> None:
    topo, out = two_paths()
    ns = topo.snapshot().namespaces[0].to_dict()
    old_keys = {"nsid", "name", "devpath", "devnode", "identity", "controllers", "partitions"}
    assert old_keys <= set(ns) and "paths" in ns
    change = out[1].to_dict()
    assert {"type", "nsid", "ctrl", "namespace", "previous", "controller"} <= set(change)
    assert change["path"]["device"] == "nvme1n1"
    assert change["type"] == ChangeType.PATH_ADDED.value


def test_a_controller_replaced_under_its_name_takes_its_old_disks_along() -> None:
    topo = Topology()
    topo.apply(controller("nvme1", fabrics=True))
    topo.apply(disk("add", "nvme1", "nvme1n1", fabrics=True))
    # The fabrics controller went away unseen; a PCIe controller now has the name nvme1.
    out = topo.apply(controller("nvme1", "add"))
    assert kinds(out) == ["namespace-removed", "controller-removed", "controller-added"]
    assert out[0].reason == "controller nvme1 removed"
    ctrl = topo.snapshot().controller("nvme1")
    assert ctrl is not None and ctrl.transport == "pcie"  # nothing of the old one carried over


def test_removes_of_unknown_paths_and_controllers_change_nothing() -> None:
    topo = Topology()
    topo.apply(controller("nvme0"))
    topo.apply(head("add", "nvme0n1", 1))
    assert topo.apply(hidden("remove", "nvme0c3n1")) == []
    assert topo.apply(controller("nvme7", "remove")) == []
    ns = topo.snapshot().namespace(1)
    assert ns is not None and ns.controllers == ("nvme0",)
