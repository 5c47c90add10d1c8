"""Replaying every real-guest capture yields the topology changes the capture shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvme_agent.harness.replay import Replay, implied_present, udev_events

pytestmark = pytest.mark.umockdev

CAPTURES = Path(__file__).parent / "fixtures" / "captures"
A, R, PA, PR = "namespace-added", "namespace-removed", "partition-added", "partition-removed"

#: step prefix -> (type, nsid) the capture shows, in order (partitions of one disk by set)
EXPECTED: dict[str, list[tuple[str, int]]] = {
    "01": [(A, 2)],
    "02": [(A, 4), (PA, 4), (PA, 4)],
    "03": [(A, 3)],
    "04": [],
    "05": [],
    "06": [(PR, 4), (PR, 4), (R, 4)],
    "07": [],
    "08": [(R, 3)],
    "09": [(R, 2)],
    "10": [(R, 1)],
    "11": [(A, 1)],
    "12": [(A, 2), (R, 2)],
}
FILES = sorted(CAPTURES.glob("*/[0-9][0-9]-*.udev-monitor.txt"))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:2]}" for p in FILES])
def test_replay_matches_capture(path: Path, bed_support: None) -> None:
    text = path.read_text()
    result = Replay(text, lambda _rec, _text: None).run()
    assert result.error is None
    got = [(c["type"], c["nsid"]) for c in result.changes]
    assert got == EXPECTED[path.name[:2]]
    # removed devices the capture never added were present at coldplug
    present = implied_present(udev_events(text))
    cold_ns = [c for c in result.coldplug if c["type"] == A]
    assert len(cold_ns) == len(
        {r.properties.get("ID_NSID") for r in present if r.properties.get("DEVTYPE") == "disk"}
    )


def test_udev_events_ignore_kernel_events() -> None:
    text = (CAPTURES / "multipath" / "02-attach-ns4-gpt-2-partitions.udev-monitor.txt").read_text()
    events = udev_events(text)
    assert len(events) == 6  # bdi, ng, disk, change, 2 partitions (KERNEL duplicates dropped)
    assert [e.action for e in events].count("change") == 1
