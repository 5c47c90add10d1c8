"""The layout's events against real-guest facts: snapshots, DEVLINKS, stored captures."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e import compare
from e2e.monitor import parse_monitor

from nvme_agent.harness.layout import (
    ControllerConfig,
    Event,
    Layout,
    NamespaceConfig,
    PartitionConfig,
)

CAPTURES = Path(__file__).parent / "fixtures" / "captures"
#: The stored capture of each operation of compare.OPERATIONS (ns3 comes and goes in between
#: in the captures; the comparison is by devpath shape, so that does not matter).
CAPTURE_FILES = (
    "01-attach-ns2-xfs",
    "02-attach-ns4-gpt-2-partitions",
    "06-detach-ns4-gpt-2-partitions",
    "09-detach-ns2-xfs",
)
QEMU = ControllerConfig("nvme0", serial="RIGCTRL0", subsysnqn="nqn.2019-08.org.qemu:rig")
GPT = NamespaceConfig(
    "nvme0",
    nsid=4,
    size_bytes=256 << 20,
    partitions=(
        PartitionConfig(1, 100 << 20, fs="ext4", label="nspart1", partlabel="rig-data"),
        PartitionConfig(2, 150 << 20, partlabel="rig-blank"),
    ),
)


@pytest.mark.parametrize("mode", ["multipath", "no-multipath"])
def test_harness_matches_the_stored_captures(mode: str) -> None:
    recorded = [
        parse_monitor((CAPTURES / mode / f"{name}.udev-monitor.txt").read_text())
        for name in CAPTURE_FILES
    ]
    problems = compare.differences(recorded, mode == "multipath", mode)
    assert not problems, "\n".join(problems)


def _disk_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.device.devtype == "disk" and not e.device.silent]


def test_events_are_snapshots_of_their_time() -> None:
    # Real multipath guest: udev adds NVME_HOST_IFACE on the disk's `change` (partition
    # scan), so the `add` before it has none, and the later `remove` (from udev's
    # database) has it.
    layout = Layout(multipath=True)
    layout.add_controller(QEMU)
    added = _disk_events(layout.attach(GPT))
    assert [e.action for e in added] == ["add", "change"]
    assert "NVME_HOST_IFACE" not in added[0].device.properties
    assert added[1].device.properties["NVME_HOST_IFACE"] == "none"
    removed = _disk_events(layout.detach("nvme0", 4))
    assert removed[0].device.properties["NVME_HOST_IFACE"] == "none"
    # A later change of the layout's device does not reach an event already built.
    layout.attach(NamespaceConfig("nvme0", 2, fs="xfs", label="nsxfs"))
    event = _disk_events(layout.resize("nvme0", 2, 1 << 30))[0]
    assert event.device.properties["RESIZE"] == "1"
    assert "RESIZE" not in layout.disk("nvme0", 2).properties
    before = dict(event.device.properties)
    layout.change("nvme0", 2, fs="ext4", label="other")
    assert event.device.properties == before


def test_partition_and_disk_devlinks() -> None:
    layout = Layout(multipath=False)
    layout.add_controller(QEMU)
    events = layout.attach(GPT)
    p1 = next(e.device for e in events if e.device.properties.get("PARTN") == "1")
    p2 = next(e.device for e in events if e.device.properties.get("PARTN") == "2")
    links1, links2 = set(p1.properties["DEVLINKS"].split()), set(p2.properties["DEVLINKS"].split())
    props = p1.properties
    wwid = props["ID_WWN"]
    assert links1 == {
        "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_RIGCTRL0_4-part1",
        f"/dev/disk/by-id/nvme-{wwid}-part1",
        "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_RIGCTRL0-part1",
        f"/dev/disk/by-path/{props['ID_PATH']}-part1",
        f"/dev/disk/by-partuuid/{props['ID_PART_ENTRY_UUID']}",
        "/dev/disk/by-partlabel/rig-data",
        "/dev/disk/by-label/nspart1",
        f"/dev/disk/by-uuid/{props['ID_FS_UUID']}",
    }
    # Blank partition: no filesystem links.
    assert not any("/by-label/" in link or "/by-uuid/" in link for link in links2)
    assert "/dev/disk/by-partlabel/rig-blank" in links2
    # Whole-disk filesystem: its links follow a content change.
    layout.attach(NamespaceConfig("nvme0", 2, fs="xfs", label="nsxfs"))
    assert "/dev/disk/by-label/nsxfs" in layout.disk("nvme0", 2).properties["DEVLINKS"]
    (changed,) = layout.change("nvme0", 2, fs="ext4", label="renamed")
    links = changed.device.properties["DEVLINKS"].split()
    assert "/dev/disk/by-label/renamed" in links and "/dev/disk/by-label/nsxfs" not in links
    uuids = [link for link in links if link.startswith("/dev/disk/by-uuid/")]
    assert uuids == [f"/dev/disk/by-uuid/{changed.device.properties['ID_FS_UUID']}"]
