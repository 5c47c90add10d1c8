"""mount(2) called directly (issue 13): only for VFS flags, everything else through mount(8).

The flag table is checked against the kernel itself: the same options mounted directly and by
mount(8) must give the same mount in mountinfo.  Options outside the table (filesystem data,
userspace options, anything a policy author may write) never reach the kernel from us: they
send the whole mount to mount(8) unchanged.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.actions import Loop, guard, ledger, loops, needs_loop, root

from nvme_agent.actions import mountcall, mountinfo
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import Deadline
from nvme_agent.policy.plan import MountSpec, Status

__all__ = ["guard", "ledger", "loops", "root"]  # fixtures, re-exported for pytest

known = st.sampled_from(sorted(mountcall.FLAGS))
#: Option texts a policy may carry (the validator only refuses spaces, commas and a few names).
any_option = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=" ,\t\n\r"), min_size=1
)


def _fold(options: list[str]) -> int:
    def apply(flags: int, option: str) -> int:
        bit, sets = mountcall.FLAGS[option]
        return flags | bit if sets else flags & ~bit

    return reduce(apply, options, 0)


@given(st.lists(known, max_size=12))
def test_flag_options_become_their_flags_the_last_one_winning(options: list[str]) -> None:
    assert mountcall.flags_of(options) == _fold(options)


@given(st.lists(known, max_size=6), any_option, st.lists(known, max_size=6))
def test_any_option_outside_the_table_sends_the_mount_to_mount8(
    before: list[str], option: str, after: list[str]
) -> None:
    options = [*before, option, *after]
    flags = mountcall.flags_of(options)
    if option in mountcall.FLAGS:
        assert flags == _fold(options)
    else:
        assert flags is None  # never turned into kernel data, never dropped
        assert mountcall.direct_flags("ext4", options) is None


@pytest.mark.parametrize(
    "option", ["errors=remount-ro", "nofail", "x-systemd.automount", "loop", "uid=0", "defaults"]
)
def test_filesystem_and_userspace_options_are_mount8s(option: str) -> None:
    assert mountcall.direct_flags("ext4", ["nodev", option]) is None


def test_a_type_with_a_helper_or_a_subtype_is_mount8s(tmp_path: Path) -> None:
    (tmp_path / "mount.ntfs").write_text("")
    dirs = (str(tmp_path / "missing"), str(tmp_path))
    assert mountcall.has_helper("ntfs", dirs)
    assert not mountcall.has_helper("ext4", dirs)
    assert mountcall.has_helper("fuse.sshfs", dirs)
    assert mountcall.has_helper("../x", dirs)


def test_a_failed_mount2_raises_with_the_kernels_errno(tmp_path: Path) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    with pytest.raises(OSError) as caught:
        mountcall.mount("/dev/null", str(tmp_path / "missing"), "ext4", 0)
    assert caught.value.errno is not None and caught.value.errno != 0


# --- against the kernel -------------------------------------------------------------------

SETS = [
    ("nodev", "nosuid", "noatime"),
    ("nodev", "nosuid", "noexec", "nodiratime", "ro"),
    ("dev", "suid", "exec", "strictatime", "sync"),
    ("nosuid", "relatime", "dirsync", "lazytime", "nosymfollow"),
    ("nodev", "noatime", "atime", "norelatime", "iversion", "silent"),
]


def _shown(loop: Loop) -> tuple[tuple[str, ...], tuple[str, ...]]:
    (entry,) = mountinfo.mounts_of(mountinfo.read(), loop.devnum)
    return entry.options, entry.super_options


@pytest.mark.root
@needs_loop
@pytest.mark.parametrize("options", SETS, ids=",".join)
def test_a_direct_mount_is_the_mount_mount8_makes(
    loops: Callable[..., Loop], tmp_path: Path, options: tuple[str, ...]
) -> None:
    loop = loops("ext4")
    target = tmp_path / "t"
    target.mkdir()
    flags = mountcall.direct_flags("ext4", options)
    assert flags is not None
    mountcall.mount(loop.dev, str(target), "ext4", flags)
    direct = _shown(loop)
    subprocess.run(["umount", str(target)], check=True)
    argv = ["mount", "--no-canonicalize", "-t", "ext4", "-o", ",".join(options)]
    subprocess.run([*argv, loop.dev, str(target)], check=True, capture_output=True)
    by_mount8 = _shown(loop)
    subprocess.run(["umount", str(target)], check=True)
    assert direct == by_mount8


@pytest.mark.root
@needs_loop
def test_a_failed_direct_mount_is_retried_by_mount8_which_mounts_read_only(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    """A write-protected device: mount(2) refuses a read-write mount; mount(8) retries it
    read-only, as the agent always did."""
    loop = loops("ext4")
    spec = MountSpec(source=loop.dev, target=str(root / "d"), mount_root=str(root), fstype="ext4")
    assert mountcall.direct_flags("ext4", (*spec.options, "rw")) is not None
    subprocess.run(["blockdev", "--setro", loop.dev], check=True)
    try:
        outcome = do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(spec.timeout))
        assert outcome.status is Status.OK, outcome
        options, _ = _shown(loop)
    finally:
        subprocess.run(["umount", str(root / "d")], check=False, capture_output=True)
        # The read-only flag outlives the loop device's detach: the next user would get it.
        subprocess.run(["blockdev", "--setrw", loop.dev], check=True)
    assert "ro" in options


@pytest.mark.root
@needs_loop
def test_when_both_fail_the_error_names_both(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard
) -> None:
    # An xfs mounted as ext4 (planned ext4, blkid reprobe says xfs): refused before any
    # mount; so corrupt an ext4 instead, leaving its signature for the probe.
    loop = loops("ext4")
    with open(loop.dev, "r+b") as dev:
        dev.seek(1024 + 0x18)  # s_log_block_size: an impossible block size
        dev.write(b"\xff\xff\x00\x00")
    spec = MountSpec(source=loop.dev, target=str(root / "d"), mount_root=str(root), fstype="ext4")
    outcome = do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(spec.timeout))
    assert outcome.status is Status.FAILED, outcome
    assert outcome.error is not None
    assert re.search(r"mount\(2\): .+; mount exited \d+", outcome.error), outcome.error
    assert mountinfo.mounts_of(mountinfo.read(), loop.devnum) == []
    assert not (root / "d").exists()
