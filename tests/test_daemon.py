"""The daemon's life through the real pyudev path (umockdev bed): notify, reload, control,
eject, restart recovery.  Actions run in dry-run mode here; real mounts are in test_daemon_real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Agent, dry_mount_root, is_result, is_type

from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig, PartitionConfig

pytestmark = [
    pytest.mark.umockdev,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

POLICY_A = """\
version: 1
defaults:
  mount_root: {root}
rules:
  - name: rule-a
    match: {{fs_type: ext4}}
    on_add:
      - mount: {{path: "{root}/{{label}}"}}
"""

POLICY_B = POLICY_A.replace("rule-a", "rule-b")

BROKEN = """\
version: 1
rules:
  - name: broken
    match: {fs_typo: ext4}
"""


@pytest.fixture(params=[True, False], ids=["multipath", "no-multipath"])
def nvme0_bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    """A fresh fake guest with the controller nvme0 (serial SN0001), in both devpath layouts."""
    with Bed(multipath=request.param) as b:
        b.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        yield b


def write_policy(path: Path, template: str, root: Path) -> Path:
    path.write_text(template.format(root=root))
    return path


@pytest.fixture
def mnt(tmp_path: Path) -> Path:
    return dry_mount_root(tmp_path)


@pytest.fixture
def agent(nvme0_bed: Bed, tmp_path: Path, mnt: Path) -> Iterator[Agent]:
    policy = write_policy(tmp_path / "policy.yaml", POLICY_A, mnt)
    (tmp_path / "agent").mkdir()
    proc = Agent(policy, tmp_path / "agent", nvme0_bed.env(os.environ)).start()
    yield proc
    proc.stop()


def ns(nsid: int, label: str = "data", fs: str | None = "ext4", gen: int = 0) -> NamespaceConfig:
    return NamespaceConfig("nvme0", nsid=nsid, fs=fs, label=label, generation=gen)


def test_ready_status_and_a_hot_add_is_planned(nvme0_bed: Bed, agent: Agent, mnt: Path) -> None:
    assert "READY=1" in agent.process.notified
    assert "STATUS=0 namespaces, 0 mounted, 0 failures" in agent.process.notified
    nvme0_bed.add_namespace(ns(1, "data"))
    added = agent.wait_for(is_type("namespace-added", 1))
    assert added["namespace"]["identity_weak"] is True
    plan = agent.wait_for(is_type("plan", 1))
    assert plan["rule"] == "rule-a"
    assert plan["actions"][0]["target"] == f"{mnt}/data"
    result = agent.wait_for(is_result("mount", 1))
    assert result["status"] == "dry-run"
    agent.wait_notify("STATUS=1 namespaces, 0 mounted, 0 failures")


def test_hot_swap_is_remove_then_add_with_new_contents(nvme0_bed: Bed, agent: Agent) -> None:
    nvme0_bed.add_namespace(ns(1, "old"))
    agent.wait_for(is_type("namespace-added", 1))
    nvme0_bed.remove_namespace("nvme0", 1)
    removed = agent.wait_for(is_type("namespace-removed", 1))
    assert removed["namespace"]["fs"]["label"] == "old"
    unmount = agent.wait_for(is_result("unmount", 1))
    assert unmount["status"] == "dry-run"
    nvme0_bed.add_namespace(ns(1, "new", fs="ext4", gen=1))
    added = agent.wait_for(is_type("namespace-added", 1))
    assert added["namespace"]["fs"]["label"] == "new"
    assert not [r for r in agent.seen if r.get("type") == "namespace-changed"]


def test_sighup_with_broken_policy_keeps_the_old_one(
    nvme0_bed: Bed, agent: Agent, tmp_path: Path
) -> None:
    agent.policy.write_text(BROKEN)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    failed = agent.wait_for(is_type("reload-failed"))
    assert any("fs_typo" in e for e in failed["errors"])
    assert any(":4:" in e for e in failed["errors"]), failed["errors"]  # file:line
    agent.wait_notify("RELOADING=1")
    nvme0_bed.add_namespace(ns(2, "next"))
    plan = agent.wait_for(is_type("plan", 2))
    assert plan["rule"] == "rule-a"


def test_control_reload_swaps_policy_and_reports_errors(
    nvme0_bed: Bed, agent: Agent, mnt: Path
) -> None:
    write_policy(agent.policy, POLICY_B, mnt)
    answer = agent.control({"cmd": "reload"})
    assert answer == {"ok": True, "generation": 2}
    agent.wait_notify("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") for line in agent.process.notified)
    nvme0_bed.add_namespace(ns(3))
    assert agent.wait_for(is_type("plan", 3))["rule"] == "rule-b"
    agent.policy.write_text(BROKEN)
    answer = agent.control({"cmd": "reload"})
    assert answer["ok"] is False and answer["generation"] == 2
    assert any("fs_typo" in e for e in answer["errors"])


def test_bad_control_requests_get_errors_and_harm_nothing(agent: Agent) -> None:
    path = str(agent.runtime_dir / "control.sock")
    for payload in (b"not json\n", b"[1,2]\n", b'{"cmd": 5}\n', b'{"cmd": "nope"}\n'):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(payload)
            answer = json.loads(s.makefile().readline())
        assert answer["ok"] is False and answer["error"]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"x" * (200 * 1024))
        answer = json.loads(s.makefile().readline() or '{"ok": false, "error": "closed"}')
        assert answer["ok"] is False
    assert agent.control({"cmd": "status"})["ok"] is True


def test_events_during_reloads_are_all_handled_exactly_once(
    nvme0_bed: Bed, agent: Agent, mnt: Path
) -> None:
    count = 170  # 3 uevents each (bdi, ng, disk): 510 events during 20 reloads
    reload_answers: list[dict[str, object]] = []

    def reloader() -> None:
        for i in range(20):
            template = POLICY_B if i % 2 else POLICY_A
            write_policy(agent.policy, template, mnt)
            reload_answers.append(agent.control({"cmd": "reload"}))

    thread = threading.Thread(target=reloader)
    thread.start()
    nvme0_bed.burst(ns(100 + i, f"b{i}") for i in range(count))
    thread.join()
    added = agent.collect(lambda r: r.get("type") == "namespace-added", count, timeout=120)
    assert sorted(r["nsid"] for r in added) == list(range(100, 100 + count))
    agent.cursor = 0  # plans interleave with the changes: scan the stream from the start
    plans = agent.collect(lambda r: r.get("type") == "plan", count, timeout=120)
    assert sorted(r["nsid"] for r in plans) == list(range(100, 100 + count))
    assert all(a["ok"] for a in reload_answers) and len(reload_answers) == 20
    status = agent.control({"cmd": "status"})
    assert len(status["namespaces"]) == count
    assert status["counters"]["changes"]["namespace-added"] == count


def test_eject_runs_the_remove_plan_and_the_later_removal_does_not_repeat_it(
    nvme0_bed: Bed, agent: Agent
) -> None:
    nvme0_bed.add_namespace(ns(5, "ej"))
    agent.wait_for(is_result("mount", 5))
    answer = agent.control({"cmd": "eject", "nsid": 5})
    assert answer["ok"] is True, answer
    assert [r["action"] for r in answer["results"]] == ["unmount"]
    agent.wait_for(is_type("ejected", 5))
    status = agent.control({"cmd": "status"})
    assert [n["ejected"] for n in status["namespaces"] if n["nsid"] == 5] == [True]
    nvme0_bed.remove_namespace("nvme0", 5)
    agent.wait_for(is_type("namespace-removed", 5))
    nvme0_bed.add_namespace(ns(6, "after"))
    agent.wait_for(is_type("plan", 6))
    plans_for_5 = [r for r in agent.seen if r.get("type") == "plan" and r.get("nsid") == 5]
    assert [p["change"] for p in plans_for_5] == ["namespace-added", "namespace-removed"]
    assert agent.control({"cmd": "eject", "nsid": 42})["ok"] is False


def test_kill_9_then_restart_logs_what_happened_while_down(
    nvme0_bed: Bed, agent: Agent, tmp_path: Path
) -> None:
    nvme0_bed.add_namespace(ns(1, "stays"))
    nvme0_bed.add_namespace(ns(2, "goes"))
    # Plans of different namespaces run in parallel: wait for both, in any order.
    agent.wait_each([is_result("mount", 1), is_result("mount", 2)])
    agent.kill()
    nvme0_bed.remove_namespace("nvme0", 2)
    nvme0_bed.add_namespace(ns(3, "arrives"))
    again = Agent(agent.policy, agent.workdir, nvme0_bed.env(os.environ)).start()
    try:
        status = again.control({"cmd": "status"})
        assert sorted(n["nsid"] for n in status["namespaces"]) == [1, 3]
        history = again.control({"cmd": "history"})["records"]
        down = [
            (r["type"], r["nsid"])
            for r in history
            if "while the agent was down" in str(r.get("reason"))
        ]
        assert sorted(down) == [("namespace-added", 3), ("namespace-removed", 2)]
        # nsid 1 was already handled before the kill: no second plan for it.
        assert status["counters"]["changes"].get("namespace-added") == 1
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("point", ["state", "history"])
def test_a_kill_between_the_writes_of_a_batch_records_each_change_once(
    nvme0_bed: Bed, tmp_path: Path, mnt: Path, point: str
) -> None:
    """Found by issue 16's soak: a daemon killed after a batch was decided and streamed but
    before its state reached the disk had already appended the batch to the history; the
    next start, not finding the change in the state, recorded it again (and the other order
    lost it).  Now the state carries the batch's records and the history follows it: killed
    before the state (``state``), the next start records the change as one that happened
    while it was down; killed after it (``history``), it appends the record the killed run
    could not."""
    from support.kill_agent import POINT_ENV, TRIGGER_ENV

    from nvme_agent.harness.agent import AgentProcess

    class KillAgent(AgentProcess):
        def command(self) -> list[str]:
            script = Path(__file__).parent / "support" / "kill_agent.py"
            return [sys.executable, str(script), *super().command()[3:]]

    policy = write_policy(tmp_path / "policy.yaml", POLICY_A, mnt)
    workdir = tmp_path / "agent"
    workdir.mkdir()
    trigger = tmp_path / "kill"
    env = nvme0_bed.env(os.environ) | {TRIGGER_ENV: str(trigger), POINT_ENV: point}
    first = Agent(policy, workdir, env)
    first.process = KillAgent(policy, env, dry_run=True, workdir=workdir)
    first.start()
    trigger.touch()
    nvme0_bed.add_namespace(ns(7, "killed"))
    assert first.proc is not None
    assert first.proc.wait(timeout=60) == -signal.SIGKILL
    first.kill()
    again = Agent(policy, workdir, nvme0_bed.env(os.environ)).start()
    try:
        history = again.control({"cmd": "history"})["records"]
        added = [r for r in history if r["type"] == "namespace-added" and r["nsid"] == 7]
        # Killed before its plan ran, the disk is not handled: the restart runs the plan
        # again, which the history says as a re-run, not as a second addition.
        rerun = [r for r in added if "interrupted by the last run" in str(r.get("reason"))]
        assert len(rerun) == (point == "history"), added
        (change,) = [r for r in added if r not in rerun]
        down = "while the agent was down" in str(change.get("reason"))
        assert down is (point == "state"), change
    finally:
        assert again.stop() == 0


def test_sigterm_sends_stopping_and_exits_zero(agent: Agent) -> None:
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_notify("STOPPING=1")
    assert agent.proc.wait(30) == 0


def test_burst_of_256_namespaces_in_one_rescan_is_recorded_in_order(
    nvme0_bed: Bed, agent: Agent
) -> None:
    nvme0_bed.burst(ns(1000 + i, f"n{i}") for i in range(256))
    added = agent.collect(is_type("namespace-added"), 256, timeout=120)
    assert [r["nsid"] for r in added] == list(range(1000, 1256))
    seqnums = [r["seqnum"] for r in added]
    assert seqnums == sorted(seqnums) and len(set(seqnums)) == 256
    history = agent.control({"cmd": "history", "limit": 0})["records"]
    recorded = [r["nsid"] for r in history if r["type"] == "namespace-added"]
    assert recorded == list(range(1000, 1256))


def test_resize_partitions_and_a_filesystem_appearing(nvme0_bed: Bed, agent: Agent) -> None:
    nvme0_bed.add_namespace(
        NamespaceConfig(
            "nvme0",
            nsid=7,
            size_bytes=256 << 20,
            partitions=(
                PartitionConfig(1, 100 << 20, fs="ext4", label="p1", partlabel="rig-data"),
                PartitionConfig(2, 100 << 20),
            ),
        )
    )
    agent.wait_for(is_type("namespace-added", 7))
    parts = agent.collect(is_type("partition-added", 7), 2, timeout=30)
    assert [p["partition"]["number"] for p in parts] == [1, 2]
    assert parts[0]["partition"]["partlabel"] == "rig-data"
    nvme0_bed.resize_namespace("nvme0", 7, 512 << 20)
    resized = agent.wait_for(is_type("namespace-resized", 7))
    assert (resized["previous"]["size_bytes"], resized["namespace"]["size_bytes"]) == (
        256 << 20,
        512 << 20,
    )
    nvme0_bed.add_namespace(ns(8, fs=None))
    agent.wait_for(is_type("namespace-added", 8))
    nvme0_bed.change_namespace("nvme0", 8, fs="ext4", label="late")
    changed = agent.wait_for(is_type("namespace-changed", 8))
    assert changed["namespace"]["fs"]["label"] == "late"
    plan = agent.wait_for(is_type("plan", 8))
    assert plan["rule"] == "rule-a"  # the filesystem that appeared is now mountable
    status = agent.control({"cmd": "status"})
    assert [n["nsid"] for n in status["namespaces"]] == [7, 8]  # once each, partitions or not
    assert [len(n["partitions"]) for n in status["namespaces"]] == [2, 0]


def test_reconcile_on_reload_mounts_what_now_matches(
    nvme0_bed: Bed, agent: Agent, mnt: Path
) -> None:
    agent.policy.write_text(
        POLICY_A.format(root=mnt).replace("match: {fs_type: ext4}", "match: {fs_label: only-this}")
    )
    assert agent.control({"cmd": "reload"})["ok"] is True
    nvme0_bed.add_namespace(ns(9, "other"))
    assert agent.wait_for(is_type("plan", 9))["rule"] is None
    policy_b = POLICY_B.format(root=mnt).replace("rules:", "  reconcile_on_reload: true\nrules:")
    agent.policy.write_text(policy_b)
    assert agent.control({"cmd": "reload"})["ok"] is True
    plan = agent.wait_for(is_type("plan", 9))
    assert plan["rule"] == "rule-b" and plan["actions"][0]["kind"] == "mount"
    # A second reload of the same policy changes no rule: no second mount plan.
    assert agent.control({"cmd": "reload"})["ok"] is True
    nvme0_bed.add_namespace(ns(10, "marker"))
    agent.wait_for(is_type("plan", 10))
    plans_9 = [r for r in agent.seen if r.get("type") == "plan" and r.get("nsid") == 9]
    assert len(plans_9) == 2


def _cli(bed: Bed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvme_agent", *args],
        env=bed.env(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_status_history_and_reload_against_the_daemon(
    nvme0_bed: Bed, agent: Agent, tmp_path: Path
) -> None:
    nvme0_bed.add_namespace(ns(4, "cli"))
    agent.wait_for(is_result("mount", 4))
    run_dir = str(agent.runtime_dir)
    out = _cli(nvme0_bed, "status", "--json", "--settle", "30", "--runtime-dir", run_dir)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all("type" in r and "nsid" in r for r in lines)
    nss = [r for r in lines if r["type"] == "namespace"]
    assert [(r["nsid"], r["rule"], r["identity_weak"]) for r in nss] == [(4, "rule-a", True)]
    human = _cli(nvme0_bed, "status", "--runtime-dir", run_dir)
    assert "source: daemon" in human.stdout and "weak" in human.stdout
    hist = _cli(
        nvme0_bed, "history", "--json", "--nsid", "4", "--state-dir", str(agent.workdir / "state")
    )
    assert [json.loads(line)["type"] for line in hist.stdout.splitlines()] == ["namespace-added"]
    assert _cli(nvme0_bed, "reload", "--runtime-dir", run_dir).returncode == 0
    agent.policy.write_text(BROKEN)
    bad = _cli(nvme0_bed, "reload", "--runtime-dir", run_dir)
    assert bad.returncode == 1 and "fs_typo" in bad.stderr and "NOT reloaded" in bad.stderr


def test_cli_status_without_a_daemon_reads_udev(nvme0_bed: Bed, tmp_path: Path) -> None:
    nvme0_bed.add_namespace(ns(6, "direct"))
    out = _cli(nvme0_bed, "status", "--json", "--runtime-dir", str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr
    nss = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["type"], r["nsid"], r["fs"]["label"]) for r in nss if r["type"] == "namespace"] == [
        ("namespace", 6, "direct")
    ]


def test_udev_events_are_handled_while_a_reload_parse_waits(
    nvme0_bed: Bed, tmp_path: Path, mnt: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", POLICY_A, mnt)
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    (tmp_path / "agent").mkdir()
    agent = Agent(policy, tmp_path / "agent", nvme0_bed.env(os.environ), gate=gate).start()
    try:
        write_policy(policy, POLICY_B, mnt)
        answer: dict[str, object] = {}
        asking = threading.Thread(target=lambda: answer.update(agent.control({"cmd": "reload"})))
        asking.start()
        agent.wait_notify("RELOADING=1")  # the parse is under way, waiting on the gate
        nvme0_bed.add_namespace(ns(20, "during"))
        assert agent.wait_for(is_type("plan", 20))["rule"] == "rule-a"  # the old policy acts
        assert agent.control({"cmd": "status"})["ok"] is True
        assert asking.is_alive() and answer == {}
        with open(gate, "wb"):  # the parse goes on once the gate closes
            pass
        asking.join(60)
        assert answer == {"ok": True, "generation": 2}
        nvme0_bed.add_namespace(ns(21, "after"))
        assert agent.wait_for(is_type("plan", 21))["rule"] == "rule-b"
    finally:
        with contextlib.suppress(OSError):  # a failed test must not leave the parse waiting
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
        assert agent.stop() == 0


def test_an_unwritable_history_is_logged_once_and_every_plan_still_runs(
    nvme0_bed: Bed, tmp_path: Path, mnt: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", POLICY_A, mnt)
    (tmp_path / "agent" / "state" / "history.jsonl").mkdir(parents=True)  # appends fail
    nvme0_bed.add_namespace(ns(1, "cold"))
    nvme0_bed.add_namespace(ns(2, "cold2"))
    agent = Agent(policy, tmp_path / "agent", nvme0_bed.env(os.environ)).start()  # coldplug went on
    try:
        status = agent.control({"cmd": "status"})
        assert [n["nsid"] for n in status["namespaces"]] == [1, 2]
        assert status["counters"]["changes"]["namespace-added"] == 2
        nvme0_bed.add_namespace(ns(3, "hot"))
        assert agent.wait_for(is_type("plan", 3))["rule"] == "rule-a"
        nvme0_bed.remove_namespace("nvme0", 1)
        removal = agent.wait_for(is_type("plan", 1))
        assert removal["change"] == "namespace-removed" and removal["actions"]
        assert agent.control({"cmd": "history"}) == {"ok": True, "records": []}
    finally:
        log_text = agent.process.tail(limit=1 << 20)
        assert agent.stop() == 0
    failures = [line for line in log_text.splitlines() if "appending to history" in line]
    assert len(failures) == 1 and "Is a directory" in failures[0], failures


def test_a_plan_the_policy_refuses_is_logged_once_as_a_warning(
    nvme0_bed: Bed, tmp_path: Path, mnt: Path
) -> None:
    text = POLICY_A.replace("rules:", "  allowed_filesystems: [xfs]\nrules:").replace(
        "{fs_type: ext4}", "{fs_type: [ext4, xfs]}"
    )
    policy = write_policy(tmp_path / "policy.yaml", text, mnt)
    (tmp_path / "agent").mkdir()
    agent = Agent(policy, tmp_path / "agent", nvme0_bed.env(os.environ)).start()
    try:
        nvme0_bed.add_namespace(ns(4, "notallowed"))
        plan = agent.wait_for(is_type("plan", 4))
        assert plan["actions"] == [] and any(
            line.startswith("refused: ") for line in plan["explanation"]
        )
        assert agent.control({"cmd": "status"})["counters"]["plans_refused"] == 1
    finally:
        log_text = agent.process.tail(limit=1 << 20)
        assert agent.stop() == 0
    warnings = [line for line in log_text.splitlines() if line.startswith("nvme-agent[warning]")]
    refused = [line for line in warnings if "refused" in line]
    assert len(refused) == 1, warnings
    assert "nsid=4" in refused[0] and "/dev/" in refused[0]
    assert "'ext4' is not in allowed_filesystems" in refused[0]
