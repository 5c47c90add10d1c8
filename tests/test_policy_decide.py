"""The decision engine: rule order, hooks, implied unmount, partitions, resize, templates."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from support.policy import NQN, added, namespace, partition, removed, topology

from nvme_agent.cli.commands import explain as explain_cmd
from nvme_agent.cli.output import Reporter
from nvme_agent.policy import REFUSED, decide, explain, load_policy_text
from nvme_agent.policy.plan import (
    ActionSpec,
    ExecSpec,
    GrowSpec,
    MountSpec,
    Plan,
    SignalSpec,
    SystemdSpec,
    UnmountSpec,
    spec_to_dict,
)
from nvme_agent.policy.templates import MAX_COMPONENT_BYTES
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Filesystem, Namespace, Partition, TopologySnapshot

ROOT = "/run/media/nvme-agent"
CAPTURES = Path(__file__).resolve().parent / "fixtures" / "captures"

POLICY = load_policy_text(
    """\
version: 1
rules:
  - name: keep-off
    match: {fs_label: "system*"}
    ignore: true
  - name: scratch
    match: {fs_label: "scratch-*", partition: false}
    on_add:
      - mount: {path: "/run/media/nvme-agent/{label}"}
      - systemd: {start: "scratch@{label}.service"}
      - exec: {argv: [/usr/bin/notify, "{mountpoint}", "{label}"], env: {WHO: "{serial}"}}
    on_remove:
      - systemd: {stop: "scratch@{label}.service"}
    on_resize:
      - grow: {}
  - name: parts
    match: {partition: true, partlabel: "rig-*"}
    on_add:
      - mount: {path: "/run/media/nvme-agent/{serial}-p{partn}"}
  - name: raw
    match: {fs_type: xfs}
    on_add:
      - mount: {path: "/run/media/nvme-agent/xfs-{nsid}"}
    implied_unmount: false
    on_resize:
      - grow: {}
  - name: hooks-only
    match: {nsid: 9}
    on_add:
      - exec: {argv: [/bin/echo, "{label}"]}
    on_resize:
      - grow: {}
""",
    "decide.yaml",
)


def kinds(plan: Plan) -> list[str]:
    return [a.kind for a in plan.actions]


def test_first_matching_rule_decides_and_explains_earlier_ones() -> None:
    ns = namespace(1, label="scratch-a")
    plan = decide(added(ns), topology(ns), POLICY)
    assert plan.rule == "scratch"
    assert kinds(plan) == ["mount", "systemd", "exec"]
    mount, unit, hook = plan.actions
    assert isinstance(mount, MountSpec) and isinstance(unit, SystemdSpec)
    assert isinstance(hook, ExecSpec)
    assert mount.source == "/dev/nvme0n1"
    assert mount.target == f"{ROOT}/scratch-a"
    assert mount.options == ("nodev", "nosuid", "noatime")
    assert mount.fstype == "ext4"
    assert unit.unit == "scratch@scratch\\x2da.service"
    assert hook.argv == ("/usr/bin/notify", f"{ROOT}/scratch-a", "scratch-a")
    assert hook.env == (("WHO", "RIGCTRL0"),)
    why_not = "rules[0] 'keep-off': no: fs_label 'scratch-a' does not match 'system*'"
    # decide says how many rules did not match; only explain=True says why (a sentence a rule)
    assert why_not not in plan.explanation
    assert "1 rule before did not match (nvme-agent explain says why)" in plan.explanation
    assert "rules[1] 'scratch': matched" in plan.explanation
    explained = decide(added(ns), topology(ns), POLICY, explain=True)
    assert why_not in explained.explanation
    matched = "rules[1] 'scratch': matched: fs_label 'scratch-a' matches 'scratch-*'"
    assert any(line.startswith(matched) for line in explained.explanation)
    assert explained.actions == plan.actions
    verdicts = explain(added(ns), topology(ns), POLICY)
    assert [(v.index, v.matched) for v in verdicts] == [(0, False), (1, True)]


def test_env_of_a_mounting_plan() -> None:
    ns = namespace(1, label="scratch-a", fs_uuid="1234-ab")
    env = dict(decide(added(ns), topology(ns), POLICY).env)
    assert env["NVME_AGENT_EVENT"] == "namespace-added"
    assert env["NVME_NSID"] == "1"
    assert env["NVME_CTRL"] == "nvme0"
    assert env["DEVNAME"] == "/dev/nvme0n1"
    assert env["MOUNTPOINT"] == f"{ROOT}/scratch-a"
    assert env["NVME_IDENTITY"] == str(ns.identity)
    assert env["NVME_IDENTITY_WEAK"] == "1"
    assert env["NVME_NS_WWID"] == ns.wwid
    assert env["ID_FS_TYPE"] == "ext4" and env["ID_FS_LABEL"] == "scratch-a"
    assert env["ID_FS_UUID"] == "1234-ab"


def test_ignore_rule_stops_processing() -> None:
    ns = namespace(1, label="system-root", fstype="xfs")
    plan = decide(added(ns), topology(ns), POLICY)
    assert plan.rule == "keep-off"
    assert plan.actions == ()
    assert any("ignore: true" in line for line in plan.explanation)


def test_no_rule_matches_no_actions() -> None:
    ns = namespace(2, label="other")
    plan = decide(added(ns), topology(ns), POLICY)
    assert plan.rule is None and plan.actions == ()
    assert plan.explanation[-1].startswith("no rule matched")
    assert "MOUNTPOINT" not in dict(plan.env)


@pytest.mark.parametrize(("reason", "gone"), [(None, True), ("eject", False)])
def test_remove_implies_unmount_of_the_add_mount(reason: str | None, gone: bool) -> None:
    ns = namespace(1, label="scratch-a")
    plan = decide(removed(ns, reason=reason), TopologySnapshot(), POLICY)
    assert kinds(plan) == ["systemd", "unmount"]
    stop, unmount = plan.actions
    assert isinstance(stop, SystemdSpec) and stop.verb == "stop"
    assert isinstance(unmount, UnmountSpec)
    assert unmount.source == "/dev/nvme0n1"
    assert unmount.target == f"{ROOT}/scratch-a"
    assert unmount.device_gone is gone
    assert dict(plan.env)["MOUNTPOINT"] == f"{ROOT}/scratch-a"


def test_implied_unmount_can_be_disabled() -> None:
    ns = namespace(3, fstype="xfs", label="x")
    assert kinds(decide(added(ns), topology(ns), POLICY)) == ["mount"]
    assert decide(removed(ns), TopologySnapshot(), POLICY).actions == ()


def test_explicit_unmount_replaces_the_implied_one() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add: [{mount: {}}]\n    on_remove:\n"
        "      - unmount: {on_busy: fail, timeout: 3}\n      - exec: {argv: [/bin/true]}\n"
    )
    ns = namespace(1, label="d")
    plan = decide(removed(ns, reason="eject"), TopologySnapshot(), policy)
    assert kinds(plan) == ["unmount", "exec"]
    unmount = plan.actions[0]
    assert isinstance(unmount, UnmountSpec)
    assert (unmount.on_busy, unmount.timeout, unmount.device_gone) == ("fail", 3.0, False)
    assert unmount.target == f"{ROOT}/d"


def test_hot_swap_remove_old_then_add_new_share_the_key() -> None:
    old = namespace(1, label="scratch-old", diskseq=3)
    new = namespace(1, label="scratch-new", diskseq=19, wwid="uuid.6a2b0000-0000-4000-8000-1")
    gone = decide(removed(old), TopologySnapshot(), POLICY)
    came = decide(added(new), topology(new), POLICY)
    assert gone.key == came.key == f"{NQN}#1"
    (unmount,) = [a for a in gone.actions if isinstance(a, UnmountSpec)]
    (mount,) = [a for a in came.actions if isinstance(a, MountSpec)]
    assert unmount.device_gone and unmount.target == f"{ROOT}/scratch-old"
    assert mount.target == f"{ROOT}/scratch-new"


def test_whole_disk_with_partition_table_is_not_mounted_its_partitions_are() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add: [{mount: {path: '/run/media/nvme-agent/{devname}'}}]\n"
    )
    part = partition("nvme0n3", 1, label="nspart1", partlabel="rig-data")
    ns = namespace(
        4, name="nvme0n3", fstype=None, props={"ID_PART_TABLE_TYPE": "gpt"}, partitions=(part,)
    )
    disk_plan = decide(added(ns), topology(ns), policy)
    assert disk_plan.actions == ()
    assert any("gpt partition table" in line for line in disk_plan.explanation)
    part_plan = decide(added(ns, part), topology(ns), policy)
    (mount,) = part_plan.actions
    assert isinstance(mount, MountSpec)
    assert (mount.source, mount.target) == ("/dev/nvme0n3p1", f"{ROOT}/nvme0n3p1")
    assert part_plan.key == disk_plan.key
    assert part_plan.change.type is ChangeType.PARTITION_ADDED


def test_partition_rules_match_partitions_only() -> None:
    part = partition("nvme0n3", 2, label="x", partlabel="rig-data")
    ns = namespace(4, name="nvme0n3", fstype=None, partitions=(part,))
    plan = decide(added(ns, part), topology(ns), POLICY)
    assert plan.rule == "parts"
    (mount,) = plan.actions
    assert isinstance(mount, MountSpec) and mount.target == f"{ROOT}/RIGCTRL0-p2"
    assert dict(plan.env)["NVME_PARTN"] == "2"
    plan = decide(removed(ns, part), TopologySnapshot(), POLICY)
    (unmount,) = plan.actions
    assert isinstance(unmount, UnmountSpec)
    assert (unmount.source, unmount.target) == ("/dev/nvme0n3p2", f"{ROOT}/RIGCTRL0-p2")
    assert plan.change.type is ChangeType.PARTITION_REMOVED


def test_blank_namespace_mount_skipped_other_actions_kept() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add:\n      - mount: {}\n      - exec: {argv: [/bin/true]}\n"
    )
    ns = namespace(3, fstype=None)
    plan = decide(added(ns), topology(ns), policy)
    assert kinds(plan) == ["exec"]
    assert any("no filesystem" in line for line in plan.explanation)
    assert "MOUNTPOINT" not in dict(plan.env)


def test_non_filesystem_signature_is_not_mounted() -> None:
    policy = load_policy_text("version: 1\nrules:\n  - on_add: [{mount: {}}]\n")
    luks = Filesystem(type="crypto_LUKS", usage="crypto")
    ns = namespace(1, filesystem=luks)
    assert decide(added(ns), topology(ns), policy).actions == ()


def test_resize_grows_ext4_and_mounted_xfs() -> None:
    ns = namespace(1, label="scratch-a", size=2 * 2**30)
    prev = dataclasses.replace(ns, size_bytes=2**30)
    change = Change(ChangeType.NAMESPACE_RESIZED, namespace=ns, previous=prev)
    (grow,) = decide(change, topology(ns), POLICY).actions
    assert isinstance(grow, GrowSpec)
    assert (grow.source, grow.fstype, grow.target) == ("/dev/nvme0n1", "ext4", f"{ROOT}/scratch-a")
    xfs = namespace(2, fstype="xfs")
    change = Change(ChangeType.NAMESPACE_RESIZED, namespace=xfs, previous=xfs)
    (grow,) = decide(change, topology(xfs), POLICY).actions
    assert isinstance(grow, GrowSpec) and grow.target == f"{ROOT}/xfs-2"


def test_resize_skips_grow_it_cannot_do() -> None:
    vfat = namespace(9, fstype="vfat")
    change = Change(ChangeType.NAMESPACE_RESIZED, namespace=vfat, previous=vfat)
    plan = decide(change, topology(vfat), POLICY)
    assert plan.actions == () and any("not ext4 or xfs" in x for x in plan.explanation)
    xfs = namespace(9, fstype="xfs")
    plan = decide(Change(ChangeType.NAMESPACE_RESIZED, namespace=xfs), topology(xfs), POLICY)
    assert plan.rule == "raw"  # xfs rule wins first; it mounts, so grow has a target
    assert isinstance(plan.actions[0], GrowSpec)


def test_namespace_changed_runs_on_add_when_a_filesystem_appears() -> None:
    blank = namespace(1, fstype=None)
    formatted = namespace(1, label="scratch-new")
    change = Change(ChangeType.NAMESPACE_CHANGED, namespace=formatted, previous=blank)
    plan = decide(change, topology(formatted), POLICY)
    assert plan.rule == "scratch" and kinds(plan) == ["mount", "systemd", "exec"]


def test_namespace_changed_same_rule_same_state_does_nothing() -> None:
    ns = namespace(1, label="scratch-a")
    relabel = dataclasses.replace(ns, read_only=True)
    change = Change(ChangeType.NAMESPACE_CHANGED, namespace=relabel, previous=ns)
    plan = decide(change, topology(relabel), POLICY)
    assert plan.rule == "scratch" and plan.actions == ()
    assert "already applied" in plan.explanation[-1]


RULE_CHANGE = load_policy_text(
    """\
version: 1
rules:
  - name: old
    match: {fs_label: "old*"}
    on_add:
      - mount: {path: "/run/media/nvme-agent/old-{label}"}
    on_remove:
      - exec: {argv: [/usr/bin/bye, "{mountpoint}", "{label}"], env: {WHO: "{label}"}}
  - name: new
    match: {fs_label: "new*"}
    on_add:
      - mount: {path: "/run/media/nvme-agent/new-{label}"}
      - exec: {argv: [/usr/bin/hello, "{mountpoint}"]}
  - name: quiet
    match: {fs_label: "quiet*"}
    ignore: true
  - name: seven
    match: {nsid: 7}
    on_add:
      - mount: {path: "/run/media/nvme-agent/seven"}
    on_remove:
      - exec: {argv: [/usr/bin/seven-gone]}
""",
    "rule-change.yaml",
)


def changed(before: Namespace, after: Namespace) -> Change:
    return Change(ChangeType.NAMESPACE_CHANGED, namespace=after, previous=before)


def test_rule_change_undoes_the_old_rule_then_adds_the_new_one() -> None:
    """Issue 14.3: a change moving a namespace from rule A to rule B unmounts A's mount
    (gracefully: the device is still there) before B's on_add runs."""
    before, after = namespace(1, label="old-data"), namespace(1, label="new-data")
    plan = decide(changed(before, after), topology(after), RULE_CHANGE)
    assert plan.rule == "new"
    assert kinds(plan) == ["exec", "unmount", "mount", "exec"]
    bye, unmount, mount, hello = plan.actions
    assert isinstance(bye, ExecSpec) and isinstance(unmount, UnmountSpec)
    assert isinstance(mount, MountSpec) and isinstance(hello, ExecSpec)
    assert bye.argv == ("/usr/bin/bye", f"{ROOT}/old-old-data", "old-data")
    assert unmount.target == f"{ROOT}/old-old-data" and unmount.source == "/dev/nvme0n1"
    assert unmount.device_gone is False and unmount.on_busy == "signal"
    assert mount.target == f"{ROOT}/new-new-data"
    assert hello.argv == ("/usr/bin/hello", f"{ROOT}/new-new-data")
    # The old rule's hook sees the old rule and namespace, whatever the plan's env says.
    env = {**dict(plan.env), **dict(bye.env)}
    assert env["NVME_AGENT_RULE"] == "old" and env["MOUNTPOINT"] == f"{ROOT}/old-old-data"
    assert env["ID_FS_LABEL"] == "old-data" and env["WHO"] == "old-data"
    assert dict(plan.env)["MOUNTPOINT"] == f"{ROOT}/new-new-data"
    assert hello.env == ()
    undoing = "rules[0] 'old' matched before this change: undoing it"
    assert any(undoing in line for line in plan.explanation)


def test_rule_change_to_no_rule_or_an_ignore_rule_only_undoes() -> None:
    before = namespace(1, label="old-data")
    for label in ("unrelated", "quiet-now"):
        after = namespace(1, label=label)
        plan = decide(changed(before, after), topology(after), RULE_CHANGE)
        assert kinds(plan) == ["exec", "unmount"], label
        unmount = plan.actions[1]
        assert isinstance(unmount, UnmountSpec) and not unmount.device_gone


def test_rule_change_from_an_ignore_rule_undoes_nothing() -> None:
    after = namespace(1, label="new-data")
    plan = decide(changed(namespace(1, label="quiet-x"), after), topology(after), RULE_CHANGE)
    assert kinds(plan) == ["mount", "exec"]


def test_rule_change_from_a_blank_disk_runs_the_old_hooks_but_unmounts_nothing() -> None:
    # rule 'seven' matched the blank namespace: its hooks ran, its mount was skipped
    blank, after = namespace(7, fstype=None), namespace(7, label="new-data")
    plan = decide(changed(blank, after), topology(after), RULE_CHANGE)
    assert kinds(plan) == ["exec", "mount", "exec"]
    hook = plan.actions[0]
    assert isinstance(hook, ExecSpec) and hook.argv == ("/usr/bin/seven-gone",)


def test_explain_shows_the_undo_of_a_rule_change(capsys: pytest.CaptureFixture[str]) -> None:
    before, after = namespace(1, label="old-data"), namespace(1, label="new-data")
    explain_cmd.report(Reporter(False), RULE_CHANGE, [(changed(before, after), topology(after))])
    text = capsys.readouterr().out
    assert "rules[0] 'old': no: fs_label 'new-data' does not match 'old*'" in text
    assert "rules[0] 'old' matched before this change: undoing it first" in text
    assert f"2. unmount {ROOT}/old-old-data (graceful, on busy: signal)" in text
    assert f"3. mount /dev/nvme0n1 on {ROOT}/new-new-data" in text


def captured_wwids() -> list[str]:
    """The wwids udev reported for the namespaces of the real QEMU guest captures."""
    found: set[str] = set()
    for path in CAPTURES.glob("*/state-13-udev-export-db.txt"):
        for line in path.read_text().splitlines():
            if line.startswith("E: ID_WWN="):
                found.add(line.split("=", 1)[1])
    return sorted(found)


def test_captured_qemu_identities_render_distinct_values() -> None:
    """Issue 14.4: the 64-byte bound cut every QEMU wwid before its NSID digits, so every
    namespace rendered the same {identity} and {wwid}."""
    wwids = captured_wwids()
    assert len(wwids) >= 4
    assert all(len(f"wwid:{w}".encode()) > MAX_COMPONENT_BYTES for w in wwids)
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add:\n"
        '      - mount: {path: "/run/media/nvme-agent/{identity}"}\n'
        '      - exec: {argv: [/usr/bin/hook, "{wwid}", "{identity}"]}\n'
    )
    targets, args = set(), set()
    for wwid in wwids:
        nsid = int(wwid.rsplit("-", 1)[1], 16)
        ns = namespace(nsid, wwid=wwid, label="data")
        assert ns.identity.weak and str(ns.identity) == f"wwid:{wwid}"
        mount, hook = decide(added(ns), topology(ns), policy).actions
        assert isinstance(mount, MountSpec) and isinstance(hook, ExecSpec)
        assert len(mount.target.rsplit("/", 1)[1].encode()) <= MAX_COMPONENT_BYTES
        targets.add(mount.target)
        args.add(hook.argv[1:])
    assert len(targets) == len(wwids)
    assert len(args) == len(wwids)


def test_read_only_namespace_is_mounted_read_only() -> None:
    ns = namespace(1, label="scratch-a", read_only=True)
    mount = decide(added(ns), topology(ns), POLICY).actions[0]
    assert isinstance(mount, MountSpec) and mount.read_only


def test_controller_attributes_come_from_the_topology() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - match: {serial: RIGCTRL0, transport: pcie, model: 'QEMU*'}\n"
        "    on_add: [{signal: {signal: usr1, process: app}}]\n"
    )
    ns = namespace(1, serial=None, model=None)
    plan = decide(added(ns), topology(ns), policy)
    (sig,) = plan.actions
    assert isinstance(sig, SignalSpec) and (sig.signal, sig.process) == ("SIGUSR1", "app")
    assert decide(added(ns), TopologySnapshot(), policy).actions == ()


def test_matchers_any_not_property_size_nsid_ids() -> None:
    policy = load_policy_text(
        """\
version: 1
rules:
  - name: m
    match:
      nsid: [1, 2]
      any:
        - property: {ID_MODEL: "QEMU*"}
        - uuid: "6A2B*"
      not: {fs_type: [swap, vfat]}
      size_min: 100MiB
      size_max: 1GiB
      subsysnqn: "nqn.2019-08.org.qemu:*"
      identity_weak: false
""",
    )

    def rule_for(ns: Namespace) -> str | None:
        return decide(added(ns), topology(ns), policy).rule

    good = namespace(2, uuid="6a2b0000-0000-4000-8000-000000000001")
    assert rule_for(good) == "m"
    assert rule_for(dataclasses.replace(good, nsid=3)) is None
    assert rule_for(dataclasses.replace(good, size_bytes=2 * 2**30)) is None
    assert rule_for(dataclasses.replace(good, fs=Filesystem("vfat"))) is None
    assert rule_for(namespace(2)) is None  # weak identity, no uuid
    prop = dataclasses.replace(
        namespace(1, props={"ID_MODEL": "QEMU NVMe"}), identity=good.identity
    )
    assert rule_for(prop) == "m"


def test_controller_changes_have_no_plan() -> None:
    from support.policy import controller

    change = Change(ChangeType.CONTROLLER_ADDED, controller=controller())
    plan = decide(change, TopologySnapshot(), POLICY)
    assert plan.actions == () and plan.key == "ctrl:nvme0"


HOSTILE = ["../../etc", "$(reboot)", "a/b", "é" * 150, "\n", "..", "-rf", "/", "x\x00y"]


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_stay_inside_the_mount_root_and_their_argument(label: str) -> None:
    ns = namespace(1, label="scratch-" + label)
    plan = decide(added(ns), topology(ns), POLICY)
    mount, unit, hook = plan.actions
    assert isinstance(mount, MountSpec) and isinstance(hook, ExecSpec)
    assert isinstance(unit, SystemdSpec)
    rel = mount.target[len(ROOT) + 1 :]
    assert mount.target.startswith(ROOT + "/") and "/" not in rel and rel not in (".", "..")
    assert len(rel.encode()) <= 64 + len("scratch-")
    assert len(hook.argv) == 3 and hook.argv[2] == rel
    assert "/" not in unit.unit and "\n" not in unit.unit


def test_empty_label_falls_back_to_nsid() -> None:
    policy = load_policy_text("version: 1\nrules:\n  - on_add: [{mount: {}}]\n")
    ns = namespace(5, label=None)
    mount = decide(added(ns), topology(ns), policy).actions[0]
    assert isinstance(mount, MountSpec) and mount.target == f"{ROOT}/ns5"
    part = partition("nvme0n5", 2, label="")
    mount = decide(added(ns, part), topology(ns), policy).actions[0]
    assert isinstance(mount, MountSpec) and mount.target == f"{ROOT}/ns5p2"


def test_unrenderable_mount_refuses_the_whole_add_plan() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add:\n      - mount: {}\n      - exec: {argv: [/bin/true]}\n"
    )
    ns = namespace(1, label="x")
    bad = dataclasses.replace(ns, devnode=None)
    plan = decide(added(bad), topology(bad), policy)
    assert plan.actions == ()
    assert plan.explanation[-1].startswith(REFUSED)


def test_decide_is_pure_and_deterministic() -> None:
    ns = namespace(1, label="scratch-a")
    snap = topology(ns)
    before = json.dumps(snap.to_dict(), sort_keys=True)
    first = decide(added(ns), snap, POLICY)
    assert decide(added(ns), snap, POLICY) == first
    assert json.dumps(snap.to_dict(), sort_keys=True) == before


# --- nvme-agent explain ------------------------------------------------------------------


class FakeFinder:
    def __init__(self, *namespaces: Namespace) -> None:
        self.snap = topology(*namespaces)

    def find_device(self, devnode: str) -> tuple[Namespace, Partition | None] | None:
        for ns in self.snap.namespaces:
            if ns.devnode == devnode:
                return ns, None
            for p in ns.partitions:
                if p.devnode == devnode:
                    return ns, p
        return None

    def snapshot(self) -> TopologySnapshot:
        return self.snap


def test_explain_device_change_kinds() -> None:
    from nvme_agent.cli.exits import NotFoundError, UsageError

    part = partition("nvme0n1", 1, label="p")
    finder = FakeFinder(namespace(1, label="scratch-a", partitions=(part,)))
    change, _ = explain_cmd.device_change(finder, "/dev/nvme0n1", "add")
    assert change.type is ChangeType.NAMESPACE_ADDED
    change, _ = explain_cmd.device_change(finder, "/dev/nvme0n1p1", "eject")
    assert change.type is ChangeType.PARTITION_REMOVED and change.reason == "eject"
    with pytest.raises(NotFoundError):
        explain_cmd.device_change(finder, "/dev/nvme9n9", "add")
    with pytest.raises(UsageError):
        explain_cmd.device_change(finder, "/dev/nvme0n1p1", "resize")


def test_explain_report_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    ns = namespace(1, label="scratch-a")
    items = [(added(ns), topology(ns)), (removed(ns), TopologySnapshot())]
    explain_cmd.report(Reporter(False), POLICY, items)
    text = capsys.readouterr().out
    assert "rules[0] 'keep-off': no: fs_label 'scratch-a' does not match 'system*'" in text
    assert "rules[1] 'scratch': matched" in text
    assert f"1. mount /dev/nvme0n1 on {ROOT}/scratch-a" in text
    assert "unmount /run/media/nvme-agent/scratch-a (device gone: lazy detach)" in text
    explain_cmd.report(Reporter(True), POLICY, items)
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in records] == ["plan", "plan"]
    assert records[0]["nsid"] == 1 and records[0]["rule"] == "scratch"
    assert [a["kind"] for a in records[1]["actions"]] == ["systemd", "unmount"]
    assert records[0]["verdicts"][1]["matched"] is True


def test_explain_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nvme_agent.cli.main import main

    assert main(["explain"]) == 2
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nrules: 3\n")
    assert main(["explain", "--policy", str(bad), "/dev/nvme9n9"]) == 1
    assert "rules: expected a list of rules" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\n")
    # Not a device udev knows: "no such device" (3), not a usage error.
    assert main(["explain", "--policy", str(good), str(tmp_path / "no-such-device")]) == 3


def test_explain_bundled_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nvme_agent.harness.scenario")
    from nvme_agent.cli.main import main

    scenario = (
        Path(__file__).resolve().parent.parent / "nvme_agent/data/scenarios/qemu-hot-swap.yaml"
    )
    if not scenario.exists():
        pytest.skip("bundled scenario not present")
    assert main(["explain", "--json", "--scenario", str(scenario)]) == 0
    plans = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all(p["type"] == "plan" and "nsid" in p for p in plans)
    ns1 = [p for p in plans if p["nsid"] == 1]
    # hot swap: coldplug add, removal (implied unmount, device gone), then the new image's add
    assert [p["change"] for p in ns1[:3]] == [
        "namespace-added",
        "namespace-removed",
        "namespace-added",
    ]
    assert len({p["key"] for p in ns1}) == 1
    (unmount,) = ns1[1]["actions"]
    assert unmount["kind"] == "unmount" and unmount["device_gone"] is True
    assert ns1[0]["actions"][0]["target"] != ns1[2]["actions"][0]["target"]


def test_a_spec_streams_as_asdict_would_and_holds_only_immutable_values() -> None:
    specs: list[ActionSpec] = [
        MountSpec(source="/dev/nvme0n1", target="/srv/a", mount_root="/srv", owner="u"),
        UnmountSpec(source="/dev/nvme0n1", target="/srv/a", mount_root="/srv"),
        ExecSpec(argv=("/bin/true", "x"), env=(("A", "1"), ("B", "2")), user="nobody"),
        SystemdSpec(verb="start", unit="a.service"),
        SignalSpec(pidfile="/run/a.pid"),
        GrowSpec(source="/dev/nvme0n1", fstype="ext4", target="/srv/a"),
    ]
    for spec in specs:
        assert spec_to_dict(spec) == asdict(spec)
        for f in fields(spec):
            value = getattr(spec, f.name)
            flat = value if isinstance(value, tuple) else (value,)
            items = [v for x in flat for v in (x if isinstance(x, tuple) else (x,))]
            assert all(isinstance(v, str | int | float | bool | type(None)) for v in items), f
