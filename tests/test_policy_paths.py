"""Paths in the policy language (issue 12): transport over every path, paths_min/paths_max on
live paths, on_path_added/on_path_lost hooks that never mount or unmount, path rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support.policy import added, namespace, path, path_change, removed, topology

from nvme_agent.cli.main import main
from nvme_agent.cli.scenarios import bundled
from nvme_agent.harness.scenario import load_scenario
from nvme_agent.policy import REFUSED, decide, explain, load_policy_text
from nvme_agent.policy.plan import ExecSpec, MountSpec, SignalSpec, SystemdSpec, UnmountSpec
from nvme_agent.policy.spec import ExecAction, MountAction, Policy, Rule, UnmountAction
from nvme_agent.policy.templates import compile_template
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, NamespacePath, TopologySnapshot

ROOT = "/run/media/nvme-agent"
LOST, ADDED = ChangeType.PATH_LOST, ChangeType.PATH_ADDED

POLICY = load_policy_text(
    """\
version: 1
rules:
  - name: keep-off
    match: {fs_label: "system*"}
    ignore: true
  - name: data
    match: {fs_label: "data*"}
    on_add:
      - mount: {path: "/run/media/nvme-agent/{label}"}
    on_remove:
      - exec: {argv: [/usr/bin/bye, "{label}"]}
    on_path_lost:
      - exec:
          argv: [/usr/bin/degraded, "{mountpoint}", "{path_ctrl}", "{path_transport}",
                 "{path_address}", "{path_state}", "{path_device}", "{paths_live}"]
      - systemd: {reload: "app@{label}.service"}
      - signal: {signal: USR1, unit: "app@{label}.service"}
  - name: gone
    match: {paths_max: 1}
    on_path_lost:
      - exec: {argv: [/usr/bin/alarm, "{nsid}", "{paths_live}"]}
  - name: back
    match: {paths_min: 2, transport: tcp}
    on_path_added:
      - exec: {argv: [/usr/bin/back, "{path_ctrl}"]}
  - name: rest
    on_add:
      - exec: {argv: [/usr/bin/hello, "{nsid}"]}
""",
    "paths.yaml",
)

TWO = (path("nvme0"), path("nvme1"))


def _lost(label: str = "data", *, left: int = 1, nsid: int = 1) -> tuple[Change, TopologySnapshot]:
    """A path-lost of a namespace that had ``left + 1`` live tcp paths."""
    paths = tuple(path(f"nvme{i}") for i in range(left + 1))
    before = namespace(nsid, label=label, paths=paths)
    after = dataclasses.replace(before, paths=paths[1:], controllers=("nvme1",))
    return path_change(LOST, after, paths[0], before), topology(after)


# --- hooks -------------------------------------------------------------------------------


def test_path_lost_runs_the_hooks_of_the_namespace_rule_and_never_unmounts() -> None:
    change, snap = _lost()
    plan = decide(change, snap, POLICY)
    assert plan.rule == "data"
    assert [a.kind for a in plan.actions] == ["exec", "systemd", "signal"]
    hook, unit, sig = plan.actions
    assert isinstance(hook, ExecSpec) and isinstance(unit, SystemdSpec)
    assert isinstance(sig, SignalSpec)
    assert hook.argv == (
        "/usr/bin/degraded",
        f"{ROOT}/data",
        "nvme0",
        "tcp",
        "traddr=127.0.0.1,trsvcid=4420",
        "live",
        "ns1",  # no path device seen: the fallback, as for every empty value
        "1",
    )
    assert (unit.verb, unit.unit) == ("reload", "app@data.service")
    assert sig.unit == "app@data.service" and sig.signal == "SIGUSR1"
    assert not [a for a in plan.actions if isinstance(a, MountSpec | UnmountSpec)]
    env = dict(plan.env)
    assert env["NVME_AGENT_EVENT"] == "path-lost"
    assert env["NVME_PATH_CTRL"] == "nvme0" and env["NVME_PATH_TRANSPORT"] == "tcp"
    assert env["NVME_PATH_ADDRESS"] == "traddr=127.0.0.1,trsvcid=4420"
    assert env["NVME_PATH_STATE"] == "live" and "NVME_PATH_DEVICE" not in env
    assert env["NVME_PATHS_LIVE"] == "1"
    assert env["MOUNTPOINT"] == f"{ROOT}/data"  # where the rule mounts it: still mounted
    assert "path lost: nvme0 (tcp, traddr=127.0.0.1,trsvcid=4420, state live); 1 live path now" in (
        plan.explanation
    )


def test_path_added_passes_over_rules_without_its_hook() -> None:
    ns = namespace(1, label="data", paths=TWO)
    plan = decide(path_change(ADDED, ns, TWO[1]), topology(ns), POLICY)
    # data, gone and rest have no on_path_added, keep-off (ignore) does not match: back decides
    assert plan.rule == "back"
    assert [a.argv for a in plan.actions if isinstance(a, ExecSpec)] == [("/usr/bin/back", "nvme1")]
    assert "3 rules without on_path_added actions passed over" in plan.explanation
    assert "1 rule before did not match (nvme-agent explain says why)" in plan.explanation
    assert dict(plan.env)["NVME_AGENT_EVENT"] == "path-added"


def test_a_path_rule_after_the_mount_rule_hears_of_path_loss_of_other_namespaces() -> None:
    change, snap = _lost("scratch")
    plan = decide(change, snap, POLICY)
    assert plan.rule == "gone"
    assert [a.argv for a in plan.actions if isinstance(a, ExecSpec)] == [
        ("/usr/bin/alarm", "1", "1")
    ]
    assert "MOUNTPOINT" not in dict(plan.env)


def test_an_ignore_rule_stops_path_changes_too() -> None:
    change, snap = _lost("system-root")
    plan = decide(change, snap, POLICY)
    assert plan.rule == "keep-off" and plan.actions == ()


def test_no_rule_for_a_path_change_is_nothing() -> None:
    ns = namespace(1, label="scratch", paths=(path("nvme0"),))
    plan = decide(path_change(ADDED, ns, path("nvme0")), topology(ns), POLICY)
    assert plan.rule is None and plan.actions == ()
    assert any("no rule matched" in line for line in plan.explanation)


def test_device_changes_pass_over_path_rules() -> None:
    # "gone" (paths_max: 1) matches a single-path namespace, but it is a path rule: the add
    # and the removal of a namespace go to the rule that mounts, whatever its path count.
    ns = namespace(1, label="scratch", paths=(path("nvme0"),))
    plan = decide(added(ns), topology(ns), POLICY)
    assert plan.rule == "rest"
    data = namespace(2, label="data-2", paths=(path("nvme0"),))
    assert decide(added(data), topology(data), POLICY).rule == "data"
    gone = decide(removed(data), topology(), POLICY)
    assert gone.rule == "data" and [a.kind for a in gone.actions] == ["exec", "unmount"]
    verdicts = explain(added(ns), topology(ns), POLICY)
    assert [v.name for v in verdicts] == ["keep-off", "data", "rest"]


def test_path_plans_of_the_bundled_scenarios() -> None:
    """Decided on the snapshots the real tracker builds from the bundled path scenarios."""
    seen: dict[str, list[tuple[str, str, str]]] = {}
    for name in ("nvme-tcp-two-paths", "qemu-two-controllers", "qemu-two-controllers-no-multipath"):
        scenario = load_scenario(bundled()[name])
        for change, snap in scenario.planned_changes():
            if change.type not in (LOST, ADDED):
                continue
            label = change.namespace.fs.label if change.namespace and change.namespace.fs else ""
            policy = load_policy_text(POLICY_TEXT_FOR_SCENARIOS.replace("LABEL", label or "x"))
            plan = decide(change, snap, policy)
            assert not [a for a in plan.actions if not isinstance(a, ExecSpec)], plan.actions
            env = dict(plan.env)
            seen.setdefault(name, []).append(
                (change.type.value, env["NVME_PATH_CTRL"], env["NVME_PATHS_LIVE"])
            )
            if change.type is LOST:
                exec_ = plan.actions[0]
                assert isinstance(exec_, ExecSpec)
                assert exec_.argv[1:] == (
                    f"{ROOT}/{label}",
                    env["NVME_PATH_CTRL"],
                    env["NVME_PATH_TRANSPORT"],
                    env["NVME_PATHS_LIVE"],
                )
    assert seen == {
        "nvme-tcp-two-paths": [("path-added", "nvme1", "2"), ("path-lost", "nvme0", "1")],
        "qemu-two-controllers": [("path-lost", "nvme0", "1")],
        "qemu-two-controllers-no-multipath": [
            ("path-added", "nvme1", "2"),
            ("path-lost", "nvme1", "1"),
        ],
    }


POLICY_TEXT_FOR_SCENARIOS = """\
version: 1
rules:
  - match: {fs_label: LABEL}
    on_add: [{mount: {path: "/run/media/nvme-agent/{label}"}}]
    on_remove: [{unmount: {}}]
    on_path_lost:
      - exec: {argv: [/bin/hook, "{mountpoint}", "{path_ctrl}", "{path_transport}", "{paths_live}"]}
    on_path_added:
      - exec: {argv: [/bin/hook, "{path_ctrl}"]}
"""


def test_decide_refuses_a_mount_or_unmount_in_a_path_hook_of_an_unchecked_policy() -> None:
    # The validator refuses these; decide refuses them too, for a policy built by other means.
    mount = MountAction(path=compile_template(f"{ROOT}/{{label}}"), options=("nodev",))
    hook = ExecAction(argv=(compile_template("/bin/true"),))
    for bad in (mount, UnmountAction()):
        rule = Rule(index=0, name="sneaky", on_add=(mount,), on_path_lost=(hook, bad))
        policy = Policy(rules=(rule,))
        change, snap = _lost()
        plan = decide(change, snap, policy)
        assert plan.actions == (), plan.actions
        assert f"{REFUSED}rules[0] 'sneaky' on_path_lost[1]: {bad.kind} is not allowed there" in (
            plan.explanation
        )


def test_a_template_that_cannot_render_refuses_a_path_plan() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_path_lost: [{systemd: {stop: 'x@{label}{label}.service'}}]\n"
    )
    change, snap = _lost("é" * 40)  # each é escapes to 8 bytes: past 255 for a unit name
    plan = decide(change, snap, policy)
    assert plan.actions == () and any(line.startswith(REFUSED) for line in plan.explanation)


# --- matching ----------------------------------------------------------------------------


def _match(condition: str, ns: Namespace) -> bool:
    policy = load_policy_text(f"version: 1\nrules:\n  - match: {condition}\n")
    return decide(added(ns), topology(ns), policy).rule is not None


MIXED = (
    path("nvme0", transport="tcp"),
    path("nvme1", transport="rdma", state="connecting"),
    path("nvme2", transport="tcp", state="resetting"),
)


@pytest.mark.parametrize(
    ("condition", "paths", "holds"),
    [
        ("{paths_min: 1}", MIXED, True),
        ("{paths_min: 2}", MIXED, False),  # only one of three is live
        ("{paths_max: 1}", MIXED, True),
        ("{paths_max: 0}", MIXED, False),
        ("{paths_min: 2, paths_max: 2}", TWO, True),
        ("{paths_min: 3}", TWO, False),
        ("{paths_max: 0}", (), True),  # no known path: none live
        ("{paths_min: 1}", (path("nvme0", state=None),), False),  # state unknown: not live
        ("{transport: tcp}", MIXED, True),
        ("{transport: rdma}", MIXED, True),  # any path, whatever its state
        ("{transport: [fc, 'rd*']}", MIXED, True),
        ("{transport: pcie}", MIXED, False),
        ("{not: {transport: rdma}}", MIXED, False),  # none of its paths is rdma: no
        ("{not: {transport: rdma}}", TWO, True),
        ("{transport: pcie}", (), True),  # no path: the namespace's own transport
        ("{any: [{paths_min: 5}, {transport: rdma}]}", MIXED, True),
    ],
)
def test_path_conditions(condition: str, paths: tuple[NamespacePath, ...], holds: bool) -> None:
    ns = namespace(1, label="x", paths=paths)
    assert _match(condition, ns) is holds


def test_explain_says_why_a_path_condition_holds_or_not() -> None:
    ns = namespace(1, label="x", paths=MIXED)
    policy = load_policy_text(
        "version: 1\nrules:\n"
        "  - {name: a, match: {paths_min: 2}}\n"
        "  - {name: b, match: {transport: [fc, pcie]}}\n"
        "  - {name: c, match: {paths_max: 3, transport: 'rd*'}}\n"
    )
    lines = [v.line() for v in explain(added(ns), topology(ns), policy)]
    assert lines == [
        "rules[0] 'a': no: 1 live path is below paths_min 2",
        "rules[1] 'b': no: transport any of ['tcp', 'rdma'] does not match any of ['fc', 'pcie']",
        "rules[2] 'c': matched: transport 'rdma' matches 'rd*'; 1 live path is within bounds",
    ]
    none = namespace(1, label="x", transport=None)
    lines = [v.line() for v in explain(added(none), TopologySnapshot(namespaces=(none,)), policy)]
    assert lines[1] == "rules[1] 'b': no: transport is absent (wanted any of ['fc', 'pcie'])"


def test_templates_and_env_of_device_changes_have_the_live_path_count_only() -> None:
    ns = namespace(1, label="data", paths=TWO)
    plan = decide(added(ns), topology(ns), POLICY)
    env = dict(plan.env)
    assert env["NVME_PATHS_LIVE"] == "2"
    assert not [k for k in env if k.startswith("NVME_PATH_")]


def test_explain_shows_path_plans_of_a_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT_FOR_SCENARIOS.replace("LABEL", "tcpdata"))
    assert main(["explain", "--scenario", "nvme-tcp-two-paths", "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    lost = out[out.index("path-lost nsid=1") :]
    lost = lost[: lost.index("controller-removed")]
    assert "path lost: nvme0 (tcp, traddr=127.0.0.1,trsvcid=4420, state live); 1 live path now" in (
        lost
    )
    assert "exec ['/bin/hook', '/run/media/nvme-agent/tcpdata', 'nvme0', 'tcp', '1']" in lost
    assert "unmount" not in lost


# --- the real daemon acts on path plans ---------------------------------------------------

DAEMON_SCENARIO = """\
multipath: true
controllers:
  - {name: nvme0, transport: tcp, serial: 3f9a1c07, subsysnqn: "nqn.2024-01.io.example:v",
     present: false}
  - {name: nvme1, transport: tcp, serial: 3f9a1c07, subsysnqn: "nqn.2024-01.io.example:v",
     trsvcid: 4421, present: false}
policy:
  version: 1
  rules:
    - name: vol
      match: {fs_label: vol}
      on_add: [{mount: {path: "/run/media/nvme-agent/{label}"}}]
      on_path_lost:
        - exec: {argv: [/bin/true, "{mountpoint}", "{path_ctrl}", "{paths_live}"]}
    - name: back
      match: {paths_min: 2}
      on_path_added: [{exec: {argv: [/bin/true, "{path_address}"]}}]
steps:
  - controller-add: {ctrl: nvme0, namespaces: [{nsid: 1, fs: ext4, label: vol}]}
  - expect: {mounted: {nsid: 1, at: /run/media/nvme-agent/vol}}
  - controller-add: {ctrl: nvme1}
  - controller-remove: {ctrl: nvme0}
  - wait-for: {type: path-lost, nsid: 1, timeout: 30}
  - expect: {present: {nsid: 1}}
  - expect: {mounted: {nsid: 1, at: /run/media/nvme-agent/vol}}
"""


@pytest.mark.umockdev
def test_the_daemon_runs_path_hooks_and_keeps_the_mount(bed_support: None) -> None:
    from nvme_agent.harness.scenario import load_scenario_text
    from nvme_agent.harness.simulate import Simulation

    records: list[dict[str, object]] = []
    scenario = load_scenario_text(DAEMON_SCENARIO, "paths.yaml")
    outcome = Simulation(scenario, lambda rec, _text: records.append(rec)).run()
    assert outcome.ok, [r for r in records if r["type"] in ("expect", "error")]
    plans = {r["change"]: r for r in records if r["type"] == "plan"}
    assert plans["path-added"]["rule"] == "back"
    assert plans["path-lost"]["rule"] == "vol"
    actions = plans["path-lost"]["actions"]
    assert isinstance(actions, list)
    (hook,) = actions
    assert isinstance(hook, dict) and hook["kind"] == "exec"
    assert hook["argv"] == ["/bin/true", "/run/media/nvme-agent/vol", "nvme0", "1"]
    results = [(r["change"], r["action"]) for r in records if r["type"] == "action-result"]
    assert ("path-lost", "exec") in results and ("path-added", "exec") in results
    assert not [r for r in results if r[1] == "unmount"]
