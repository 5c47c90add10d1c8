"""Fresh udev captures from the guest against the harness's synthetic events.

Each run records ``udevadm monitor --udev --property`` in the guest around attach and detach
and compares it with what nvme_agent/harness/layout.py builds for the same operations (see
compare.py: the events, their order where udev guarantees one, the property keys of each).
The fast suite runs the same comparison on the stored captures (test_harness_layout.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import compare
from .guest import Guest
from .monitor import MonitorEvent, parse_monitor


@pytest.fixture
def recorded(bare_guest: Guest, captures_out: Path) -> list[list[MonitorEvent]]:
    """Record the OPERATIONS in the guest; keep the files under ``attach-detach/<mode>`` of
    the captures directory (not compared with, nor written over, the stored shared-rig
    captures in tests/fixtures/captures/<mode>)."""
    g = bare_guest
    outdir = captures_out / "attach-detach" / g.mode
    outdir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (verb, nsid) in enumerate(compare.OPERATIONS, 1):
        name = f"{i:02d}-{verb}-ns{nsid}.udev-monitor.txt"
        guest_file = f"/run/{name}"
        res = g.probe(
            "capture", "--out", guest_file, "--",
            "nvme", f"{verb}-ns", "/dev/nvme0", "-n", str(nsid), "-c", "0",
        )  # fmt: skip
        assert res["rc"] == 0 and res["marker_seen"], res
        text = g.qga.read_file(guest_file).decode()
        (outdir / name).write_text(text)
        results.append(parse_monitor(text))
    return results


def test_fresh_captures_match_the_harness(
    bare_guest: Guest, recorded: list[list[MonitorEvent]]
) -> None:
    problems = compare.differences(recorded, bare_guest.multipath, bare_guest.mode)
    assert not problems, "\n".join(problems)
