"""The real-guest captures recorded by tests/e2e agree with the step tables that name them.

tests/e2e/shapes.py is the one source of the capture sets (their steps, file names and README
lines); the e2e recorder writes captures and README from it.  Here, without a guest: every
file a table names is stored, nothing else is, the README is exactly what the table makes,
and every capture parses into events.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e.shapes import CAPTURE_SETS, FIXTURES, MODES, CaptureSet, readme

from nvme_agent.topology.capture import parse_capture, udev_records

IDS = [cs.directory for cs in CAPTURE_SETS]
_VERSIONS = re.compile(r"kernel `(?P<kernel>[^`]+)`, QEMU (?P<qemu>[\d.]+):")


@pytest.mark.parametrize("cs", CAPTURE_SETS, ids=IDS)
def test_stored_files_are_exactly_the_tables(cs: CaptureSet) -> None:
    directory = FIXTURES / cs.directory
    for mode in MODES:
        stored = sorted(p.name for p in (directory / mode).iterdir())
        assert stored == sorted(name for name, _ in cs.files()), f"{cs.directory}/{mode}"
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", *MODES]


@pytest.mark.parametrize("cs", CAPTURE_SETS, ids=IDS)
def test_readme_is_generated_from_the_table(cs: CaptureSet) -> None:
    text = (FIXTURES / cs.directory / "README.md").read_text()
    found = _VERSIONS.search(text)
    assert found, "README names no kernel and QEMU version"
    assert text == readme(cs, found["kernel"], found["qemu"])
    for mode in MODES:
        for name, _ in cs.files():
            assert f"`{mode}/{name}`" in text


def _captures() -> list[Path]:
    return sorted(
        FIXTURES / cs.directory / mode / step.filename
        for cs in CAPTURE_SETS
        for mode in MODES
        for step in cs.steps
    )


@pytest.mark.parametrize(
    "path", _captures(), ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name[:2]}"
)
def test_capture_parses_and_names_its_command(path: Path) -> None:
    text = path.read_text()
    header = text.splitlines()[:2]
    assert header[0].startswith("# ") and "command started at monotonic" in header[1]
    events = list(parse_capture(text))
    # Every UDEV event is also a record the topology can take.
    assert len(udev_records(path)) == len([e for e in events if e.source == "UDEV"])
    # Guest paths only: nothing of the recording machine.
    assert "/tmp/" not in text and "/work/" not in text


def test_every_step_that_adds_or_removes_a_disk_shows_it() -> None:
    """Guards against a capture cut short: steps named for a disk's arrival or departure
    contain its UDEV event in every mode where the kernel sends one."""
    for path in _captures():
        slug = path.name[3:].removesuffix(".udev-monitor.txt")
        records = udev_records(path)
        disks = [r for r in records if r.subsystem == "block" and r.devtype == "disk"]
        if slug in ("connect-path1", "enable-ns2", "hot-add-controller", "attach-ns2-ctrl0"):
            assert any(r.action == "add" for r in disks), path
        if slug in ("disable-ns2", "disconnect", "detach-ns2-last-path"):
            assert any(r.action == "remove" for r in disks), path
