"""`nvme-agent simulate`: the real daemon against the bed, scenario expectations judged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from nvme_agent.cli.main import main
from nvme_agent.cli.scenarios import bundled
from nvme_agent.harness.scenario import load_scenario, load_scenario_text
from nvme_agent.harness.simulate import Simulation, relocate_policy

pytestmark = pytest.mark.umockdev

SCENARIOS = Path(__file__).parent.parent / "nvme_agent" / "data" / "scenarios"
POLICY = (SCENARIOS / "qemu-hot-swap.policy.yaml").read_text()


def run(scenario_text: str) -> tuple[bool, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    scenario = load_scenario_text(scenario_text, "test.yaml")
    outcome = Simulation(scenario, lambda rec, _text: records.append(rec), policy_text=POLICY).run()
    return outcome.ok, records


def test_default_scenario_exits_0_and_prints_the_hot_swap(
    bed_support: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate"]) == 0
    out = capsys.readouterr().out
    assert "namespace-removed nsid=1" in out and "namespace-added nsid=1" in out
    assert "label='fresh'" in out and "FAIL" not in out
    expects = sum(
        1 for s in load_scenario(SCENARIOS / "qemu-hot-swap.yaml").steps if s.kind == "expect"
    )
    assert out.count(": PASS (") == expects


def test_json_lines_have_type_and_nsid(
    bed_support: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all("type" in x and "nsid" in x for x in lines)
    assert lines[-1]["type"] == "summary" and lines[-1]["ok"] is True
    kinds = {x["type"] for x in lines}
    assert {"namespace-added", "plan", "action-result", "expect"} <= kinds


BASE = """\
multipath: false
controllers:
  - {name: nvme0, serial: SN0001}
namespaces:
  - {ctrl: nvme0, nsid: 1, fs: ext4, label: data}
steps:
"""


def test_a_wrong_expectation_fails(bed_support: None) -> None:
    ok, records = run(
        BASE
        + "  - add: {ctrl: nvme0, nsid: 2, fs: ext4, label: logs}\n"
        + "  - expect: {mounted: {nsid: 2, at: /run/media/nvme-agent/elsewhere}}\n"
    )
    assert not ok
    (verdict,) = [r for r in records if r["type"] == "expect"]
    assert verdict["ok"] is False and "logs" in verdict["detail"]


def test_resize_change_reload_eject_and_wait_for(bed_support: None) -> None:
    ok, records = run(
        BASE
        + "  - add: {ctrl: nvme0, nsid: 2, size: 1GiB}\n"  # blank: not mounted
        + "  - expect: {not_mounted: {nsid: 2}}\n"
        + "  - change: {ctrl: nvme0, nsid: 2, fs: xfs, label: late}\n"  # mkfs on the host
        + "  - resize: {ctrl: nvme0, nsid: 2, size: 2GiB}\n"
        + "  - wait-for: {type: namespace-resized, nsid: 2}\n"
        + "  - reload: {policy: {version: 1, rules: []}}\n"
        + "  - add: {ctrl: nvme0, nsid: 3, fs: ext4, label: ignored}\n"
        + "  - expect: {not_mounted: {nsid: 3}}\n"
        + "  - eject: {nsid: 1}\n"
        + "  - expect: {journal: {type: ejected, nsid: 1}}\n"
    )
    types = [r["type"] for r in records]
    assert ok, [r for r in records if r["type"] in ("error", "expect")]
    assert "namespace-resized" in types and "reloaded" in types


def test_burst_reaches_the_daemon_in_order(bed_support: None) -> None:
    ok, records = run(BASE + "  - burst: {ctrl: nvme0, count: 40, first_nsid: 10}\n")
    assert ok
    added = [r["nsid"] for r in records if r["type"] == "namespace-added" and not r["coldplug"]]
    assert added == list(range(10, 50))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in bundled().values()])
def test_every_bundled_scenario_passes(path: Path, bed_support: None) -> None:
    records: list[dict[str, Any]] = []
    outcome = Simulation(load_scenario(path), lambda rec, _text: records.append(rec)).run()
    failed = [r for r in records if r["type"] == "error" or (r["type"] == "expect" and not r["ok"])]
    assert outcome.ok, failed
    assert outcome.passed == sum(1 for s in load_scenario(path).steps if s.kind == "expect")


def test_bundled_path_loss_scenarios_lose_a_path_and_keep_the_namespace() -> None:
    # What makes them worth shipping: a path goes (remove-path or a controller of a shared
    # subsystem), then the namespace is expected present and still mounted.
    shown = 0
    for path in bundled().values():
        steps = load_scenario(path).steps
        kinds = [(s.kind, s.expect) for s in steps]
        for i, (kind, _) in enumerate(kinds):
            if kind in ("remove-path", "controller-remove") and ("expect", "present") in kinds[i:]:
                shown += 1
    assert shown >= 3


TCP = """\
controllers:
  - {name: nvme0, transport: tcp, serial: 3f9a1c07, subsysnqn: "nqn.2024-01.io.example:v",
     present: false}
  - {name: nvme1, transport: tcp, serial: 3f9a1c07, subsysnqn: "nqn.2024-01.io.example:v",
     trsvcid: 4421, present: false}
steps:
  - controller-add: {ctrl: nvme0, namespaces: [{nsid: 1, fs: ext4, label: v}]}
  - controller-add: {ctrl: nvme1}
  - controller-remove: {ctrl: nvme0}
  - expect: {present: {nsid: 1}}
"""


def test_connecting_fabrics_controllers_reach_the_daemon(bed_support: None) -> None:
    ok, records = run(TCP)
    assert ok, [r for r in records if r["type"] in ("expect", "error")]
    added = [r for r in records if r["type"] == "controller-added"]
    assert {r["ctrl"] for r in added} == {"nvme0", "nvme1"}
    assert [r["nsid"] for r in records if r["type"] == "namespace-added"] == [1]
    assert not [r for r in records if r["type"] == "namespace-removed"]  # path loss only


def test_efault_never_reaches_the_event_stream(bed_support: None) -> None:
    _ok, records = run(TCP)
    assert "(efault)" not in json.dumps([r for r in records if r["type"] != "step"])
    assert [r["ctrl"] for r in records if r["type"] == "controller-removed"] == ["nvme0"]


def test_a_removed_controller_is_no_longer_a_path(bed_support: None) -> None:
    ok, records = run(TCP.replace("{nsid: 1}}", "{nsid: 1, controllers: [nvme1]}}"))
    assert ok, [r for r in records if r["type"] == "expect"]


def test_relocate_policy_moves_mount_root_and_paths() -> None:
    text = relocate_policy(POLICY, "/run/media/nvme-agent", "/tmp/x/mnt")
    assert "mount_root: /tmp/x/mnt" in text and "/tmp/x/mnt/{label}" in text
    assert "/run/media" not in text


def _loops() -> set[str]:
    import subprocess

    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    return {line.split(":")[0] for line in out.splitlines()}


@pytest.mark.root
def test_real_mode_mounts_for_real_and_leaves_nothing_behind(
    bed_support: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from nvme_agent.harness.expect import mounted_targets

    if os.geteuid() != 0:
        pytest.skip("--real needs root (loop devices and mounts)")
    mounts_before = mounted_targets()
    assert main(["simulate", "--real"]) == 0
    out = capsys.readouterr().out
    assert "backed by /dev/loop" in out and "mount" in out and ": ok (mounted" in out
    # The loop devices this run made (others may come and go on a shared machine) are gone.
    ours = set(re.findall(r"backed by (/dev/loop\d+)", out))
    assert ours and not ours & _loops()
    # Nothing it mounted stays: no mount point present now that was not there before is
    # named in its output.
    assert not [m for m in mounted_targets() - mounts_before if m in out]
