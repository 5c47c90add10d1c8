"""Pure parts of the actions: mountinfo, fstab, ledger persistence, safe directories."""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvme_agent.actions import mountinfo, safedirs
from nvme_agent.actions.guard import Guard, parse_fstab
from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.outcome import ActionError

MOUNTINFO = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 259:3 / /srv/nvme/my\\040data rw,nosuid,nodev shared:2 - xfs /dev/nvme0n1 rw\n"
    "41 40 259:5 / /srv/nvme/my\\040data rw - ext4 /dev/nvme0n2 rw\n"
    "42 22 0:5 / /tab\\011new\\012line\\134 rw - tmpfs none\\040x rw\n"
)


def test_mountinfo_unescapes_and_finds_the_top_of_a_stack() -> None:
    entries = mountinfo.parse(MOUNTINFO)
    assert entries[1].mountpoint == "/srv/nvme/my data"
    assert entries[1].options == ("rw", "nosuid", "nodev") and entries[1].fstype == "xfs"
    assert entries[3].mountpoint == "/tab\tnew\nline\\" and entries[3].source == "none x"
    top = mountinfo.top_mount_at(entries, "/srv/nvme/my data")
    assert top is not None and top.dev == "259:5"
    assert [e.mountpoint for e in mountinfo.mounts_of(entries, "259:3")] == ["/srv/nvme/my data"]
    assert mountinfo.top_mount_at(entries, "/srv/nvme") is None
    with pytest.raises(ValueError, match="malformed"):
        mountinfo.parse_line("1 2 3")


def _escaped(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


mount_points = st.sampled_from(["/", "/srv/a b", "/srv/x\\y", "/t\tn\nl", "/srv/a"])
devices = st.sampled_from(["254:0", "259:3", "259:5", "7:1"])


@given(
    st.lists(st.tuples(devices, mount_points), max_size=12),
    st.frozensets(devices, max_size=2),
    st.frozensets(mount_points, max_size=2),
)
def test_parsing_some_lines_finds_what_a_full_parse_finds(
    mounts: list[tuple[str, str]], devs: frozenset[str], at: frozenset[str]
) -> None:
    text = "".join(
        f"{20 + i} 1 {dev} / {_escaped(mp)} rw,nodev shared:{i} - ext4 /dev/x\\040{i} rw\n"
        for i, (dev, mp) in enumerate(mounts)
    )
    full = mountinfo.parse(text)
    assert [e.mountpoint for e in full] == [mp for _, mp in mounts]
    some = mountinfo.parse_some(text, devs=devs, at=at)
    assert some == [e for e in full if e.dev in devs or e.mountpoint in at]
    for mp in at:
        assert mountinfo.top_mount_at(some, mp) == mountinfo.top_mount_at(full, mp)


def test_parsing_some_lines_still_refuses_a_malformed_one() -> None:
    with pytest.raises(ValueError, match="malformed"):
        mountinfo.parse_some(MOUNTINFO + "1 2 3\n", at={"/"})


def test_fstab_parsing_and_target_guard(tmp_path: Path) -> None:
    text = "# c\n\nUUID=abc /data ext4 defaults 0 2\nLABEL=x\\040y /mnt/x\\040y xfs\nbad\n"
    entries = parse_fstab(text)
    assert [(e.spec, e.file, e.line_no) for e in entries] == [
        ("UUID=abc", "/data", 3),
        ("LABEL=x y", "/mnt/x y", 4),
    ]
    fstab = tmp_path / "fstab"
    fstab.write_text(text)
    guard = Guard(fstab=str(fstab))
    with pytest.raises(ActionError, match=r"fstab:4"):
        guard.check_target("/mnt/x y/")
    guard.check_target("/srv/nvme/ok")


def test_guard_matches_fstab_tags_through_the_probe(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text('PARTLABEL="rig-data" /data ext4 defaults 0 2\n')
    probed: list[str] = []

    def probe(label: str) -> Callable[[str], dict[str, str]]:
        def ids(dev: str) -> dict[str, str]:
            probed.append(dev)
            return {"PARTLABEL": label}

        return ids

    # /dev/null is not a block device: only path rules apply and the probe is never asked.
    guard = Guard(fstab=str(fstab))
    guard.check_device("/dev/null", identifiers=functools.partial(probe("rig-data"), "/dev/null"))
    assert probed == []
    if os.geteuid() != 0:
        pytest.skip("a block device node needs root (mknod)")
    node = tmp_path / "blk"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 250))  # a loop minor nobody uses
    with pytest.raises(ActionError, match=r"listed in .*fstab:1 as PARTLABEL"):
        guard.check_device(str(node), identifiers=functools.partial(probe("RIG-DATA"), str(node)))
    guard.check_device(str(node), identifiers=functools.partial(probe("other"), str(node)))
    assert probed == [str(node), str(node)]


def _unasked() -> dict[str, str]:
    raise AssertionError("identifiers asked of an fstab without tags")


def test_guard_refuses_a_device_fstab_names_by_id(tmp_path: Path) -> None:
    """``ID=`` (mount(8): a ``/dev/disk/by-id`` name, as udev makes them for NVMe) names the
    device its link leads to; the value is encoded as libblkid does, so ``/`` stays inside."""
    if os.geteuid() != 0:
        pytest.skip("a block device node needs root (mknod)")
    node = tmp_path / "blk"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 252))  # a loop minor nobody uses
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "nvme-QEMU_NVMe_Ctrl_SN1_1-part1").symlink_to(node)
    (by_id / "odd\\x2fname").symlink_to(node)
    (tmp_path / "blk-elsewhere").symlink_to(node)
    fstab = tmp_path / "fstab"
    guard = Guard(fstab=str(fstab), by_id=str(by_id))
    for spec in ("ID=nvme-QEMU_NVMe_Ctrl_SN1_1-part1", 'ID="odd/name"'):
        fstab.write_text(f"{spec} /data ext4 defaults 0 2\n")
        with pytest.raises(ActionError, match=r"listed in .*fstab:1 as ID="):
            guard.check_device(str(node), identifiers=_unasked)
    for spec in ("ID=nvme-other", "ID=../blk-elsewhere", "ID=../blk"):
        fstab.write_text(f"{spec} /data ext4 defaults 0 2\n")
        guard.check_device(str(node), identifiers=_unasked)  # by-id only: cannot climb out


def test_ledger_roundtrip_is_atomic_and_survives_corruption(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mounts.json"
    ledger = MountLedger(str(path))
    entry = LedgerEntry("/srv/nvme/a", "/dev/nvme0n1", "259:1", "ext4", ("/srv/nvme/a",))
    ledger.record_mount(entry)
    assert json.loads(path.read_text())["mounts"][0]["target"] == "/srv/nvme/a"
    assert [p.name for p in path.parent.iterdir()] == ["mounts.json"]  # no temp file left
    assert MountLedger(str(path)).get("/srv/nvme/a/") == entry
    assert MountLedger(str(path)).find(dev="259:1") == [entry]
    ledger.mark_unmounted("/srv/nvme/a", ("/srv/nvme/a",))
    again = MountLedger(str(path)).get("/srv/nvme/a")
    assert again is not None and not again.mounted and again.created_dirs == ("/srv/nvme/a",)
    assert MountLedger(str(path)).find(dev="259:1") == []
    ledger.mark_unmounted("/srv/nvme/a", ())
    assert MountLedger(str(path)).entries() == []
    path.write_text("{not json")
    assert MountLedger(str(path)).entries() == []
    assert any(p.name.startswith("mounts.json.corrupt.") for p in path.parent.iterdir())


def test_make_dirs_records_what_it_created_and_refuses_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "pre").mkdir(parents=True)
    fd, created = safedirs.make_dirs(str(root), str(root / "pre" / "a" / "b"), mode=0o710)
    os.close(fd)
    assert created == [str(root / "pre" / "a"), str(root / "pre" / "a" / "b")]
    assert (root / "pre" / "a" / "b").stat().st_mode & 0o777 == 0o710
    assert (root / "pre" / "a").stat().st_mode & 0o777 == 0o755
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ActionError, match="is a symlink inside the mount root"):
        safedirs.make_dirs(str(root), str(root / "link" / "x"))
    assert not (tmp_path / "x").exists()
    (root / "file").write_text("")
    with pytest.raises(ActionError, match="not a directory"):
        safedirs.make_dirs(str(root), str(root / "file" / "x"))
    for bad in (str(root), "/elsewhere/x", f"{root}/a/../../x", "relative/x"):
        with pytest.raises(ActionError):
            safedirs.components(str(root), bad)
    # rmdir only: a directory with content stays, and so do its parents.
    (root / "pre" / "a" / "b" / "keep").write_text("data")
    left = safedirs.remove_dirs(str(root), created)
    assert left == created and (root / "pre" / "a" / "b" / "keep").exists()
    (root / "pre" / "a" / "b" / "keep").unlink()
    assert safedirs.remove_dirs(str(root), created) == []
    assert (root / "pre").is_dir() and not (root / "pre" / "a").exists()
