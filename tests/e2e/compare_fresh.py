"""Fresh captures of a capture set against the stored ones (tests/fixtures/captures).

A stored capture is only worth its place while the guest still does what it shows.  Both
sides are reduced like compare.py reduces the attach/detach captures: per step, the UDEV
events of the subsystems the agent listens to (action, subsystem, DEVTYPE, devpath shape,
PARTN) as a multiset (udev handles siblings in parallel, so their order varies), and the
property keys of each.  Values (SEQNUM, instance numbers, DISKSEQ, timestamps) are ignored.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nvme_agent.topology.records import SUBSYSTEMS

from .monitor import MonitorEvent, devpath_shape, parse_monitor
from .shapes import FIXTURES, CaptureSet

Key = tuple[str, str, str | None, str, str | None]


def reduce(events: list[MonitorEvent]) -> Counter[tuple[Key, frozenset[str]]]:
    """UDEV events of the agent's subsystems: (key, property keys), counted."""
    return Counter(
        (
            (e.action, e.subsystem, e.devtype, devpath_shape(e.devpath), e.props.get("PARTN")),
            frozenset(e.props),
        )
        for e in events
        if e.source == "UDEV" and e.subsystem in SUBSYSTEMS
    )


def differences(stored: str, fresh: str, what: str) -> list[str]:
    """How ``fresh`` differs from ``stored`` (capture texts), as readable lines."""
    old, new = reduce(parse_monitor(stored)), reduce(parse_monitor(fresh))
    if old == new:
        return []
    lines = [f"{what}: the guest's events differ from the stored capture"]
    for label, side in (("stored only", old - new), ("fresh only", new - old)):
        for (key, props), count in sorted(side.items(), key=str):
            lines.append(f"  {label} x{count}: {key} keys={sorted(props)}")
    return lines


def against_stored(capture_set: CaptureSet, mode: str, fresh_dir: Path) -> list[str]:
    """Every step of ``capture_set`` recorded in ``fresh_dir`` against the stored file."""
    problems = []
    stored_dir = FIXTURES / capture_set.directory / mode
    for step in capture_set.steps:
        stored, fresh = stored_dir / step.filename, fresh_dir / step.filename
        if not fresh.is_file():
            problems.append(f"{fresh}: not recorded")
        elif not stored.is_file():
            problems.append(f"{stored}: missing; re-record (see {capture_set.directory}/README.md)")
        elif stored.resolve() != fresh.resolve():
            problems += differences(stored.read_text(), fresh.read_text(), str(stored))
    return problems
