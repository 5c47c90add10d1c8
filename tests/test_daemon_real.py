"""The daemon with REAL mounts: fake udev (umockdev bed) in front of loop devices holding real
filesystems.  Root only; this is where eject, hot-remove and restart recovery are proven."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.daemon import Agent, is_result, real_mount_root
from support.marks import bed_as_root

from nvme_agent.actions import mountinfo
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig, PartitionConfig
from nvme_agent.harness.real import RealBacking
from nvme_agent.outputs.state import History, StateFile
from nvme_agent.service.persist import merge

pytestmark = bed_as_root()

POLICY = """\
version: 1
defaults:
  mount_root: {root}
rules:
  - name: data
    match: {{fs_type: [ext4, xfs]}}
    on_add:
      - mount: {{path: "{root}/{{label}}"}}
    on_remove:
      - unmount: {{on_busy: fail, timeout: 5}}
"""


def saved_state(workdir: Path) -> Any:
    """The daemon's state as it is on disk now: its checkpoint plus its log."""
    files = StateFile(workdir / "run" / "topology.json")
    return merge(files.load(), files.load_log())


#: Holds a file open under the mount until its stdin closes.
HOLDER = "import sys; f = open(sys.argv[1], 'w'); print('ready', flush=True); sys.stdin.read()"


class Rig:
    """A bed, real loop-backed namespaces, and the daemon acting for real."""

    def __init__(self, bed: Bed, backing: RealBacking, tmp: Path, root: Path) -> None:
        self.bed = bed
        self.backing = backing
        self.root = root
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(POLICY.format(root=self.root))
        self.workdir = tmp / "agent"
        self.workdir.mkdir()

    def agent(self) -> Agent:
        return Agent(self.policy, self.workdir, self.bed.env(os.environ), dry_run=False).start()

    def add(self, nsid: int, label: str, fs: str = "ext4") -> NamespaceConfig:
        cfg = self.backing.back(
            NamespaceConfig("nvme0", nsid=nsid, fs=fs, label=label), lambda record, text: None
        )
        self.bed.add_namespace(cfg)
        return cfg

    def mounted(self) -> dict[str, str]:
        """target -> source of every mount below our mount root."""
        return {
            m.mountpoint: m.source
            for m in mountinfo.read()
            if m.mountpoint.startswith(str(self.root) + "/")
        }


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with (
        real_mount_root() as root,
        Bed(multipath=True) as bed,
        RealBacking(tmp_path / "images", str(root)) as b,
    ):
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        yield Rig(bed, b, tmp_path, root)


def test_hot_remove_lazily_detaches_the_dead_mount(rig: Rig) -> None:
    agent = rig.agent()
    try:
        cfg = rig.add(1, "data")
        assert agent.wait_for(is_result("mount", 1))["status"] == "ok"
        target = str(rig.root / "data")
        assert rig.mounted() == {target: cfg.devname}
        subprocess.run(["losetup", "-d", str(cfg.devname)], check=True)  # the disk is gone
        rig.bed.remove_namespace("nvme0", 1)
        result = agent.wait_for(is_result("unmount", 1))
        assert result["status"] == "ok", result
        assert "lost" in result["message"]
        assert rig.mounted() == {}
        assert not (rig.root / "data").exists()  # the directory we created is gone too
    finally:
        assert agent.stop() == 0


def test_eject_of_a_busy_mount_names_the_holder_and_keeps_the_mount(rig: Rig) -> None:
    agent = rig.agent()
    holder = None
    try:
        rig.add(2, "busy")
        assert agent.wait_for(is_result("mount", 2))["status"] == "ok"
        target = rig.root / "busy"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOLDER,
                str(target / "file"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        answer = agent.control({"cmd": "eject", "nsid": 2})
        assert answer["ok"] is False
        assert str(holder.pid) in str(answer["holders"]) + answer["error"]
        assert str(target) in rig.mounted()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "nvme_agent",
                "eject",
                "--nsid",
                "2",
                "--runtime-dir",
                str(agent.runtime_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 1
        assert "NOT safe" in out.stdout and str(holder.pid) in out.stdout
        holder.communicate("", timeout=10)  # the holder closes its file and exits
        answer = agent.control({"cmd": "eject", "nsid": 2})
        assert answer["ok"] is True, answer
        assert rig.mounted() == {}
        assert not target.exists()
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        assert agent.stop() == 0


def test_kill_9_mid_burst_then_restart_ends_with_exactly_the_right_mounts(rig: Rig) -> None:
    agent = rig.agent()
    first = [rig.add(10, "keep"), rig.add(11, "vanish")]
    mounts = agent.wait_each([is_result("mount", 10), is_result("mount", 11)])
    assert [r["status"] for r in mounts] == ["ok", "ok"]
    burst = [
        rig.backing.back(
            NamespaceConfig("nvme0", nsid=20 + i, fs="ext4", label=f"b{i}"),
            lambda record, text: None,
        )
        for i in range(6)
    ]
    rig.bed.burst(burst)
    agent.kill()  # mid-burst: some plans ran, some did not
    vanished = first[1]
    rig.bed.remove_namespace("nvme0", 11)  # while the agent is down
    subprocess.run(["losetup", "-d", str(vanished.devname)], check=True)
    again = rig.agent()
    try:
        assert again.control({"cmd": "settle", "timeout": 120})["ok"] is True
        expected = {str(rig.root / "keep"): first[0].devname}
        expected |= {str(rig.root / f"b{i}"): cfg.devname for i, cfg in enumerate(burst)}
        assert rig.mounted() == expected
        targets = [m.mountpoint for m in mountinfo.read()]
        assert all(targets.count(t) == 1 for t in expected)  # nothing mounted twice
        history = again.control({"cmd": "history"})["records"]
        assert ("namespace-removed", 11) in [
            (r["type"], r["nsid"]) for r in history if "down" in str(r.get("reason"))
        ]
        assert not (rig.root / "vanish").exists()
    finally:
        assert again.stop() == 0


def test_restart_detaches_a_mount_left_behind_without_state(rig: Rig) -> None:
    agent = rig.agent()
    cfg = rig.add(30, "orphan")
    assert agent.wait_for(is_result("mount", 30))["status"] == "ok"
    agent.kill()
    for name in ("topology.json", "topology.log"):  # /run was wiped: only the ledger knows
        (rig.workdir / "run" / name).unlink()
    rig.bed.remove_namespace("nvme0", 30)
    subprocess.run(["losetup", "-d", str(cfg.devname)], check=True)
    again = rig.agent()
    try:
        assert again.control({"cmd": "settle", "timeout": 60})["ok"] is True
        assert rig.mounted() == {}
        assert not (rig.root / "orphan").exists()
    finally:
        assert again.stop() == 0


def test_ready_means_coldplug_is_mounted_and_restart_applies_a_changed_policy(rig: Rig) -> None:
    cfg = rig.add(40, "cold")
    rig.policy.write_text(POLICY.format(root=rig.root).replace("[ext4, xfs]", "[xfs]"))
    agent = rig.agent()  # returns once READY=1 arrived
    assert rig.mounted() == {}  # this policy does not mount ext4
    assert agent.stop() == 0
    history = History(rig.workdir / "state" / "history.jsonl")
    again = rig.agent()  # same policy: nothing to redo
    assert again.stop() == 0
    added = [r for r in history.read() if r["type"] == "namespace-added" and r["nsid"] == 40]
    assert len(added) == 1 and added[0]["coldplug"]  # the first start only
    rig.policy.write_text(POLICY.format(root=rig.root))
    third = rig.agent()
    try:
        assert rig.mounted() == {str(rig.root / "cold"): cfg.devname}  # before READY=1
        history = third.control({"cmd": "history"})["records"]
        assert any("policy changed" in str(r.get("reason")) for r in history if r["nsid"] == 40)
    finally:
        assert third.stop() == 0


HOOK_POLICY = """\
version: 1
rules:
  - name: parts
    match: {{partition: true}}
    on_add:
      - exec: {{argv: [/usr/bin/cat, "{fifo}"], timeout: 120}}
"""


def _wait_for_processes(cmdline: list[str], timeout: float = 30.0) -> list[psutil.Process]:
    """The processes running ``cmdline``, once there is at least one (bounded poll of /proc)."""
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == cmdline]
        if found or time.monotonic() > deadline:
            assert found, f"no process {cmdline} within {timeout}s"
            return found
        ticker.wait(0.02)


def test_a_partition_plan_cut_by_kill_9_runs_again_after_restart(tmp_path: Path) -> None:
    # The hook reads ``gate``, a symlink to one FIFO per daemon: the orphaned hook of the
    # killed daemon and the new daemon's hook never share a FIFO, so releasing the one cannot
    # be taken by the other (the orphan may still hold its FIFO open for a moment).
    gate = tmp_path / "gate"
    fifos = [tmp_path / "gate1", tmp_path / "gate2"]
    for fifo in fifos:
        os.mkfifo(fifo)
    gate.symlink_to(fifos[0])
    policy = tmp_path / "policy.yaml"
    policy.write_text(HOOK_POLICY.format(fifo=gate))
    workdir = tmp_path / "agent"
    workdir.mkdir()

    def release(fifo: Path) -> None:
        with open(fifo, "w"):  # blocks until the hook opens it; closing ends the hook
            pass

    def release_any_reader() -> None:
        for fifo in fifos:
            with contextlib.suppress(OSError):  # ENXIO: no hook is waiting
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    with Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        bed.add_namespace(
            NamespaceConfig("nvme0", nsid=7, partitions=(PartitionConfig(1, 64 << 20, fs="ext4"),))
        )
        env = bed.env(os.environ)
        first = Agent(policy, workdir, env, dry_run=False, extra_args=("--ready-timeout", "0"))
        first.start()  # READY while the partition's hook still blocks on the gate
        state = saved_state(workdir)
        assert [h for h in state["handled"] if h[1] == 7] == []
        _wait_for_processes(["/usr/bin/cat", str(gate)])  # kill only once the hook runs
        first.kill()
        release(fifos[0])  # the orphaned hook of the killed daemon
        (tmp_path / "gate.new").symlink_to(fifos[1])
        os.replace(tmp_path / "gate.new", gate)  # the same policy text, a fresh FIFO
        opener = threading.Thread(target=release, args=(fifos[1],))
        opener.start()
        second = Agent(policy, workdir, env, dry_run=False).start()
        try:
            opener.join(30)
            assert second.control({"cmd": "settle", "timeout": 60})["ok"] is True
            history = second.control({"cmd": "history"})["records"]
            again = [
                r
                for r in history
                if r["type"] == "partition-added" and "interrupted" in str(r.get("reason"))
            ]
            assert [r["nsid"] for r in again] == [7]
            state = saved_state(workdir)
            assert [h[1] for h in state["handled"]] == [7]
        finally:
            release_any_reader()  # a failed assertion must not leave a hook blocked
            assert second.stop() == 0


def test_an_ejected_namespace_stays_unmounted_across_a_restart(rig: Rig) -> None:
    agent = rig.agent()
    rig.add(50, "ejected")
    assert agent.wait_for(is_result("mount", 50))["status"] == "ok"
    assert agent.control({"cmd": "eject", "nsid": 50})["ok"] is True
    assert agent.stop() == 0
    rig.policy.write_text(rig.policy.read_text() + "# edited: a new digest\n")
    again = rig.agent()  # a changed policy re-plans present namespaces, but not ejected ones
    try:
        assert rig.mounted() == {}
        status = again.control({"cmd": "status"})
        assert [(n["nsid"], n["ejected"]) for n in status["namespaces"]] == [(50, True)]
    finally:
        assert again.stop() == 0
