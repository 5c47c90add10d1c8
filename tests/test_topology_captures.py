"""The topology reproduces what the real-guest captures show, step by step, in both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvme_agent.topology.capture import parse_export_db, udev_records
from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology

FIXTURES = Path(__file__).parent / "fixtures" / "captures"

A, R = ChangeType.NAMESPACE_ADDED, ChangeType.NAMESPACE_REMOVED
PA, PR = ChangeType.PARTITION_ADDED, ChangeType.PARTITION_REMOVED

#: (step file prefix, expected (type, nsid) sequence)
STEPS: list[tuple[str, list[tuple[ChangeType, int]]]] = [
    ("01-", [(A, 2)]),
    ("02-", [(A, 4), (PA, 4), (PA, 4)]),
    ("03-", [(A, 3)]),
    ("04-", []),
    ("05-", []),
    ("06-", [(PR, 4), (PR, 4), (R, 4)]),
    ("07-", []),
    ("08-", [(R, 3)]),
    ("09-", [(R, 2)]),
    ("10-", [(R, 1)]),
    ("11-", [(A, 1)]),
    ("12-", [(A, 2), (R, 2)]),
]


def boot_records(variant: str) -> list[DeviceRecord]:
    """What was present at boot: the controller, the subsystem and namespace 1."""
    text = (FIXTURES / variant / "state-13-udev-export-db.txt").read_text()
    keep = []
    for rec in parse_export_db(text):
        is_ns1 = rec.subsystem == "block" and rec.properties.get("ID_NSID") == "1"
        if rec.subsystem in ("nvme", "nvme-subsystem") or is_ns1:
            keep.append(rec)
    return keep


def step_file(variant: str, prefix: str) -> Path:
    (path,) = sorted((FIXTURES / variant).glob(f"{prefix}*.udev-monitor.txt"))
    return path


@pytest.mark.parametrize("variant", ["multipath", "no-multipath"])
def test_capture_sequence_yields_the_right_changes(variant: str) -> None:
    topo = Topology()
    boot = topo.apply_all(boot_records(variant))
    assert [(c.type, c.nsid) for c in boot if c.nsid is not None] == [(A, 1)]
    for prefix, expected in STEPS:
        changes = topo.apply_all(udev_records(step_file(variant, prefix)))
        got = [(c.type, c.nsid) for c in changes]
        assert got == expected, f"{variant} step {prefix}: {got}"
    # After step 12 only namespace 1 (reattached) is left.
    assert [ns.nsid for ns in topo.snapshot().namespaces] == [1]


@pytest.mark.parametrize("variant", ["multipath", "no-multipath"])
def test_block_names_follow_attach_order_not_nsid(variant: str) -> None:
    topo = Topology()
    topo.apply_all(boot_records(variant))
    for prefix in ("01-", "02-"):
        topo.apply_all(udev_records(step_file(variant, prefix)))
    ns4 = topo.snapshot().namespace(4)
    assert ns4 is not None
    assert ns4.name == "nvme0n3"
    assert [p.partlabel for p in ns4.partitions] == ["rig-data", "rig-blank"]
    assert ns4.partitions[0].fs is not None and ns4.partitions[0].fs.label == "nspart1"
    assert ns4.multipath == (variant == "multipath")


@pytest.mark.parametrize("variant", ["multipath", "no-multipath"])
def test_qemu_identity_is_weak_wwid(variant: str) -> None:
    topo = Topology()
    topo.apply_all(boot_records(variant))
    ns1 = topo.snapshot().namespace(1)
    assert ns1 is not None
    assert ns1.identity.source.value == "wwid"
    assert ns1.identity.weak
    assert ns1.wwid is not None and ns1.wwid.endswith("-00000001")
    assert ns1.fs is not None and (ns1.fs.type, ns1.fs.label) == ("ext4", "nsext4")


def test_reattach_after_detach_while_mounted_is_a_new_disk() -> None:
    topo = Topology()
    topo.apply_all(boot_records("no-multipath"))
    before = topo.snapshot().namespace(1)
    topo.apply_all(udev_records(step_file("no-multipath", "10-")))
    assert topo.snapshot().namespace(1) is None
    changes = topo.apply_all(udev_records(step_file("no-multipath", "11-")))
    after = topo.snapshot().namespace(1)
    assert before is not None and after is not None
    assert [c.type for c in changes] == [A]
    assert before.diskseq != after.diskseq
