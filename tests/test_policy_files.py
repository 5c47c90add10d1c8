"""The policy file's ownership, like sshd's StrictModes (issue 11.8): the daemon refuses a
policy anyone but root could change, at start and on reload; ``check`` validates it and warns.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest
from support.daemon import Agent, is_type

from nvme_agent.cli.main import main
from nvme_agent.harness.bed import Bed
from nvme_agent.policy import PolicyError, load_policy
from nvme_agent.policy import files as files_module
from nvme_agent.policy.files import distrust, read_policy_file
from nvme_agent.policy.trust import untrusted_reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown test files")

GOOD = "version: 1\nrules:\n  - name: good\n    match: {nsid: 1}\n"
EVIL = "version: 1\nrules:\n  - name: evil\n    on_add: [{exec: {argv: [/bin/sh]}}]\n"


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A root-owned 0755 directory whose ancestors are root's and not writable by others."""
    d = tmp_path / "etc"
    d.mkdir()
    for p in (tmp_path, d):
        p.chmod(0o755)
    return d


def policy_file(etc: Path, text: str = GOOD, mode: int = 0o644, uid: int = 0) -> Path:
    f = etc / "policy.yaml"
    f.write_text(text)
    f.chmod(mode)
    os.chown(f, uid, -1)
    return f


def test_a_root_file_nobody_else_can_write_is_loaded(etc: Path) -> None:
    assert load_policy(policy_file(etc)).rules[0].name == "good"


@pytest.mark.parametrize(
    ("mode", "uid", "why"),
    [
        (0o644, 1000, "owned by uid 1000"),
        (0o664, 0, "writable by group or others"),
        (0o666, 0, "writable by group or others"),
    ],
)
def test_a_file_others_could_change_is_refused(etc: Path, mode: int, uid: int, why: str) -> None:
    f = policy_file(etc, mode=mode, uid=uid)
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    (issue,) = info.value.errors
    assert str(issue).startswith(f"{f}:1:1: (file): refused: ") and why in issue.message


def test_a_directory_others_could_write_is_refused(etc: Path) -> None:
    f = policy_file(etc)
    etc.chmod(0o777)  # anyone could rename their own file over policy.yaml
    with pytest.raises(PolicyError, match=r"directory .* writable by group or others"):
        load_policy(f)
    etc.chmod(0o1777)  # sticky: others cannot rename root's entries
    assert load_policy(f).rules


def test_a_swap_between_the_check_and_the_read_is_caught(
    etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path is checked after the file was opened: if it then leads elsewhere, what was
    read is not what was checked, and it is refused."""
    f = policy_file(etc)
    other = etc / "other.yaml"
    other.write_text(EVIL)
    other.chmod(0o644)

    def check_then_swap(
        path: str, *, owners: Collection[int], dir_owners: Collection[int]
    ) -> str | None:
        verdict = untrusted_reason(path, owners=owners, dir_owners=dir_owners)
        os.replace(other, f)  # someone renames a file over the policy right now
        return verdict

    monkeypatch.setattr(files_module, "untrusted_reason", check_then_swap)
    with pytest.raises(PolicyError, match="was replaced by another file while it was being read"):
        load_policy(f)


def test_what_was_read_is_checked_not_only_the_name(etc: Path) -> None:
    f = policy_file(etc, mode=0o666)
    read = read_policy_file(str(f), 1 << 20)
    f.chmod(0o644)  # fixed after the read: the bytes read came from a writable file
    assert "when read" in (distrust(read) or "")


def test_a_daemon_that_is_not_root_believes_its_own_files(etc: Path) -> None:
    f = policy_file(etc, uid=1000)
    os.chown(etc, 1000, -1)
    read = read_policy_file(str(f), 1 << 20)
    assert distrust(read, owners={0, 1000}) is None
    assert "owned by uid 1000" in (distrust(read, owners={0}) or "")


def test_a_symlink_to_a_trusted_file_is_followed(etc: Path) -> None:
    target = policy_file(etc)
    link = etc / "current.yaml"
    link.symlink_to(target)
    assert load_policy(link).rules[0].name == "good"


def test_check_validates_a_file_the_daemon_would_refuse_and_warns(
    etc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = policy_file(etc, uid=1000)
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{f}:1:1: warning: (file): the daemon (root) would refuse this file")
    assert "owned by uid 1000" in out[0]
    assert out[-1] == f"{f}: valid, 1 rule, 1 warning"
    f.write_text("version: 1\nrules: 3\n")
    assert main(["check", str(f)]) == 1
    said = capsys.readouterr().out
    assert "would refuse" in said and "expected a list of rules" in said


def test_the_daemon_refuses_to_start_with_an_untrusted_policy(etc: Path, tmp_path: Path) -> None:
    f = policy_file(etc, mode=0o666)
    env = {k: v for k, v in os.environ.items() if k not in ("UMOCKDEV_DIR", "LD_PRELOAD")}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nvme_agent",
                "run",
                "--policy",
                str(f),
                "--runtime-dir",
                str(tmp_path / "run"),
                "--state-dir",
                str(tmp_path / "state"),
                "--log-target",
                "stderr",
            ],
            env=env | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        sock.close()
    assert proc.returncode == 1
    assert f"{f}:1:1: (file): refused:" in proc.stderr and "writable by group or others" in (
        proc.stderr
    )


@pytest.mark.umockdev
def test_a_reload_of_an_untrusted_policy_keeps_the_old_one(
    mp_bed: Bed, etc: Path, tmp_path: Path
) -> None:
    f = policy_file(etc)
    (tmp_path / "agent").mkdir()
    agent = Agent(f, tmp_path / "agent", mp_bed.env(os.environ)).start()
    try:
        f.write_text(EVIL)
        f.chmod(0o666)
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        failed = agent.wait_for(is_type("reload-failed"))
        assert any("refused" in e and "writable by group or others" in e for e in failed["errors"])
        answer = agent.control({"cmd": "reload"})
        assert answer["ok"] is False and answer["generation"] == 1
        f.chmod(0o644)
        assert agent.control({"cmd": "reload"}) == {"ok": True, "generation": 2}
    finally:
        agent.stop()
