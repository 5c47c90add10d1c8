"""A daemon killed in the middle of a mount (issue 16; found by the storm, seed 6 of
tests/support/storm.py): the next run must take over, never refuse its own directory and
never leave a mount it cannot unmount.

The kill is a ``BaseException`` raised where the mount runs (mount(2) called directly, or
mount(8) for options that need it): nothing after that point of the killed run happens, as
with ``kill -9``.  The ledger is then read back from
disk by a fresh :class:`MountLedger`, as the restarted daemon does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from support.actions import Loop, loops, needs_loop

from nvme_agent.actions import mount as mount_module
from nvme_agent.actions import mountcall, mountinfo
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import Deadline
from nvme_agent.actions.proc import run_tool
from nvme_agent.actions.unmount import do_unmount
from nvme_agent.policy.plan import MountSpec, Status, UnmountSpec

pytestmark = [pytest.mark.root, needs_loop]
__all__ = ["loops"]


class Killed(BaseException):
    """The daemon died here (nothing catches it, as nothing runs after a kill -9)."""


#: Options mounted by mount(2) directly, and options only mount(8) takes (a filesystem one).
PATHS = {
    "mount2": ("nodev", "nosuid", "noatime"),
    "mount8": ("nodev", "nosuid", "noatime", "errors=remount-ro"),
}


@pytest.fixture(params=sorted(PATHS))
def way(request: pytest.FixtureRequest) -> str:
    """How the mount is made: ``mount2`` or ``mount8`` (the key of :data:`PATHS`)."""
    return str(request.param)


def _spec(loop: Loop, root: Path, way: str) -> MountSpec:
    return MountSpec(
        source=loop.dev,
        target=str(root / "data"),
        mount_root=str(root),
        fstype="ext4",
        options=PATHS[way],
    )


def _guard(tmp_path: Path) -> Guard:
    (tmp_path / "fstab").write_text("")
    return Guard(fstab=str(tmp_path / "fstab"))


def _killed_mount(
    spec: MountSpec,
    ledger_path: Path,
    guard: Guard,
    monkeypatch: pytest.MonkeyPatch,
    *,
    after: bool,
) -> None:
    """One run killed while the mount runs: before it mounted (``after=False``), or once
    the mount is in place but before the run could note it (``after=True``)."""
    died: list[str] = []
    real_mount2 = mountcall.mount

    def dies_in_mount2(source: str, target: str, fstype: str, flags: int) -> None:
        died.append("mount2")
        if after:
            real_mount2(source, target, fstype, flags)
        raise Killed

    def dies(
        argv: Sequence[str], deadline: Deadline, *, pass_fds: Sequence[int] = ()
    ) -> subprocess.CompletedProcess[str]:
        if argv[0] == "mount":
            died.append("mount8")
            if after:
                run_tool(argv, deadline, pass_fds=pass_fds)
            raise Killed
        return run_tool(argv, deadline, pass_fds=pass_fds)

    with monkeypatch.context() as patch:
        patch.setattr(mount_module, "run_tool", dies)
        patch.setattr(mountcall, "mount", dies_in_mount2)
        with pytest.raises(Killed):
            do_mount(spec, ledger=MountLedger(str(ledger_path)), guard=guard, deadline=Deadline(60))
    way = "mount2" if spec.options == PATHS["mount2"] else "mount8"
    assert died == [way]  # the kill hit the way this spec mounts, and only it


def test_a_run_killed_before_mounting_leaves_a_directory_the_next_run_uses(
    tmp_path: Path,
    loops: Callable[..., Loop],
    monkeypatch: pytest.MonkeyPatch,
    way: str,
) -> None:
    loop, guard, ledger_path = loops("ext4"), _guard(tmp_path), tmp_path / "mounts.json"
    spec = _spec(loop, tmp_path / "mnt", way)
    _killed_mount(spec, ledger_path, guard, monkeypatch, after=False)
    assert (tmp_path / "mnt" / "data").is_dir()  # made by the killed run
    again = MountLedger(str(ledger_path))  # the restarted daemon's
    outcome = do_mount(spec, ledger=again, guard=guard, deadline=Deadline(60))
    assert outcome.status is Status.OK, outcome.message
    entry = again.get(spec.target)
    assert entry is not None and entry.mounted
    gone = UnmountSpec(source=loop.dev, target=spec.target, mount_root=spec.mount_root)
    assert do_unmount(gone, ledger=again, guard=guard, deadline=Deadline(30)).status is Status.OK
    assert not (tmp_path / "mnt" / "data").exists()


def test_a_mount_done_by_a_killed_run_is_recorded_and_unmounted_later(
    tmp_path: Path,
    loops: Callable[..., Loop],
    monkeypatch: pytest.MonkeyPatch,
    way: str,
) -> None:
    loop, guard, ledger_path = loops("ext4"), _guard(tmp_path), tmp_path / "mounts.json"
    spec = _spec(loop, tmp_path / "mnt", way)
    _killed_mount(spec, ledger_path, guard, monkeypatch, after=True)
    assert mountinfo.top_mount_at(mountinfo.read(), spec.target) is not None
    again = MountLedger(str(ledger_path))
    outcome = do_mount(spec, ledger=again, guard=guard, deadline=Deadline(60))
    assert outcome.status is Status.OK and "by the agent" in outcome.message, outcome.message
    gone = UnmountSpec(source=loop.dev, target=spec.target, mount_root=spec.mount_root)
    result = do_unmount(gone, ledger=again, guard=guard, deadline=Deadline(30))
    assert result.status is Status.OK, result.message
    assert mountinfo.top_mount_at(mountinfo.read(), spec.target) is None
    assert not (tmp_path / "mnt" / "data").exists()
