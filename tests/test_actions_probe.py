"""The device probe: blkid's encoding, the identifiers fstab names devices by, and failures.

The encoding is checked against the real ``blkid`` on a real ext4 image; the partition
identifiers and the failures through a stand-in ``blkid`` on the tools' PATH (loop devices
here cannot carry partitions).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvme_agent.actions import proc
from nvme_agent.actions.guard import Guard, devnode_name
from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.probe import C_SPACE, DeviceProbe, export_form, fstab_form, parse_export

needs_tools = pytest.mark.skipif(
    not (shutil.which("blkid") and shutil.which("mkfs.ext4") and shutil.which("e2label")),
    reason="needs blkid, mkfs.ext4 and e2label",
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "ext4.img"
    with path.open("wb") as fh:
        fh.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    return path


#: An ext4 label: at most 16 bytes of UTF-8, no NUL (argv cannot carry one).
labels = st.text(st.characters(min_codepoint=1, exclude_categories=["Cs"]), max_size=16).filter(
    lambda t: len(t.encode()) <= 16
)


@needs_tools
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label=labels)
def test_export_form_is_what_blkid_prints(image: Path, label: str) -> None:
    """Whatever a disk's label holds (spaces, quotes, ``$``, control characters, UTF-8), the
    guard's encoding of it is blkid's own, so an fstab ``LABEL=`` compares equal."""
    subprocess.run(["e2label", str(image), label], check=True, capture_output=True)
    with DeviceProbe(str(image), Deadline(10)) as probe:
        ids = probe.identifiers()
        assert probe.fstype() == "ext4"
        assert probe.runs == 1  # both answers from one run
    # libblkid drops a label's trailing whitespace: fstab's value is taken the same way
    assert ids.get("LABEL") == (fstab_form(label) or None)
    assert fstab_form(label) == export_form(label.rstrip(C_SPACE))
    assert "\n" not in "".join(ids.values())


@needs_tools
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label=labels)
def test_devnode_name_is_how_libblkid_encodes_a_link_name(image: Path, label: str) -> None:
    """fstab's ``ID=`` is looked up as a ``/dev/disk/by-id`` link whose name libblkid
    encodes (``blkid_encode_string``, which ``blkid -o udev`` prints as ``ID_FS_LABEL_ENC``)."""
    subprocess.run(["e2label", str(image), label], check=True, capture_output=True)
    out = subprocess.run(
        ["blkid", "-p", "-o", "udev", str(image)], check=True, capture_output=True, text=True
    ).stdout
    found = parse_export(out).get("ID_FS_LABEL_ENC")
    trimmed = label.rstrip(C_SPACE)
    assert found == (devnode_name(trimmed) if trimmed else None)
    assert "/" not in devnode_name(label)


def test_export_form_of_examples() -> None:
    assert export_form("data") == "data"
    assert export_form('a b$"c') == 'a\\ b\\$\\"c'
    assert export_form("é\tx") == "M-CM-)^Ix"
    assert export_form("\x7f<>") == "^?\\<\\>"


def test_parse_export_keeps_the_first_value_of_a_name() -> None:
    assert parse_export("TYPE=ext4\nnoise\nTYPE=xfs\nLABEL=a=b\n") == {
        "TYPE": "ext4",
        "LABEL": "a=b",
    }
    # Only a newline ends a line: U+0085 and U+001C are line breaks to str.splitlines.
    assert parse_export("L=a\x85b\x1cc\nT=x\n") == {"L": "a\x85b\x1cc", "T": "x"}


@pytest.fixture
def fake_blkid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``blkid`` that prints ``blkid.out``, exits ``blkid.rc`` and counts its runs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "blkid"
    script.write_text(
        "#!/bin/sh\n"
        f"echo run >> {tmp_path}/blkid.runs\n"
        f"cat {tmp_path}/blkid.out\n"
        f"exit $(cat {tmp_path}/blkid.rc)\n"
    )
    script.chmod(0o755)
    (tmp_path / "blkid.out").write_text("")
    (tmp_path / "blkid.rc").write_text("0")
    monkeypatch.setitem(proc.BASE_ENV, "PATH", f"{bindir}:{proc.BASE_ENV['PATH']}")
    yield tmp_path


def _answer(where: Path, out: str, rc: int = 0) -> None:
    (where / "blkid.out").write_text(out)
    (where / "blkid.rc").write_text(str(rc))


def _runs(where: Path) -> int:
    runs = where / "blkid.runs"
    return len(runs.read_text().split()) if runs.exists() else 0


@pytest.fixture
def block_node(tmp_path: Path) -> str:
    if os.geteuid() != 0:
        pytest.skip("a block device node needs root (mknod)")
    node = tmp_path / "blk"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 251))  # a loop minor nobody uses
    return str(node)


def _check(fstab: Path, text: str, node: str, where: Path) -> None:
    fstab.write_text(text)
    with DeviceProbe(node, Deadline(10)) as probe:
        Guard(fstab=str(fstab)).check_device(node, identifiers=probe.identifiers)


def test_partition_identifiers_come_from_the_partition_entry(
    fake_blkid: Path, block_node: str, tmp_path: Path
) -> None:
    """``blkid -p`` names a partition's PARTUUID and PARTLABEL ``PART_ENTRY_UUID`` and
    ``PART_ENTRY_NAME``; fstab's tags match them, escapes and all."""
    _answer(
        fake_blkid,
        "PART_ENTRY_UUID=5ab1e5-01\nPART_ENTRY_NAME=rig\\ data\nTYPE=ext4\nUUID=abcd\n",
    )
    with DeviceProbe(block_node, Deadline(10)) as probe:
        assert probe.identifiers() == {
            "UUID": "abcd",
            "PARTUUID": "5ab1e5-01",
            "PARTLABEL": "rig\\ data",
        }
    fstab = tmp_path / "fstab"
    for line in ("PARTUUID=5AB1E5-01 /d ext4 defaults 0 2", "PARTLABEL=rig\\040data /d ext4 0 2"):
        with pytest.raises(ActionError, match=r"listed in .*fstab:1 as PART"):
            _check(fstab, line + "\n", block_node, fake_blkid)
    _check(fstab, "PARTLABEL=rig-data /d ext4 defaults 0 2\n", block_node, fake_blkid)


@pytest.mark.parametrize(("rc", "refused"), [(8, True), (4, True), (2, False)])
def test_a_probe_that_cannot_tell_refuses_only_when_fstab_names_by_tag(
    rc: int, refused: bool, fake_blkid: Path, block_node: str, tmp_path: Path
) -> None:
    """Ambivalent (8) or failed (4): the device may be the one fstab names, so it is refused.
    Nothing found (2): there is no identifier to be named by.  fstab lines by path never ask."""
    _answer(fake_blkid, "", rc)
    fstab = tmp_path / "fstab"
    _check(fstab, "/dev/vda1 / ext4 defaults 0 1\n", block_node, fake_blkid)
    assert _runs(fake_blkid) == 0
    text = "/dev/vda1 / ext4 defaults 0 1\nUUID=abcd /d ext4 defaults 0 2\n"
    if refused:
        with pytest.raises(ActionError, match=r"cannot tell whether .*fstab:2 names it"):
            _check(fstab, text, block_node, fake_blkid)
    else:
        _check(fstab, text, block_node, fake_blkid)
    assert _runs(fake_blkid) == 1


def test_again_probes_anew(fake_blkid: Path, block_node: str) -> None:
    _answer(fake_blkid, "TYPE=ext4\n")
    with DeviceProbe(block_node, Deadline(10)) as probe:
        assert probe.fstype() == "ext4"
        _answer(fake_blkid, "TYPE=xfs\n")
        assert probe.fstype() == "ext4"  # read once
        probe.again()
        assert probe.fstype() == "xfs"
    assert _runs(fake_blkid) == 2
