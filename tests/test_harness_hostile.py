"""Hostile device data through the harness into the real daemon (issue 11).

Namespaces whose sysfs attributes (serial, model, firmware, subsystem NQN: raw bytes, as a
hostile NVMe/TCP target or device can set them) and udev properties (label, partition name,
filesystem type: whatever udev's rules let through) are arbitrary.  One bed and one daemon
serve every example; each example plugs a controller with one namespace, waits for the
daemon's reaction, unplugs it and waits again.  The daemon must stay up and answer, plan
every mount inside its mount root, and write well-formed log lines.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvme_agent.harness.agent import AgentProcess, EventFeed, environ_without_bed
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.expect import mounted_targets
from nvme_agent.harness.layout import ControllerConfig, Event, NamespaceConfig, PartitionConfig
from nvme_agent.harness.simulate import await_reaction
from nvme_agent.topology.tracker import Topology

pytestmark = [
    pytest.mark.umockdev,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

ROOT = "/run/media/nvme-agent-hostile"
POLICY = f"""\
version: 1
defaults: {{mount_root: {ROOT}}}
rules:
  - name: everything
    match: {{}}
    on_add:
      - mount: {{path: "{ROOT}/{{label}}-{{serial}}-{{partlabel}}-{{fs_type}}"}}
      - exec: {{argv: [/bin/echo, "{{label}}", "{{serial}}", "{{model}}", "{{subsysnqn}}"]}}
    on_remove:
      - exec: {{argv: [/bin/echo, "gone", "{{partlabel}}"]}}
"""
#: How a line the daemon writes begins: its topology log, or Python logging's format.
LOG_LINE = re.compile(
    r"^(nvme-agent\[(info|notice|warning|error)\]: "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: )"
)


@dataclass
class Rig:
    """One bed and one daemon for every example, plus the shadow topology."""

    bed: Bed
    agent: AgentProcess
    feed: EventFeed
    shadow: Topology
    log_offset: int = 0

    def inject(self, events: list[Event]) -> None:
        start = len(self.feed.snapshot())
        self.bed.apply(events)
        expected = [
            (c.type.value, c.nsid)
            for e in events
            if not e.device.silent
            for c in self.shadow.apply(e.device.record(e.action))
        ]
        await_reaction(self.feed, expected, start, 30)

    def new_log(self) -> str:
        assert self.agent.stderr is not None
        self.agent.stderr.seek(self.log_offset)
        data = self.agent.stderr.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    work = Path(tempfile.mkdtemp(prefix="nvme-agent-hostile-"))
    try:
        (work / "policy.yaml").write_text(POLICY)
        with Bed(multipath=True) as bed:
            agent = AgentProcess(work / "policy.yaml", bed.env(environ_without_bed()), workdir=work)
            agent.start()
            feed = EventFeed(agent.events_socket)
            try:
                yield Rig(bed, agent, feed, Topology())
            finally:
                feed.close()
                assert agent.stop() == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def attr(data: bytes) -> str:
    """Raw sysfs bytes as the harness carries them (non-UTF-8 as surrogate escapes)."""
    return data.decode("utf-8", "surrogateescape")


#: A sysfs attribute: any bytes but NUL (the kernel prints up to the first NUL).
raw = st.binary(max_size=48).filter(lambda b: b"\0" not in b)
forging = st.one_of(raw, raw.map(lambda b: b + b"\nFORGED " + b))
#: What a filesystem or GPT entry may say (udev's rules then make it safe or encode it).
disk_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40),
    st.sampled_from(["..", ".", "../../etc", "-rf /", "$(reboot)", "a/b", "\nFORGED x", ""]),
)
fs_type = st.one_of(
    st.sampled_from(["ext4", "xfs", "vfat", "btrfs", "swap", "ntfs", "..", "ext4 -o exec"]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


@dataclass(frozen=True)
class Hostile:
    serial: bytes
    model: bytes
    firmware: bytes
    nqn: bytes
    transport: str
    label: str
    partlabel: str
    fs: str
    whole_disk: bool

    def controller(self) -> ControllerConfig:
        return ControllerConfig(
            "nvme1",
            serial=attr(self.serial),
            model=attr(self.model),
            firmware=attr(self.firmware),
            subsysnqn=attr(self.nqn),
            transport=self.transport,
        )

    def namespace(self) -> NamespaceConfig:
        if self.whole_disk:
            return NamespaceConfig("nvme1", 1, fs=self.fs, label=self.label)
        part = PartitionConfig(1, 64 << 20, fs=self.fs, label=self.label, partlabel=self.partlabel)
        return NamespaceConfig("nvme1", 1, partitions=(part,))


hostile = st.builds(
    Hostile,
    serial=forging,
    model=forging,
    firmware=forging,
    nqn=forging,
    transport=st.sampled_from(["pcie", "tcp"]),
    label=disk_text,
    partlabel=disk_text,
    fs=fs_type,
    whole_disk=st.booleans(),
)


def plug_and_unplug(rig: Rig, case: Hostile) -> list[dict[str, Any]]:
    """One example: the controller and its namespace come, then go; the stream records."""
    start = len(rig.feed.snapshot())
    layout = rig.bed.layout
    rig.inject(layout.add_controller(case.controller()))
    try:
        rig.inject(layout.connect("nvme1"))
        rig.inject(layout.attach(case.namespace()))
    finally:
        # leave the bed as the next example expects it, also after a failure
        rig.inject(layout.remove_controller("nvme1"))
    return rig.feed.snapshot()[start:]


def check_daemon(rig: Rig, records: list[dict[str, Any]], mounts: set[str]) -> str:
    """The invariants every example must keep; returns the new log text."""
    assert rig.agent.proc is not None and rig.agent.proc.poll() is None, rig.agent.tail()
    assert rig.agent.request({"cmd": "status"}, timeout=30)["ok"]
    for rec in records:
        for action in rec.get("actions") or [] if rec.get("type") == "plan" else []:
            target = action.get("target")
            if action.get("kind") == "mount":
                assert target.startswith(ROOT + "/") and os.path.normpath(target) == target
                assert os.path.dirname(target) == ROOT, target  # one component per mount
    # dry run: nothing of ours is mounted (other tests on this machine may mount elsewhere)
    assert {t for t in mounted_targets() if t.startswith(ROOT)} == mounts
    return rig.new_log()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=hostile)
def test_hostile_device_data_never_escapes_or_stops_the_daemon(rig: Rig, case: Hostile) -> None:
    mounts = {t for t in mounted_targets() if t.startswith(ROOT)}
    records = plug_and_unplug(rig, case)
    log = check_daemon(rig, records, mounts)
    assert {r["type"] for r in records} >= {"controller-added", "controller-removed"}
    for line in log.split("\n"):
        assert not line or LOG_LINE.match(line), f"forged or broken log line: {line!r}"


def test_a_serial_or_nqn_with_a_newline_cannot_forge_a_log_line(rig: Rig) -> None:
    case = Hostile(
        serial=b"A\nFORGED serial \x1b[31m",
        model=b"M",
        firmware=b"1",
        nqn=b"nqn.2024-01.io.example:x\nFORGED nqn",
        transport="pcie",
        label="data",
        partlabel="p",
        fs="ext4",
        whole_disk=True,
    )
    mounts = {t for t in mounted_targets() if t.startswith(ROOT)}
    log = check_daemon(rig, plug_and_unplug(rig, case), mounts)
    for line in log.split("\n"):
        assert not line or LOG_LINE.match(line), f"forged log line: {line!r}"
        assert "\x1b" not in line
