"""Scenario loading, validation with file:line, and the pure planned changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.harness.layout import ControllerConfig, Layout, NamespaceConfig
from nvme_agent.harness.scenario import ScenarioError, load_scenario, load_scenario_text
from nvme_agent.harness.steps import STEP_KINDS as STEP_KINDS_FOR_TEST
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


# --------------------------------------------------------------------------- the step tables
def test_every_step_kind_has_a_parser_and_a_description() -> None:
    from nvme_agent.harness.expect import _JUDGES
    from nvme_agent.harness.scenario_parse import PARSERS
    from nvme_agent.harness.simulate import _HANDLERS
    from nvme_agent.harness.steps import DEVICE_STEPS, EXPECT_KINDS, STEP_KINDS, Step

    assert set(PARSERS) == set(STEP_KINDS)
    assert set(DEVICE_STEPS) | (set(_HANDLERS) - {"device"}) == set(STEP_KINDS)
    assert not set(DEVICE_STEPS) & set(_HANDLERS)
    assert set(_JUDGES) == set(EXPECT_KINDS)
    ns, ctrl = NamespaceConfig("nvme0", 1), ControllerConfig("nvme0", serial="S")
    for kind in STEP_KINDS:
        step = Step(kind, None, 0, ctrl="nvme0", nsid=1, namespace=ns, controller=ctrl)
        assert step.describe().startswith(kind.split("-")[0])


def test_contributing_lists_every_step_and_expectation() -> None:
    from nvme_agent.harness.steps import EXPECT_KINDS, STEP_KINDS

    readme = (Path(__file__).parent.parent / "CONTRIBUTING.md").read_text()
    block = readme[readme.index("Scenario format") :]
    block = block[: block.index("```", block.index("```") + 3)]
    for kind in STEP_KINDS:
        assert f"  - {kind}: " in block, kind
    for what in EXPECT_KINDS:
        assert f"expect: {{{what}: " in block, what


MORE = """\
controllers:
  - {name: nvme0, serial: SN0001, subsysnqn: "nqn.test:shared"}
  - {name: nvme1, serial: SN0001, subsysnqn: "nqn.test:shared"}
  - {name: nvme2, transport: tcp, trsvcid: 4421, present: false}
namespaces:
  - {ctrl: nvme0, nsid: 1, fs: ext4, label: data}
steps:
"""


@pytest.mark.parametrize(
    ("steps", "line", "message"),
    [
        ("  - remove-path: {ctrl: nvme2, nsid: 1}\n", 8, "unknown controller 'nvme2' at this"),
        ("  - controller-add: {ctrl: nvme0}\n", 8, "controller nvme0 already exists at this"),
        ("  - controller-add: {ctrl: nvme7}\n", 8, "unknown controller 'nvme7'"),
        ("  - controller-add: {namespaces: []}\n", 8, "controller-add.ctrl: required key"),
        ("  - controller-remove: {ctrl: nvme2}\n", 8, "unknown controller 'nvme2' at this"),
        ("  - add-path: {ctrl: nvme1, nsid: 1}\n", 8, "already attached to nvme1 at this"),
        ("  - add-path: {ctrl: nvme1, nsid: 2}\n", 8, "nsid 2 is not attached to nvme1"),
        (
            "  - remove-path: {ctrl: nvme1, nsid: 1}\n  - remove-path: {ctrl: nvme1, nsid: 1}\n",
            9,
            "nsid 1 is not attached to nvme1 at this point",
        ),
        ("  - add: {ctrl: nvme1, nsid: 1}\n", 8, "already attached to nvme0, nvme1"),
        ("  - controller-add: {ctrl: nvme2, namespaces: [{ctrl: nvme2}]}\n", 8, "unknown key"),
        ("  - expect: {present: {}}\n", 8, "present.nsid: required key missing"),
    ],
)
def test_path_and_controller_step_errors(steps: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(MORE + steps, "p.yaml")
    assert any(i.startswith(f"p.yaml:{line}:") and message in i for i in info.value.issues), (
        info.value.issues
    )


def test_controllers_and_namespaces_errors_at_the_top() -> None:
    text = """\
controllers:
  - {name: nvme0, transport: carrier-pigeon}
  - {name: nvme1, present: false}
  - {name: ctrl9}
namespaces:
  - {ctrl: nvme1, nsid: 1}
"""
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "t.yaml")
    issues = "\n".join(info.value.issues)
    assert "t.yaml:2:" in issues and "unknown transport 'carrier-pigeon'" in issues
    assert "t.yaml:4:" in issues and "must be nvmeN" in issues
    assert "t.yaml:6:" in issues and "nvme1 is not present at start" in issues


def test_paths_follow_every_controller_of_the_subsystem() -> None:
    scenario = load_scenario_text(
        MORE
        + "  - add: {ctrl: nvme0, nsid: 2}\n"
        + "  - remove-path: {ctrl: nvme0, nsid: 2}\n"
        + "  - controller-add: {ctrl: nvme2, namespaces: [{nsid: 5, fs: xfs, label: t}]}\n"
    )
    layout = scenario.layout()
    assert layout.paths("nvme0", 1) == ["nvme0", "nvme1"]  # coldplug: through both
    add, remove_path, plug = scenario.steps
    # one phase: nvme0's hidden path, the head's bdi, ng and disk, nvme1's hidden path
    assert [[e.device.sysname for e in p] for p in add.phases(layout)] == [
        ["nvme0c0n2", "259:900001", "ng0n2", "nvme0n2", "nvme0c1n2"]
    ]
    assert layout.paths("nvme0", 2) == ["nvme0", "nvme1"]
    remove_path.phases(layout)
    assert layout.paths("nvme1", 2) == ["nvme1"]
    phases = plug.phases(layout)
    assert len(phases) == 3  # (efault) add + subsystem, live change, the namespace
    assert phases[0][-2].device.attributes["serial"] == "(efault)"
    assert phases[1][0].device.properties["NVME_EVENT"] == "connected"
    assert layout.disk("nvme2", 5).devpath == "/devices/virtual/nvme-subsystem/nvme-subsys2/nvme2n1"


def test_planned_changes_of_the_path_scenarios() -> None:
    A, R = ChangeType.NAMESPACE_ADDED, ChangeType.NAMESPACE_REMOVED
    CA, CR = ChangeType.CONTROLLER_ADDED, ChangeType.CONTROLLER_REMOVED
    two = load_scenario(SCENARIOS / "qemu-two-controllers.yaml")
    got = [(c.type, c.nsid) for c, _s in two.planned_changes() if not c.coldplug]
    # the path goes and comes back silently (native multipath: hidden paths send no uevent);
    # a controller goes: that path is lost, the namespace stays until the end
    assert got == [(A, 1), (ChangeType.PATH_LOST, 1), (CR, None), (R, 1)]
    plug = load_scenario(SCENARIOS / "pcie-hotplug.yaml")
    got = [(c.type, c.nsid) for c, _s in plug.planned_changes()]
    assert got == [(CA, None), (A, 1), (R, 1), (CR, None), (CA, None), (A, 1)]


# --------------------------------------------------------------------------- any input
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["nvme0", "nvme1", "tcp", "ext4", "1GiB", "-1", "../x", "{nsid}", ""]),
    st.text(max_size=8),
)
KEYS = [
    "ctrl",
    "nsid",
    "size",
    "fs",
    "label",
    "name",
    "namespaces",
    "count",
    "first_nsid",
    "transport",
    "present",
    "policy",
    "type",
    "mounted",
    "at",
    "partitions",
    "timeout",
]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)
steps = st.lists(
    st.dictionaries(
        st.sampled_from([*STEP_KINDS_FOR_TEST, "bogus"]), values, min_size=1, max_size=1
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    controllers=st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=5), max_size=3),
    namespaces=values,
    steps=steps,
    multipath=scalars,
)
def test_any_scenario_data_loads_or_fails_with_positions(
    controllers: list[Any], namespaces: Any, steps: list[Any], multipath: Any
) -> None:
    doc = {
        "multipath": multipath,
        "controllers": controllers,
        "namespaces": namespaces,
        "steps": steps,
    }
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        scenario = load_scenario_text(text, "any.yaml")
    except ScenarioError as exc:
        assert exc.issues
        assert all(i.startswith("any.yaml:") for i in exc.issues), exc.issues
        return
    scenario.planned_changes()  # a scenario that loads also runs on the layout


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=300))
def test_any_text_loads_or_fails_with_positions(text: str) -> None:
    try:
        load_scenario_text(text, "t.yaml")
    except ScenarioError as exc:
        assert all(i.startswith("t.yaml") for i in exc.issues), exc.issues
