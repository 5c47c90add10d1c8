"""Intake builds records from real pyudev devices (through the umockdev bed): every property in
one pass over libudev's list, and of a disk's ancestors only what the tracker reads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nvme_agent.harness.agent import environ_without_bed
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig, PartitionConfig
from nvme_agent.topology import intake, records
from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import PARENT_ATTRIBUTES, DeviceRecord

#: Runs inside the bed: each device's properties both ways, and its record's parents.
CHILD = """
import json, pyudev
from nvme_agent.topology import intake
out = []
context = pyudev.Context()
for subsystem in ("nvme", "nvme-subsystem", "block", "nvme-generic"):
    for device in context.list_devices(subsystem=subsystem):
        record = intake.record_from_device(device, "add")
        out.append({
            "devpath": device.device_path,
            "fast": intake._properties(device),
            "public": {str(k): str(v) for k, v in device.properties.items()},
            "parents": [[s, n, dict(a)] for s, n, a in record.parents],
        })
cache = intake.ParentCache()
records = intake.enumerate_records(context, cache)
enumerated = {r.devpath: [[s, n, dict(a)] for s, n, a in r.parents] for r in records}
cached = {}
for subsystem in ("nvme", "nvme-subsystem", "block", "nvme-generic"):
    for device in context.list_devices(subsystem=subsystem):
        record = intake.record_from_device(device, "add", cache=cache)
        cached[record.devpath] = [[s, n, dict(a)] for s, n, a in record.parents]
print(json.dumps({"devices": out, "enumerated": enumerated, "cached": cached}))
"""


@pytest.mark.umockdev
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
@pytest.mark.parametrize("multipath", [True, False])
def test_records_from_real_devices_carry_every_property(multipath: bool) -> None:
    with Bed(multipath=multipath) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SN1"), quiet=True)
        bed.add_controller(ControllerConfig("nvme1", serial="SN1"), quiet=True)
        parts = (PartitionConfig(1, 64 << 20, fs="ext4", label="p1"),)
        bed.add_namespace(NamespaceConfig("nvme0", 1, fs="xfs", label="data"), quiet=True)
        bed.add_namespace(NamespaceConfig("nvme0", 2, partitions=parts), quiet=True)
        done = subprocess.run(
            [sys.executable, "-c", CHILD],
            env=bed.env(environ_without_bed()),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    answer = json.loads(done.stdout)
    devices = answer["devices"]
    # Coldplug takes a disk's parents from the records enumerated before it: the same
    # answer as libudev's walk up sysfs, for every device.
    assert answer["enumerated"] == {d["devpath"]: d["parents"] for d in devices}
    assert any(answer["enumerated"].values())
    # A live event's parents come from the intake's cache of what it has seen: the same.
    assert answer["cached"] == answer["enumerated"]
    assert len(devices) >= 7  # controller, 2 disks, a partition, 2 generics (+ subsystem)
    for device in devices:
        assert device["fast"] == device["public"], device["devpath"]
        assert device["fast"]["DEVPATH"] == device["devpath"]
        for subsystem, _name, attrs in device["parents"]:
            assert set(attrs) <= set(PARENT_ATTRIBUTES[subsystem])
    disks = [d for d in devices if d["fast"].get("DEVTYPE") == "disk" and "c" not in d["devpath"]]
    nqn = "nqn.2019-08.org.qemu:subsys0"
    assert all(d["parents"][0][2] == {"subsysnqn": nqn} for d in disks if d["parents"])


class _FakeLibudev:
    """libudev's property list, as (name, value) byte pairs: the kernel hands udev bytes."""

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.pairs = pairs

    def udev_device_get_properties_list_entry(self, device: object) -> int:
        return 1 if self.pairs else 0

    def udev_list_entry_get_name(self, entry: int) -> bytes:
        return self.pairs[entry - 1][0]

    def udev_list_entry_get_value(self, entry: int) -> bytes:
        return self.pairs[entry - 1][1]

    def udev_list_entry_get_next(self, entry: int) -> int:
        return entry + 1 if entry < len(self.pairs) else 0


class _Device:
    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._libudev = _FakeLibudev(pairs)


def test_property_bytes_that_are_not_utf8_never_stop_intake() -> None:
    pairs = [(b"ID_FS_LABEL", b"caf\xe9\xff"), (b"DEVNAME", b"/dev/nvme0n1")]
    props = intake._properties(_Device(pairs))
    assert props == {"ID_FS_LABEL": "caf\ufffd\ufffd", "DEVNAME": "/dev/nvme0n1"}


class _Unreadable:
    """A live disk whose sysfs ancestry must not be walked: the cache has the answer."""

    device_path = "/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
    action, subsystem, sys_name, device_type, sequence_number = "add", "block", "nvme0n1", "disk", 7

    def __init__(self) -> None:
        self.properties = {"DEVTYPE": "disk"}
        self.attributes = {"nsid": b"1"}

    def find_parent(self, subsystem: str) -> object:
        raise AssertionError("libudev's parent walk was used")


def _ctrl(action: str, subsysnqn: str) -> DeviceRecord:
    devpath = "/devices/pci0000:00/0000:00:04.0/nvme/nvme0"
    return DeviceRecord.build(action, devpath, "nvme", attributes={"subsysnqn": subsysnqn})


def test_the_parent_cache_answers_only_with_known_values_of_present_devices() -> None:
    cache = intake.ParentCache()
    disk = _Unreadable.device_path
    assert cache.parents(disk) is None  # nothing seen: read sysfs
    cache.note(_ctrl("add", "(efault)"))
    assert cache.parents(disk) is None  # still connecting: not an answer
    cache.note(_ctrl("change", "nqn.a"))
    assert cache.parents(disk) == (("nvme", "nvme0", Properties.of({"subsysnqn": "nqn.a"})),)
    assert cache.parents("/devices/pci0000:00/0000:00:05.0/nvme/nvme1/nvme1n1") is None
    cache.note(_ctrl("remove", ""))
    assert cache.parents(disk) is None  # gone with its remove
    cache.note(_ctrl("add", "nqn.b"))
    cache.clear()
    assert cache.parents(disk) is None  # a re-enumeration (which clears it) replaces it


def test_a_live_disk_takes_its_parents_from_the_cache_not_sysfs() -> None:
    cache = intake.ParentCache()
    cache.note(_ctrl("add", "nqn.a"))
    record = intake.record_from_device(_Unreadable(), cache=cache)
    assert record.parent("nvme") == ("nvme0", Properties.of({"subsysnqn": "nqn.a"}))
    assert record.attr("nsid") == "1"
    with pytest.raises(AssertionError, match="walk was used"):  # what the cache spared
        intake.record_from_device(_Unreadable(), cache=intake.ParentCache())


def test_intake_reads_exactly_the_attributes_the_topology_is_built_from() -> None:
    # Each attribute is a sysfs file read per event: none unread by the builders, none
    # they read missing (records.attributes_read is the one list).
    used: set[str] = set()
    for path in Path(records.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "attr"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                used.add(str(node.args[0].value))
    listed = {a for names in records.ATTRIBUTES.values() for a in names}
    assert used == listed | set(records.PARTITION_ATTRIBUTES)
    assert records.attributes_read("block", "partition") == ("size", "partition")
    assert "nsid" in records.attributes_read("block", "disk")
    assert "partition" in records.attributes_read("block", None)  # DEVTYPE unknown: either
    assert records.attributes_read("nvme", None) == records.ATTRIBUTES["nvme"]
