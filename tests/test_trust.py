"""StrictModes for files a root daemon believes (nvme_agent.policy.trust)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nvme_agent.policy.trust import untrusted_reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown test files")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A root-owned 0755 directory whose ancestors are root's (pytest's tmp is)."""
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    tmp_path.chmod(0o755)
    return d


def test_a_root_file_not_writable_by_others_is_trusted(home: Path) -> None:
    f = home / "policy.yaml"
    f.write_text("version: 1\n")
    f.chmod(0o644)
    assert untrusted_reason(str(f)) is None


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_group_or_other_writable_is_not(home: Path, mode: int) -> None:
    f = home / "policy.yaml"
    f.write_text("x")
    f.chmod(mode)
    reason = untrusted_reason(str(f))
    assert reason is not None and "writable by group or others" in reason


def test_owned_by_someone_else_is_not(home: Path) -> None:
    f = home / "hook"
    f.write_text("x")
    f.chmod(0o755)
    os.chown(f, 1000, 0)
    reason = untrusted_reason(str(f))
    assert reason is not None and "uid 1000" in reason
    assert untrusted_reason(str(f), owners=(0, 1000)) is None  # a pidfile of uid 1000's process


def test_a_writable_directory_above_is_not(home: Path) -> None:
    f = home / "policy.yaml"
    f.write_text("x")
    f.chmod(0o644)
    home.chmod(0o777)
    reason = untrusted_reason(str(f))
    assert reason is not None and str(home) in reason


def test_a_sticky_world_writable_directory_above_is(home: Path) -> None:
    f = home / "policy.yaml"
    f.write_text("x")
    f.chmod(0o644)
    home.chmod(0o1777)
    assert untrusted_reason(str(f)) is None


def test_a_directory_above_owned_by_a_user_is_not(home: Path) -> None:
    f = home / "policy.yaml"
    f.write_text("x")
    f.chmod(0o644)
    os.chown(home, 1000, 0)
    reason = untrusted_reason(str(f))
    assert reason is not None and "owned by uid 1000" in reason


def test_symlinks_are_resolved_or_refused(home: Path, tmp_path: Path) -> None:
    real = home / "real"
    real.write_text("x")
    real.chmod(0o644)
    link = home / "link"
    link.symlink_to(real)
    assert untrusted_reason(str(link)) is None
    assert "symlink" in (untrusted_reason(str(link), follow=False) or "")
    evil = tmp_path / "evil"
    evil.mkdir(mode=0o777)
    evil.chmod(0o777)
    target = evil / "p"
    target.write_text("x")
    target.chmod(0o644)
    link2 = home / "link2"
    link2.symlink_to(target)
    assert str(evil) in (untrusted_reason(str(link2)) or "")


def test_missing_and_relative(home: Path) -> None:
    assert "No such file" in (untrusted_reason(str(home / "nope")) or "")
    assert "not an absolute path" in (untrusted_reason("etc/x") or "")
