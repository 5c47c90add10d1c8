"""Real mounts and unmounts of ext4 and xfs on loop devices (root only)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import psutil
import pytest
from support.actions import Loop, guard, ledger, loops, needs_loop, root

from nvme_agent.actions import messages, mountinfo
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.unmount import do_unmount
from nvme_agent.policy.plan import MountSpec, Status, UnmountSpec
from nvme_agent.policy.spec import OnBusy

pytestmark = [pytest.mark.root, needs_loop]
__all__ = ["guard", "ledger", "loops", "root"]  # fixtures, re-exported for pytest


class MountOptions(TypedDict, total=False):
    """The :class:`MountSpec` fields these tests vary."""

    fsck: bool
    mode: int
    owner: str
    group: str


class UnmountOptions(TypedDict, total=False):
    """The :class:`UnmountSpec` fields these tests vary."""

    device_gone: bool
    on_busy: OnBusy
    signal: str
    timeout: float
    lazy_fallback: bool


def mount(
    loop: Loop,
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    name: str = "data",
    **kw: Unpack[MountOptions],
) -> tuple[MountSpec, Outcome]:
    spec = MountSpec(
        source=loop.dev, target=str(root / name), mount_root=str(root), fstype=loop.fstype, **kw
    )
    return spec, do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(spec.timeout))


def unmount(
    loop: Loop,
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    name: str = "data",
    **kw: Unpack[UnmountOptions],
) -> Outcome:
    spec = UnmountSpec(
        source=loop.dev, target=str(root / name) if name else None, mount_root=str(root), **kw
    )
    return do_unmount(spec, ledger=ledger, guard=guard, deadline=Deadline(spec.timeout))


def mounted_at(path: Path) -> mountinfo.MountEntry | None:
    return mountinfo.top_mount_at(mountinfo.read(), str(path))


@pytest.fixture
def holder() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a process holding a file open under a mount; killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path, ignore_term: bool = False) -> subprocess.Popen[str]:
        code = (
            "import signal, sys\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "f = open(sys.argv[1], 'a')\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"  # the file is open now
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            p.wait(timeout=10)


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_mount_verifies_and_records_then_graceful_unmount_cleans_up(
    fstype: str, loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops(fstype)
    spec, out = mount(loop, root, ledger, guard, name="ns1/data", fsck=True)
    assert out.status is Status.OK, out
    assert out.message_id == messages.MOUNTED
    entry = mounted_at(root / "ns1" / "data")
    assert entry is not None and entry.dev == loop.devnum and entry.fstype == fstype
    assert {"nodev", "nosuid", "noatime"} <= set(entry.options)
    rec = ledger.get(spec.target)
    assert rec is not None and rec.mounted and rec.dev == loop.devnum
    assert rec.created_dirs == (str(root / "ns1"), str(root / "ns1" / "data"))
    # A restarted agent knows this mount is its own.
    assert MountLedger(ledger.path).get(spec.target) == rec

    (root / "ns1" / "data" / "file").write_text("payload")
    out = unmount(loop, root, MountLedger(ledger.path), guard, name="ns1/data")
    assert out.status is Status.OK, out
    assert out.message_id == messages.UNMOUNTED
    assert mounted_at(root / "ns1" / "data") is None
    assert not (root / "ns1").exists()  # every directory the agent created is gone
    assert root.is_dir()  # the mount root itself stays
    assert MountLedger(ledger.path).entries() == []


def test_mount_is_idempotent_and_never_mounts_twice(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    _, first = mount(loop, root, ledger, guard)
    assert first.status is Status.OK
    _, again = mount(loop, root, ledger, guard)
    assert again.status is Status.OK
    assert "already mounted" in again.message and "by the agent" in again.message
    _, elsewhere = mount(loop, root, ledger, guard, name="other")
    assert elsewhere.status is Status.FAILED
    assert "not mounting it twice" in elsewhere.message
    assert len(mountinfo.mounts_of(mountinfo.read(), loop.devnum)) == 1
    assert not (root / "other").exists()


def test_mount_refuses_an_occupied_target(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    a, b = loops("ext4"), loops("ext4")
    assert mount(a, root, ledger, guard)[1].status is Status.OK
    _, out = mount(b, root, ledger, guard)
    assert out.status is Status.FAILED and "already a mount point" in out.message
    entry = mounted_at(root / "data")
    assert entry is not None and entry.dev == a.devnum


def test_mountpoint_mode_and_owner_applied(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    _, out = mount(loop, root, ledger, guard, mode=0o750, owner="65534", group="65534")
    assert out.status is Status.OK, out
    # The mountpoint directory is below the mount: look at it through a bind-free path by
    # unmounting first (the ledger keeps the directory as ours until the unmount removes it).
    subprocess.run(["umount", str(root / "data")], check=True)
    st = os.stat(root / "data")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 65534, 65534)


def test_hostile_symlink_inside_mount_root_is_not_followed(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard, tmp_path: Path
) -> None:
    loop = loops("ext4")
    root.mkdir()
    marker = f"nvme-agent-test-{os.getpid()}"
    (root / "evil").symlink_to("/etc")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "deep").symlink_to(outside)
    for target in (root / "evil" / marker, root / "deep" / "x" / "y", root / "evil"):
        spec = MountSpec(source=loop.dev, target=str(target), mount_root=str(root), fstype="ext4")
        with pytest.raises(ActionError, match="is a symlink inside the mount root"):
            do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(10))
    assert not os.path.lexists(f"/etc/{marker}")
    assert list(outside.iterdir()) == []
    assert mountinfo.mounts_of(mountinfo.read(), loop.devnum) == []
    escape = MountSpec(
        source=loop.dev, target=f"{root}/../escaped", mount_root=str(root), fstype="ext4"
    )
    with pytest.raises(ActionError, match="not a clean path below"):
        do_mount(escape, ledger=ledger, guard=guard, deadline=Deadline(10))
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("how", ["uuid", "label", "escaped-label", "path"])
def test_guard_refuses_devices_listed_in_fstab(
    how: str, loops: Callable[..., Loop], root: Path, ledger: MountLedger, tmp_path: Path
) -> None:
    """By path, UUID or label, a label with characters blkid escapes too (fstab writes a
    space as ``\\040``; blkid prints it as ``\\ ``)."""
    loop = loops("ext4", label='fst b$"d' if how == "escaped-label" else "fstabbed")
    uuid = subprocess.run(
        ["blkid", "-c", "/dev/null", "-o", "value", "-s", "UUID", loop.dev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    spec_field = {
        "uuid": f"UUID={uuid.upper()}",
        "label": 'LABEL="fstabbed"',
        "escaped-label": 'LABEL=fst\\040b$"d',
        "path": loop.dev,
    }[how]
    fstab = tmp_path / "fstab.guard"
    fstab.write_text(f"# test\n/dev/vda / ext4 defaults 0 1\n{spec_field} /srv/x ext4 noauto 0 2\n")
    guard = Guard(fstab=str(fstab))
    spec = MountSpec(source=loop.dev, target=str(root / "d"), mount_root=str(root), fstype="ext4")
    with pytest.raises(ActionError, match=r"fstab\.guard:3"):
        do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(10))
    assert mountinfo.mounts_of(mountinfo.read(), loop.devnum) == []
    # An fstab mount point is refused as a target too.
    with pytest.raises(ActionError, match="refusing mount point"):
        guard.check_target("/srv/x")


def test_guard_refuses_the_root_filesystem_device(
    root: Path, ledger: MountLedger, guard: Guard, tmp_path: Path
) -> None:
    rootdev = next(e for e in mountinfo.read() if e.mountpoint == "/")
    node = tmp_path / "rootdev"
    os.mknod(node, 0o600 | 0o060000, os.makedev(rootdev.major, rootdev.minor))
    spec = MountSpec(source=str(node), target=str(root / "r"), mount_root=str(root))
    with pytest.raises(ActionError, match="backs the root filesystem"):
        do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(10))
    assert not (root / "r").exists()


def test_unmount_leaves_mounts_the_agent_did_not_make(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    (root / "manual").mkdir(parents=True)
    subprocess.run(["mount", loop.dev, str(root / "manual")], check=True)
    for name in ("manual", ""):
        out = unmount(loop, root, ledger, guard, name=name)
        assert out.status is Status.SKIPPED and "not by the agent" in out.message
    out = unmount(loop, root, ledger, guard, name="manual", device_gone=True)
    assert out.status is Status.SKIPPED
    assert mounted_at(root / "manual") is not None
    assert (root / "manual").is_dir()


def test_hot_remove_lazily_detaches_even_while_held(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    holder: Callable[..., subprocess.Popen[str]],
) -> None:
    loop = loops("xfs")
    assert mount(loop, root, ledger, guard)[1].status is Status.OK
    proc = holder(root / "data" / "open-file")
    # The namespace vanishes (as after device_del); the loop goes away once unmounted.
    subprocess.run(["losetup", "-d", loop.dev], check=True)
    out = unmount(loop, root, ledger, guard, device_gone=True)
    assert out.status is Status.OK, out
    assert out.message_id == messages.LAZY_DETACH
    assert "may have been lost" in out.message
    assert mounted_at(root / "data") is None
    assert not (root / "data").exists()
    assert ledger.entries() == []
    assert proc.poll() is None  # holders are not signalled on hot-remove
    proc.kill()
    proc.wait(timeout=10)


def test_graceful_unmount_signals_a_real_holder_then_unmounts(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    holder: Callable[..., subprocess.Popen[str]],
) -> None:
    loop = loops("ext4")
    assert mount(loop, root, ledger, guard)[1].status is Status.OK
    proc = holder(root / "data" / "db")
    out = unmount(loop, root, ledger, guard, on_busy="signal", signal="SIGTERM", timeout=20)
    assert out.status is Status.OK, out
    assert out.message_id == messages.UNMOUNTED
    details = dict(out.details)
    assert details["holder_pids"] == str(proc.pid)
    assert json.loads(details["holders_json"])[0]["how"] == ["file"]
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == "zombie"
    assert mounted_at(root / "data") is None and not (root / "data").exists()


def test_on_busy_fail_names_the_holder_and_leaves_the_mount(
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    holder: Callable[..., subprocess.Popen[str]],
) -> None:
    loop = loops("xfs")
    assert mount(loop, root, ledger, guard)[1].status is Status.OK
    proc = holder(root / "data" / "log")
    out = unmount(loop, root, ledger, guard, on_busy="fail")
    assert out.status is Status.FAILED
    assert f"[{proc.pid}]" in out.message and "python" in out.message
    assert dict(out.details)["holder_pids"] == str(proc.pid)
    assert proc.poll() is None
    assert mounted_at(root / "data") is not None
    assert ledger.get(str(root / "data")) is not None


@pytest.mark.parametrize("lazy_fallback", [False, True])
def test_holder_ignoring_sigterm(
    lazy_fallback: bool,
    loops: Callable[..., Loop],
    root: Path,
    ledger: MountLedger,
    guard: Guard,
    holder: Callable[..., subprocess.Popen[str]],
) -> None:
    loop = loops("ext4")
    assert mount(loop, root, ledger, guard)[1].status is Status.OK
    proc = holder(root / "data" / "stubborn", ignore_term=True)
    out = unmount(loop, root, ledger, guard, timeout=1.0, lazy_fallback=lazy_fallback)
    assert proc.poll() is None
    assert dict(out.details)["holder_pids"] == str(proc.pid)
    if lazy_fallback:
        assert out.status is Status.OK and out.message_id == messages.LAZY_DETACH
        assert mounted_at(root / "data") is None
    else:
        assert out.status is Status.FAILED and "still busy" in out.message
        assert mounted_at(root / "data") is not None


def test_unmount_after_manual_umount_is_ok_and_cleans_up(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    loop = loops("ext4")
    assert mount(loop, root, ledger, guard)[1].status is Status.OK
    subprocess.run(["umount", str(root / "data")], check=True)
    out = unmount(loop, root, ledger, guard)
    assert out.status is Status.OK and "no longer mounted" in out.message
    assert not (root / "data").exists() and ledger.entries() == []


def test_signal_constants_are_parsed() -> None:
    from nvme_agent.actions.unmount import parse_signal

    assert parse_signal("TERM") is signal.SIGTERM
    assert parse_signal("sighup") is signal.SIGHUP
    assert parse_signal("9") is signal.SIGKILL
    with pytest.raises(ActionError):
        parse_signal("SIGNOPE")
