"""Scenario loading, validation with file:line, and the pure planned changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvme_agent.harness.layout import ControllerConfig, Layout, NamespaceConfig
from nvme_agent.harness.scenario import ScenarioError, load_scenario, load_scenario_text
from nvme_agent.topology.changes import ChangeType

SCENARIOS = Path(__file__).parent.parent / "nvme_agent" / "data" / "scenarios"
BASE = """\
controllers:
  - {name: nvme0, serial: SN0001}
namespaces:
  - {ctrl: nvme0, nsid: 1, size: 1GiB, fs: ext4, label: data}
"""


def test_bundled_default_scenario_loads_with_its_policy() -> None:
    scenario = load_scenario(SCENARIOS / "qemu-hot-swap.yaml")
    assert scenario.policy is not None
    assert [s.kind for s in scenario.steps][:2] == ["expect", "hot-swap"]
    swap = scenario.steps[1].namespace
    assert swap is not None and swap.generation == 1 and swap.fs == "xfs"


def test_planned_changes_of_the_default_scenario() -> None:
    scenario = load_scenario(SCENARIOS / "qemu-hot-swap.yaml")
    changes = [(c.type, c.nsid, c.coldplug) for c, _snap in scenario.planned_changes()]
    A, R = ChangeType.NAMESPACE_ADDED, ChangeType.NAMESPACE_REMOVED
    assert changes == [
        (ChangeType.CONTROLLER_ADDED, None, True),
        (A, 1, True),
        (R, 1, False),
        (A, 1, False),
        (A, 2, False),
        (A, 3, False),
        (A, 4, False),
        (R, 1, False),
    ]
    # the snapshot after the hot-swap holds the new contents
    _change, snap = scenario.planned_changes()[3]
    ns = snap.namespace(1)
    assert ns is not None and ns.fs is not None and ns.fs.label == "fresh"


@pytest.mark.parametrize(
    ("steps", "line", "message"),
    [
        ("  - remove: {ctrl: nvme0, nsid: 7}\n", 6, "nsid 7 is not attached"),
        ("  - explode: {nsid: 1}\n", 6, "unknown step 'explode'"),
        ("  - add: {ctrl: nvme9, nsid: 2}\n", 6, "unknown controller 'nvme9'"),
        ("  - add: {ctrl: nvme0, nsid: 2, size: 12 parsecs}\n", 6, "size"),
        ("  - add: {ctrl: nvme0, nsid: 1}\n", 6, "already attached"),
        ("  - expect: {mounted: {nsid: 1}}\n", 6, "mounted.at: required key missing"),
        ("  - burst: {ctrl: nvme0, count: 3}\n", 6, "first_nsid"),
    ],
)
def test_errors_name_file_and_line(steps: str, line: int, message: str) -> None:
    text = BASE + "steps:\n" + steps
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "my.yaml")
    assert any(i.startswith(f"my.yaml:{line}:") and message in i for i in info.value.issues), (
        info.value.issues
    )


def test_unknown_top_level_key_and_inline_policy_errors() -> None:
    text = BASE + "policyy: x\npolicy:\n  version: 1\n  rules: [{name: r, bogus: 1}]\n"
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "s.yaml")
    issues = "\n".join(info.value.issues)
    assert "s.yaml:5:1: policyy: unknown key" in issues
    assert "s.yaml:8" in issues and "bogus" in issues


def test_inline_policy_and_reload_step() -> None:
    text = (
        BASE
        + "policy: {version: 1, rules: []}\n"
        + "steps:\n  - reload: {policy: {version: 1, rules: [{name: all, match: {}}]}}\n"
    )
    scenario = load_scenario_text(text)
    assert scenario.policy is not None and scenario.steps[0].policy is not None
    assert scenario.steps[0].policy_text and "all" in scenario.steps[0].policy_text


def test_block_names_follow_attach_order_not_nsid() -> None:
    layout = Layout(multipath=False)
    layout.add_controller(ControllerConfig("nvme0", serial="X"))
    layout.attach(NamespaceConfig("nvme0", 4))
    layout.attach(NamespaceConfig("nvme0", 2))
    assert layout.disk("nvme0", 4).sysname == "nvme0n1"
    assert layout.disk("nvme0", 2).sysname == "nvme0n2"
    layout.detach("nvme0", 4)
    layout.attach(NamespaceConfig("nvme0", 3))  # lowest free instance, like the kernel's IDA
    assert layout.disk("nvme0", 3).sysname == "nvme0n1"


def test_hot_swap_changes_identity_on_real_hardware_only() -> None:
    real = ControllerConfig("nvme0", serial="S", vendor_id=0x144D)
    qemu = ControllerConfig("nvme1", serial="Q", subsysnqn="nqn.q")
    layout = Layout()
    layout.add_controller(real)
    layout.add_controller(qemu)
    for ctrl in ("nvme0", "nvme1"):
        before = layout.identifiers(NamespaceConfig(ctrl, 1, generation=0))
        after = layout.identifiers(NamespaceConfig(ctrl, 1, generation=1))
        assert (before != after) == (ctrl == "nvme0")
