"""The runner with real mounts: two namespaces mount in parallel while a third is removed
mid-plan (root only: loop devices)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.actions import WAIT, Gate, Loop, Results, change, loops, needs_loop

from nvme_agent.actions import mountinfo
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.policy.plan import ExecSpec, MountSpec, Plan, Status, UnmountSpec
from nvme_agent.topology.changes import ChangeType

pytestmark = [pytest.mark.root, needs_loop]
__all__ = ["loops"]


def test_parallel_mounts_while_a_third_namespace_is_removed_mid_plan(
    loops: Callable[..., Loop], tmp_path: Path
) -> None:
    root = tmp_path / "mnt"
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    ledger = MountLedger(str(tmp_path / "state" / "mounts.json"))
    results = Results()
    runner = ActionRunner(
        max_workers=3, ledger=ledger, on_result=results, guard=Guard(fstab=str(fstab))
    )
    devs = {"a": loops("ext4"), "b": loops("xfs"), "c": loops("ext4")}
    gates = {k: Gate(tmp_path, k) for k in devs}
    try:
        for nsid, (key, loop) in enumerate(devs.items(), start=1):
            runner.submit(
                Plan(
                    change=change(ChangeType.NAMESPACE_ADDED, nsid),
                    key=key,
                    actions=(
                        MountSpec(
                            source=loop.dev,
                            target=str(root / key),
                            mount_root=str(root),
                            fstype=loop.fstype,
                            fsck=True,
                        ),
                        ExecSpec(argv=gates[key].argv),  # "start the application"
                        ExecSpec(argv=("touch", str(root / key / "app-ready"))),
                    ),
                )
            )
        for key in devs:
            assert gates[key].wait_started(WAIT), key  # all three mounted, hooks running
        for key, loop in devs.items():
            entry = mountinfo.top_mount_at(mountinfo.read(), str(root / key))
            assert entry is not None and entry.dev == loop.devnum

        # Namespace c is hot-removed while its add plan is in its hook.
        runner.submit(
            Plan(
                change=change(ChangeType.NAMESPACE_REMOVED, 3),
                key="c",
                actions=(
                    UnmountSpec(
                        source=devs["c"].dev,
                        target=str(root / "c"),
                        mount_root=str(root),
                        device_gone=True,
                    ),
                ),
            )
        )
        gates["c"].release()
        results.wait_for(6)  # a/b mounts, c's mount + hook + cancelled rest + unmount
        c = results.of("c")
        assert [(r.action, r.status) for r in c] == [
            ("mount", Status.OK),
            ("exec", Status.OK),
            ("exec", Status.CANCELLED),
            ("unmount", Status.OK),
        ]
        assert "may have been lost" in c[-1].message
        assert mountinfo.top_mount_at(mountinfo.read(), str(root / "c")) is None
        assert not (root / "c").exists()
        # a and b are untouched and still in their hooks.
        assert [r.action for r in results.of("a")] == ["mount"]
        assert [r.action for r in results.of("b")] == ["mount"]
        for key in ("a", "b"):
            gates[key].release()
        assert runner.wait_idle(WAIT)
        for key in ("a", "b"):
            assert [r.status for r in results.of(key)] == [Status.OK] * 3
            assert (root / key / "app-ready").exists()
        assert sorted(e.target for e in MountLedger(ledger.path).entries()) == [
            str(root / "a"),
            str(root / "b"),
        ]
    finally:
        for g in gates.values():
            g.release()
        runner.close(timeout=WAIT)
        for g in gates.values():
            g.close()
