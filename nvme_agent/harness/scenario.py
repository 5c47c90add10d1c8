"""The scenario format: controllers, namespaces, a policy and a timeline of steps.

A scenario is a YAML file (keys below are stable; operators write their own)::

    name: hot-swap                     # optional
    multipath: true                    # native NVMe multipath layout (kernel default)
    controllers:
      - {name: nvme0, serial: SN0001, subsysnqn: "nqn.2019-08.org.qemu:subsys0"}
      - {name: nvme1, transport: tcp, traddr: 127.0.0.1, trsvcid: 4420, present: false}
    namespaces:                        # present before the agent starts (coldplug)
      - {ctrl: nvme0, nsid: 1, size: 1GiB, fs: ext4, label: data}
    policy: policy.yaml                # path relative to the scenario file, or a mapping
    steps:
      - remove: {ctrl: nvme0, nsid: 1}
      - add: {ctrl: nvme0, nsid: 1, size: 2GiB, fs: xfs, label: fresh}
      - expect: {mounted: {nsid: 1, at: /mnt/nvme/fresh}}

The step kinds are :data:`~nvme_agent.harness.steps.STEP_KINDS` (what each does:
:mod:`.steps`; how each is read: :mod:`.scenario_parse`).  Errors name the file, line and
column, all at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvme_agent.harness.layout import ControllerConfig, Device, Event, Layout, NamespaceConfig
from nvme_agent.harness.scenario_parse import FILESYSTEMS, parse
from nvme_agent.harness.steps import (
    DEFAULT_TIMEOUT,
    EXPECT_KINDS,
    STEP_KINDS,
    Step,
    coldplug,
)
from nvme_agent.policy import Policy
from nvme_agent.policy.loader import parse_yaml
from nvme_agent.topology.changes import Change
from nvme_agent.topology.model import TopologySnapshot
from nvme_agent.topology.records import COLDPLUG_ORDER

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXPECT_KINDS",
    "FILESYSTEMS",
    "STEP_KINDS",
    "Scenario",
    "ScenarioError",
    "Step",
    "load_scenario",
    "load_scenario_text",
]


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``issues`` are ``file:line:col: key: message`` lines."""

    def __init__(self, issues: list[str]) -> None:
        super().__init__("\n".join(issues))
        self.issues = issues


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario.  ``controllers`` are those present at start."""

    path: Path | None
    name: str
    description: str
    multipath: bool
    controllers: tuple[ControllerConfig, ...]
    namespaces: tuple[NamespaceConfig, ...]
    policy: Policy | None
    policy_text: str | None
    policy_file: Path | None
    steps: tuple[Step, ...]

    def layout(self) -> Layout:
        """A fresh layout with the coldplug controllers and namespaces."""
        layout = Layout(multipath=self.multipath)
        coldplug(layout, self.controllers, self.namespaces)
        return layout

    def step_events(self, layout: Layout, step: Step) -> list[Event]:
        """What ``step`` does to the device tree, all phases in one list."""
        return [event for phase in step.phases(layout) for event in phase]

    def planned_changes(self) -> list[tuple[Change, TopologySnapshot]]:
        """The topology changes this scenario causes, computed purely (no bed, no daemon).

        Builds the device records intake would produce from the scenario's layout (coldplug
        first, then each device step's events) and feeds them to the real
        :class:`~nvme_agent.topology.tracker.Topology`.  Steps that change no device
        (reload, eject, wait-for, expect) are skipped.
        """
        from nvme_agent.topology.tracker import Topology  # the topology imports nothing from here

        topology = Topology()
        out: list[tuple[Change, TopologySnapshot]] = []
        layout = Layout(multipath=self.multipath)
        coldplug(layout, self.controllers, self.namespaces)
        for device in coldplug_order(layout):
            for change in topology.apply(device.record("add", coldplug=True)):
                out.append((change, topology.snapshot()))
        seqnum = 0
        for step in self.steps:
            for event in self.step_events(layout, step):
                if event.device.silent:
                    continue
                seqnum += 1
                for change in topology.apply(event.device.record(event.action, seqnum)):
                    out.append((change, topology.snapshot()))
        return out


def coldplug_order(layout: Layout) -> list[Device]:
    """The order :func:`nvme_agent.topology.intake.enumerate_records` yields devices in."""
    order = COLDPLUG_ORDER
    devices = [d for d in layout.devices() if d.subsystem in order]
    return sorted(
        devices,
        key=lambda d: (order.index(d.subsystem), d.devtype == "partition", d.devpath),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate the scenario file at ``path``.

    Raises :class:`ScenarioError` listing every problem (``OSError`` if unreadable).
    """
    path = Path(path)
    return load_scenario_text(
        path.read_text(encoding="utf-8"), str(path), base=path.parent, path=path
    )


def load_scenario_text(
    text: str, origin: str = "<scenario>", *, base: Path | None = None, path: Path | None = None
) -> Scenario:
    """Load a scenario from YAML ``text``; relative policy paths resolve against ``base``."""
    doc = parse_yaml(text, origin)
    if doc.issues:
        raise ScenarioError([str(i) for i in doc.issues])
    parsed, issues = parse(doc, base)
    if issues:
        raise ScenarioError(issues)
    return Scenario(
        path=path,
        name=parsed.name or (path.stem if path else "scenario"),
        description=parsed.description,
        multipath=parsed.multipath,
        controllers=parsed.controllers,
        namespaces=parsed.namespaces,
        policy=parsed.policy,
        policy_text=parsed.policy_text,
        policy_file=parsed.policy_file,
        steps=parsed.steps,
    )
