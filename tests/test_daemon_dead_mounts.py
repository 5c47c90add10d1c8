"""Mounts whose device went away without a plan that unmounts them, with REAL mounts: the fake
guest (umockdev bed) in front of loop devices holding real filesystems.  Root only.

* without native multipath, the path whose disk is the mounted device goes (the bundled
  ``qemu-two-controllers-no-multipath`` layout: nvme0n1 and nvme1n1 are one namespace): the
  dead mount is lazily detached and the namespace is mounted again from nvme1n1;
* a removal decided by another rule than the one that mounted (the namespace grew past the
  mounting rule's ``size_max``): the mount left behind is lazily detached;
* eject of a busy mount reports its progress (holders, the signal, the results) on stderr.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import Agent, is_result, is_type, real_mount_root
from support.marks import bed_as_root

from nvme_agent.actions import mountinfo
from nvme_agent.cli.scenarios import bundled
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig
from nvme_agent.harness.real import RealBacking
from nvme_agent.harness.scenario import load_scenario

pytestmark = bed_as_root()

POLICY = """\
version: 1
defaults:
  mount_root: {root}
rules:
  - name: small
    match: {{fs_type: ext4, size_max: 1GiB}}
    on_add:
      - mount: {{path: "{root}/{{label}}"}}
    on_remove:
      - unmount: {{on_busy: signal, timeout: 20}}
  - name: big
    match: {{fs_type: ext4}}
    ignore: true
"""


def is_plan(change: str, nsid: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("type") == "plan" and r.get("change") == change and r["nsid"] == nsid


def mounted(root: Path) -> dict[str, str]:
    """target -> source of every mount below ``root``."""
    return {m.mountpoint: m.source for m in mountinfo.read() if m.mountpoint.startswith(f"{root}/")}


def losetup(image: Path) -> str:
    done = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def root() -> Iterator[Path]:
    with real_mount_root() as path:
        yield path


def start(bed: Bed, tmp_path: Path, root: Path) -> Agent:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(root=root))
    (tmp_path / "agent").mkdir()
    return Agent(policy, tmp_path / "agent", bed.env(os.environ), dry_run=False).start()


def test_losing_the_path_of_the_mounted_device_detaches_it_and_mounts_the_survivor(
    tmp_path: Path, root: Path
) -> None:
    scenario = load_scenario(bundled()["qemu-two-controllers-no-multipath"])
    assert not scenario.multipath and [c.name for c in scenario.controllers] == ["nvme0", "nvme1"]
    with (
        Bed(multipath=False) as bed,
        RealBacking(tmp_path / "images", str(root)) as backing,
    ):
        for ctrl in scenario.controllers:
            bed.add_controller(ctrl, quiet=True)
        cfg = backing.back(
            NamespaceConfig("nvme0", nsid=1, size_bytes=256 << 20, fs="ext4", label="shared"),
            lambda record, text: None,
        )
        first = str(cfg.devname)
        second = losetup(Path(backing.loops[("nvme0", 1)][1]))  # the same image, another disk
        cfg = dataclasses.replace(cfg, path_devnames=(("nvme1", second),))
        agent = start(bed, tmp_path, root)
        try:
            bed.add_namespace(cfg)
            bed.add_path("nvme1", 1)
            agent.wait_for(is_type("path-added", 1))
            agent.cursor = 0  # the mount's result may come before or after the path
            assert agent.wait_for(is_result("mount", 1))["status"] == "ok"
            target = str(root / "shared")
            assert mounted(root) == {target: first}
            subprocess.run(["losetup", "-d", first], check=True)  # nvme0n1's disk is gone
            bed.remove_path("nvme0", 1)
            lost = agent.wait_for(is_type("path-lost", 1))
            assert lost["path"]["controller"] == "nvme0"
            assert (lost["previous"]["devnode"], lost["namespace"]["devnode"]) == (first, second)
            detach = agent.wait_for(is_result("unmount", 1))
            assert detach["status"] == "ok" and "lost" in detach["message"], detach
            again = agent.wait_for(is_result("mount", 1))
            assert again["status"] == "ok" and again["change"] == "namespace-added", again
            assert mounted(root) == {target: second}
            status = agent.control({"cmd": "status"})
            (ns,) = status["namespaces"]
            assert ns["devnode"] == second and ns["mountpoints"] == [target]
            assert [p["controller"] for p in ns["paths"]] == ["nvme1"]
        finally:
            log_text = agent.process.tail(limit=1 << 20)
            assert agent.stop() == 0
            subprocess.run(["umount", "-l", str(root / "shared")], capture_output=True)
            subprocess.run(["losetup", "-d", second], capture_output=True)
    warnings = [line for line in log_text.splitlines() if line.startswith("nvme-agent[warning]")]
    assert any("went with the path through nvme0 while mounted at" in w for w in warnings)
    assert any(w.startswith("nvme-agent[warning]: path-lost nsid=1") for w in warnings), warnings


def test_a_removal_by_another_rule_detaches_the_mount_it_leaves_behind(
    tmp_path: Path, root: Path
) -> None:
    with (
        Bed(multipath=True) as bed,
        RealBacking(tmp_path / "images", str(root)) as backing,
    ):
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        agent = start(bed, tmp_path, root)
        try:
            cfg = backing.back(
                NamespaceConfig("nvme0", nsid=3, size_bytes=512 << 20, fs="ext4", label="grows"),
                lambda record, text: None,
            )
            bed.add_namespace(cfg)
            assert agent.wait_for(is_result("mount", 3))["status"] == "ok"
            bed.resize_namespace("nvme0", 3, 2 << 30)  # past size_max: rule "big" matches now
            agent.wait_for(is_type("namespace-resized", 3))
            subprocess.run(["losetup", "-d", str(cfg.devname)], check=True)
            bed.remove_namespace("nvme0", 3)
            plans = [agent.wait_for(is_plan("namespace-removed", 3)) for _ in range(2)]
            assert plans[0]["rule"] == "big" and plans[0]["actions"] == []
            assert [a["kind"] for a in plans[1]["actions"]] == ["unmount"]
            result = agent.wait_for(is_result("unmount", 3))
            assert result["status"] == "ok" and "lost" in result["message"], result
            assert mounted(root) == {}
            assert not (root / "grows").exists()
        finally:
            assert agent.stop() == 0


EJECT_2 = (sys.executable, "-m", "nvme_agent", "eject", "--nsid", "2")
#: Holds a file open under the mount until it is signalled (the default action of SIGTERM).
HOLDER = "import sys, time; f = open(sys.argv[1], 'w'); print('ready', flush=True); time.sleep(600)"


def test_eject_reports_its_progress_while_holders_are_signalled(tmp_path: Path, root: Path) -> None:
    with (
        Bed(multipath=True) as bed,
        RealBacking(tmp_path / "images", str(root)) as backing,
    ):
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        agent = start(bed, tmp_path, root)
        holder = None
        try:
            cfg = backing.back(
                NamespaceConfig("nvme0", nsid=2, size_bytes=256 << 20, fs="ext4", label="busy"),
                lambda record, text: None,
            )
            bed.add_namespace(cfg)
            assert agent.wait_for(is_result("mount", 2))["status"] == "ok"
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(root / "busy" / "file")],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            done = subprocess.run(
                [*EJECT_2, "--runtime-dir", str(agent.runtime_dir)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[-1] == f"nsid 2 ({cfg.devname}) is safe to remove"
            lines = done.stderr.splitlines()
            assert all(line.startswith("nvme-agent eject: ") for line in lines), lines
            assert "unmount" in lines[0] and "on busy: signal SIGTERM" in lines[0]
            assert any("is held by" in line and f"[{holder.pid}]" in line for line in lines), lines
            assert any(f"sent SIGTERM to pid {holder.pid}" in line for line in lines), lines
            assert lines[-1].startswith("nvme-agent eject: unmount (nsid 2): ok unmounted")
            assert holder.wait(30) == -15
            assert mounted(root) == {}
        finally:
            if holder is not None and holder.poll() is None:
                holder.kill()
            assert agent.stop() == 0
