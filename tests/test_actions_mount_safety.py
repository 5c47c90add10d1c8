"""What a mount may land on, what it may mount as, and what an unmount may hit (issue 11.3-5).

Real ext4 and xfs on loop devices, real mount(2) (called directly for options that are VFS
flags), mount(8) and umount(8).  Where the test needs to see inside mount(8), a wrapper found
first in the actions' PATH records the arguments and libmount's debug output
(``LIBMOUNT_DEBUG``), or holds umount on a FIFO while the test swaps a path component; the
direct mount(2) calls are recorded on their way to the kernel.  Root only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pytest
from support.actions import WAIT, Loop, Results, change, guard, ledger, loops, needs_loop, root

from nvme_agent.actions import mountcall, mountinfo, proc
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.actions.unmount import do_unmount
from nvme_agent.policy.plan import MountSpec, Plan, Status, UnmountSpec
from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.text import is_unsafe

pytestmark = [pytest.mark.root, needs_loop]
__all__ = ["guard", "ledger", "loops", "root"]  # fixtures, re-exported for pytest


class SpecOptions(TypedDict, total=False):
    """The :class:`MountSpec` fields these tests vary (``fstype``: the loop's unless given)."""

    fstype: str | None
    options: tuple[str, ...]
    allow_existing_dir: bool
    allowed_fstypes: tuple[str, ...]


def spec_for(loop: Loop, root: Path, target: Path, **kw: Unpack[SpecOptions]) -> MountSpec:
    kw.setdefault("fstype", loop.fstype)
    return MountSpec(source=loop.dev, target=str(target), mount_root=str(root), **kw)


def mount(spec: MountSpec, ledger: MountLedger, guard: Guard) -> Outcome:
    return do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(spec.timeout))


def unmount(spec: MountSpec, ledger: MountLedger, guard: Guard) -> Outcome:
    un = UnmountSpec(source=spec.source, target=spec.target, mount_root=spec.mount_root)
    return do_unmount(un, ledger=ledger, guard=guard, deadline=Deadline(un.timeout))


def mounts_of(loop: Loop) -> list[str]:
    return [e.mountpoint for e in mountinfo.mounts_of(mountinfo.read(), loop.devnum)]


# --- 11.3: never mount on a directory the agent did not create, never on a non-empty one ---


def test_a_home_with_its_own_ssh_keys_is_never_mounted_over(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4", label="alice")
    home = root / "alice"
    (home / ".ssh").mkdir(parents=True)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA alice@laptop\n")
    spec = spec_for(loop, root, home)
    not_ours = rf"refusing to mount on {re.escape(str(home))}: the directory exists and was not"
    with pytest.raises(ActionError, match=not_ours):
        mount(spec, ledger, guard)
    # The per-mount opt-in allows an existing directory, never a non-empty one.
    with pytest.raises(ActionError, match=rf"{re.escape(str(home))}: the directory is not empty"):
        mount(spec_for(loop, root, home, allow_existing_dir=True), ledger, guard)
    assert mounts_of(loop) == []
    assert keys.read_text() == "ssh-ed25519 AAAA alice@laptop\n"
    assert ledger.entries() == []


def test_an_existing_empty_directory_needs_the_opt_in_and_is_left_in_place(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("xfs")
    empty = root / "empty"
    empty.mkdir(parents=True)
    with pytest.raises(ActionError, match="was not created by the agent"):
        mount(spec_for(loop, root, empty), ledger, guard)
    assert mounts_of(loop) == []
    spec = spec_for(loop, root, empty, allow_existing_dir=True)
    out = mount(spec, ledger, guard)
    assert out.status is Status.OK, out
    assert mounts_of(loop) == [str(empty)]
    entry = ledger.get(str(empty))
    assert entry is not None and entry.created_dirs == ()
    assert unmount(spec, ledger, guard).status is Status.OK
    assert empty.is_dir()  # not the agent's: never removed


def test_a_leftover_directory_of_the_agent_is_its_own_unless_something_was_put_in_it(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    left = root / "data"
    left.mkdir(parents=True)
    ledger.record_mount(
        LedgerEntry(str(left), loop.dev, loop.devnum, "ext4", (str(left),), mounted=False)
    )
    spec = spec_for(loop, root, left)
    assert mount(spec, ledger, guard).status is Status.OK
    assert unmount(spec, ledger, guard).status is Status.OK
    assert not left.exists()  # it was ours: removed with the unmount

    left.mkdir()
    (left / "written-while-unmounted").write_text("someone's data")
    ledger.record_mount(
        LedgerEntry(str(left), loop.dev, loop.devnum, "ext4", (str(left),), mounted=False)
    )
    with pytest.raises(ActionError, match="is not empty"):
        mount(spec, ledger, guard)
    assert (left / "written-while-unmounted").read_text() == "someone's data"
    entry = ledger.get(str(left))
    assert entry is not None and not entry.mounted and entry.created_dirs == (str(left),)


# --- 11.4: the type is named, allowed, and what the device holds right now -----------------


#: Options mounted by mount(2) directly, and options only mount(8) takes (a filesystem one).
WAYS = {
    "mount2": ("nodev", "nosuid", "noatime"),
    "mount8": ("nodev", "nosuid", "noatime", "errors=remount-ro"),
}


@dataclass
class Recorder:
    """mount(8) and umount(8) wrappers first in the actions' PATH; the direct mount(2) calls
    (source, target, type, flags) in ``mount2``."""

    bindir: Path
    mount2: list[tuple[str, str, str, int]]

    def argv(self, tool: str) -> list[list[str]]:
        path = self.bindir / f"{tool}.argv"
        if not path.exists():
            return []
        calls = path.read_bytes().split(b"\0\n")
        return [c.decode().split("\0")[:-1] for c in calls if c]

    def debug(self, tool: str) -> str:
        path = self.bindir / f"{tool}.debug"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("mount", "umount"):
        real = shutil.which(tool)
        assert real is not None
        script = bindir / tool
        script.write_text(
            "#!/bin/sh\n"
            f'for a in "$@"; do printf \'%s\\0\' "$a"; done >> {bindir}/{tool}.argv\n'
            f"printf '\\0\\n' >> {bindir}/{tool}.argv\n"
            f'LIBMOUNT_DEBUG=all exec {real} "$@" 2>> {bindir}/{tool}.debug\n'
        )
        script.chmod(0o755)
    monkeypatch.setitem(proc.BASE_ENV, "PATH", f"{bindir}:{proc.BASE_ENV['PATH']}")
    recorder = Recorder(bindir, [])
    real_mount = mountcall.mount

    def recorded(source: str, target: str, fstype: str, flags: int) -> None:
        recorder.mount2.append((source, target, fstype, flags))
        real_mount(source, target, fstype, flags)

    monkeypatch.setattr(mountcall, "mount", recorded)
    return recorder


def test_a_directory_made_just_before_a_kill_9_is_still_the_agents_after_restart(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard, tmp_path: Path
) -> None:
    """The mountpoint is claimed in the ledger before mkdir: a daemon killed between mkdir and
    mount leaves a directory the restarted agent knows as its own (it used to refuse it)."""
    loop = loops("ext4")
    target = root / "b3"

    class Killed(Exception):
        pass

    def mount_killed_after_mkdir(*args: object, **kw: object) -> object:
        assert target.is_dir()  # mkdir happened, the mount is what the kill interrupts
        raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("nvme_agent.actions.mount.run_tool", mount_killed_after_mkdir)
        mp.setattr(mountcall, "mount", mount_killed_after_mkdir)
        with pytest.raises(Killed):
            mount(spec_for(loop, root, target), ledger, guard)
    assert target.is_dir()
    restarted = MountLedger(str(tmp_path / "state" / "mounts.json"))  # what a restart reads
    entry = restarted.get(str(target))
    assert entry is not None and not entry.mounted and str(target) in entry.created_dirs
    assert mount(spec_for(loop, root, target), restarted, guard).status is Status.OK
    assert mounts_of(loop) == [str(target)]
    assert unmount(spec_for(loop, root, target), restarted, guard).status is Status.OK
    assert not target.exists()


@pytest.mark.parametrize("way", sorted(WAYS))
def test_mount_always_names_the_type_and_never_lets_mount_probe(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    recorder: Recorder,
    way: str,
) -> None:
    loop = loops("ext4")
    out = mount(spec_for(loop, root, root / "d", fstype=None, options=WAYS[way]), ledger, guard)
    assert out.status is Status.OK, out
    if way == "mount2":
        assert recorder.argv("mount") == []
        ((_, _, fstype, _),) = recorder.mount2
        assert fstype == "ext4"
    else:
        assert recorder.mount2 == []
        (argv,) = recorder.argv("mount")
        assert argv[argv.index("-t") + 1] == "ext4"


def test_a_type_outside_the_allow_list_is_refused_at_mount_time(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    for fstype in (None, "ext4"):
        spec = spec_for(loop, root, root / "d", fstype=fstype, allowed_fstypes=("xfs",))
        with pytest.raises(ActionError, match=r"as ext4: not in allowed_filesystems \(xfs\)"):
            mount(spec, ledger, guard)
    assert mounts_of(loop) == [] and not (root / "d").exists()


def test_a_device_that_holds_another_type_than_planned_is_refused(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    # udev said ext4 when the plan was made; the device holds xfs by the time it is mounted.
    loop = loops("xfs")
    with pytest.raises(ActionError, match="now holds xfs, not the planned ext4"):
        mount(spec_for(loop, root, root / "d", fstype="ext4"), ledger, guard)
    assert mounts_of(loop) == [] and not (root / "d").exists() and ledger.entries() == []


# --- 11.5: the kernel gets the opened directory; no path is followed or re-resolved ----------


def test_mount_hands_mount2_the_opened_directory_not_a_path(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard, recorder: Recorder
) -> None:
    loop = loops("ext4")
    assert mount(spec_for(loop, root, root / "d"), ledger, guard).status is Status.OK
    ((source, target, _, _),) = recorder.mount2
    assert source == loop.dev and re.fullmatch(r"/proc/self/fd/\d+", target), target
    assert recorder.argv("mount") == []  # the default options need no mount(8)
    assert mounts_of(loop) == [str(root / "d")]


def test_mount8_gets_the_opened_directory_not_a_path(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard, recorder: Recorder
) -> None:
    loop = loops("ext4")
    spec = spec_for(loop, root, root / "d", options=WAYS["mount8"])
    assert mount(spec, ledger, guard).status is Status.OK
    assert recorder.mount2 == []
    (argv,) = recorder.argv("mount")
    assert "--no-canonicalize" in argv
    syscalls = re.findall(r"mount\(2\) \[source=[^,]*, target=([^,]*),", recorder.debug("mount"))
    # Without --no-canonicalize, libmount turns /proc/self/fd/N back into the path it names
    # and mount(2) resolves that path again, symlinks and all.
    assert syscalls and all(re.fullmatch(r"/proc/self/fd/\d+", t) for t in syscalls), syscalls
    assert mounts_of(loop) == [str(root / "d")]


def test_a_symlinked_parent_of_the_mount_root_is_refused(
    loops: Callable[..., Loop], tmp_path: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    for linked in (tmp_path / "link" / "mnt", tmp_path / "link"):
        spec = spec_for(loop, linked, linked / "data")
        with pytest.raises(ActionError, match=rf"{re.escape(str(tmp_path / 'link'))} is a symlink"):
            mount(spec, ledger, guard)
    assert mounts_of(loop) == []
    assert list(real.iterdir()) == []  # nothing created through the link either


@pytest.mark.parametrize(
    ("where", "uid", "mode", "why"),
    [
        ("ancestor", 65534, 0o755, "is owned by uid 65534, not root"),
        ("ancestor", 0, 0o777, "is writable by group or others (mode 0777) without the sticky"),
        ("below the root", 65534, 0o755, "is owned by uid 65534, not root"),
    ],
)
def test_a_tree_someone_else_could_rearrange_is_refused(
    loops: Callable[..., Loop],
    tmp_path: Path,
    ledger: MountLedger,
    guard: Guard,
    where: str,
    uid: int,
    mode: int,
    why: str,
) -> None:
    # /tmp itself (root's, sticky) is fine: every test here runs below it.
    loop = loops("ext4")
    shared = tmp_path / "shared"
    root = shared / "mnt" if where == "ancestor" else tmp_path / "mnt"
    target = root / "data" if where == "ancestor" else root / "byuser" / "data"
    (target.parent).mkdir(parents=True)
    theirs = shared if where == "ancestor" else root / "byuser"
    os.chown(theirs, uid, 0)
    theirs.chmod(mode)
    with pytest.raises(ActionError, match=rf"{re.escape(str(theirs))} {re.escape(why)}"):
        mount(spec_for(loop, root, target), ledger, guard)
    assert mounts_of(loop) == [] and not target.exists()


class UmountGate:
    """Holds the next umount(8) on a FIFO until released; later calls run straight through."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bindir = tmp_path / "gatebin"
        bindir.mkdir()
        self.started = bindir / "started"
        self.release_fifo = bindir / "release"
        os.mkfifo(self.started)
        os.mkfifo(self.release_fifo)
        self._rfd = os.open(self.started, os.O_RDONLY | os.O_NONBLOCK)
        self._wfd = os.open(self.release_fifo, os.O_RDWR)
        real = shutil.which("umount")
        once = bindir / "passed"
        script = bindir / "umount"
        script.write_text(
            "#!/bin/sh\n"
            f"if [ ! -e {once} ]; then\n"
            f"  : > {once}; echo go > {self.started}; read x < {self.release_fifo}\n"
            "fi\n"
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)
        monkeypatch.setitem(proc.BASE_ENV, "PATH", f"{bindir}:{proc.BASE_ENV['PATH']}")

    def wait_started(self) -> bool:
        import select

        ready, _, _ = select.select([self._rfd], [], [], WAIT)
        return bool(ready)

    def release(self) -> None:
        os.write(self._wfd, b"go\n")

    def close(self) -> None:
        os.close(self._rfd)
        os.close(self._wfd)


@pytest.fixture
def umount_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UmountGate]:
    gate = UmountGate(tmp_path, monkeypatch)
    yield gate
    gate.release()  # never leave a umount blocked
    gate.close()


def test_unmount_hits_the_agents_mount_even_when_a_parent_is_swapped_meanwhile(
    loops: Callable[..., Loop],
    tmp_path: Path,
    ledger: MountLedger,
    guard: Guard,
    umount_gate: UmountGate,
) -> None:
    ours, theirs = loops("ext4"), loops("ext4")
    root = tmp_path / "base" / "mnt"
    spec = spec_for(ours, root, root / "data")
    assert mount(spec, ledger, guard).status is Status.OK
    # Someone else's mount at the same relative place in another tree.
    decoy = tmp_path / "decoy" / "mnt" / "data"
    decoy.mkdir(parents=True)
    subprocess.run(["mount", theirs.dev, str(decoy)], check=True)

    box: list[Outcome] = []
    worker = threading.Thread(target=lambda: box.append(unmount(spec, ledger, guard)))
    worker.start()
    try:
        assert umount_gate.wait_started(), "umount was never run"
        # While umount(8) is about to run, the mount root's parent becomes a symlink.
        os.rename(tmp_path / "base", tmp_path / "base-moved")
        (tmp_path / "base").symlink_to(tmp_path / "decoy")
    finally:
        umount_gate.release()
        worker.join(WAIT)
    assert not worker.is_alive() and box, "unmount did not finish"
    assert mounts_of(theirs) == [str(decoy)]  # umount by path would have taken this one
    assert mounts_of(ours) == []


# --- issue 1's consequence: every signalled holder is logged, with pid, uid and command -----


@pytest.fixture
def hostile_holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        code = (
            "import sys\n"
            "open('/proc/self/comm', 'w').write('x\\n<0>evil\\x1b[2J')\n"
            "f = open(sys.argv[1], 'a')\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(path), "arg\n<0>sshd: Accepted password"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


def test_each_signalled_holder_is_logged_with_pid_uid_and_escaped_command(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    hostile_holder: Callable[[Path], subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.actions")
    loop = loops("ext4")
    spec = spec_for(loop, root, root / "data")
    assert mount(spec, ledger, guard).status is Status.OK
    holder = hostile_holder(root / "data" / "open")
    out = unmount(spec, ledger, guard)
    assert out.status is Status.OK, out
    (rec,) = [r for r in caplog.records if getattr(r, "NVME_HOLDER_PID", None)]
    text = rec.getMessage()
    assert f"pid {holder.pid} (uid 0, command " in text
    assert "arg\\x0a<0>sshd: Accepted password" in text
    assert not any(is_unsafe(c) for c in text)
    fields = rec.__dict__
    assert fields["NVME_HOLDER_PID"] == str(holder.pid) and fields["NVME_HOLDER_UID"] == "0"
    assert "arg\n<0>sshd" in fields["NVME_HOLDER_COMMAND"]  # the field keeps the exact value


def test_a_busy_result_names_a_hostile_holder_escaped(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    hostile_holder: Callable[[Path], subprocess.Popen[str]],
) -> None:
    loop = loops("ext4")
    spec = spec_for(loop, root, root / "data")
    assert mount(spec, ledger, guard).status is Status.OK
    holder = hostile_holder(root / "data" / "open")
    results = Results()
    runner = ActionRunner(ledger=ledger, on_result=results, guard=guard)
    un = UnmountSpec(source=loop.dev, target=spec.target, mount_root=str(root), on_busy="fail")
    try:
        runner.submit(Plan(change(ChangeType.NAMESPACE_REMOVED), key="k", actions=(un,)))
        (res,) = results.wait_for(1)
    finally:
        runner.close(timeout=WAIT)
    assert res.status is Status.FAILED
    assert f"[{holder.pid}]" in res.message and "\\x0a" in res.message
    assert not any(is_unsafe(c) for c in res.message + (res.error or ""))


@pytest.mark.parametrize(
    ("fstab_tags", "fsck", "expected"),
    [
        (False, False, ["blkid"]),
        (True, False, ["blkid"]),  # the guard's identifiers and the type: one probe
        (False, True, ["e2fsck", "blkid"]),
        (True, True, ["blkid", "e2fsck", "blkid"]),  # fsck may change the device: again
    ],
)
def test_one_probe_per_mount_and_never_beside_fsck(
    fstab_tags: bool,
    fsck: bool,
    expected: list[str],
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """blkid runs while the mount point is made (issue 13), once for the fstab guard and the
    type check, but never beside fsck: fsck may change what the device holds, and the type
    probe must see what is mounted."""
    loop = loops("ext4")
    bindir, log = tmp_path / "bin", tmp_path / "order.log"
    bindir.mkdir()
    for tool in ("e2fsck", "blkid"):
        real = shutil.which(tool)
        assert real is not None
        (bindir / tool).write_text(
            "#!/bin/sh\n"
            f"echo {tool}-start >> {log}\n"
            f'{real} "$@"\nrc=$?\n'
            f"echo {tool}-end >> {log}\n"
            "exit $rc\n"
        )
        (bindir / tool).chmod(0o755)
    monkeypatch.setitem(proc.BASE_ENV, "PATH", f"{bindir}:{proc.BASE_ENV['PATH']}")
    fstab = tmp_path / "fstab.tags"
    tags = "UUID=0b7c4a52-0000-4000-8000-000000000000 /srv/other ext4 defaults 0 2\n"
    fstab.write_text(tags if fstab_tags else "/dev/vda1 / ext4 defaults 0 1\n")
    guard = Guard(fstab=str(fstab))
    spec = dataclasses.replace(spec_for(loop, root, root / "f"), fsck=fsck)
    out = mount(spec, ledger, guard)
    assert out.status is Status.OK, out
    assert ("fsck: clean" in out.message) is fsck
    assert log.read_text().split() == [f"{t}-{e}" for t in expected for e in ("start", "end")]
    assert unmount(spec, ledger, guard).status is Status.OK


def test_an_error_while_the_mount_point_is_made_leaves_no_probe_running(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = loops("ext4")
    started: list[proc.ToolRun] = []

    class Recorded(proc.ToolRun):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            started.append(self)

    def make_dirs_fails(*args: object, **kw: object) -> object:
        raise ActionError("the mount root went away")

    monkeypatch.setattr("nvme_agent.actions.probe.ToolRun", Recorded)
    monkeypatch.setattr("nvme_agent.actions.mount.safedirs.make_dirs", make_dirs_fails)
    with pytest.raises(ActionError, match="the mount root went away"):
        mount(spec_for(loop, root, root / "g"), ledger, guard)
    (probe,) = started
    assert probe.argv[:2] == ["blkid", "-p"]
    assert probe.returncode is not None  # killed or finished, and reaped either way
    assert mounts_of(loop) == []
