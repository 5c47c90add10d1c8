"""Fault injection (issue 16, part 2): one test per fault, against the real daemon in the
umockdev bed with ``--log-target journal`` into a fake journald socket (so every report is
seen with its MESSAGE_ID and fields), in a mount namespace of its own.

Each test shows three things: the fault is reported once, with its cause, under its
MESSAGE_ID; it is tried once (retried only where README's "Faults and retries" says so);
and the agent keeps serving: a canary namespace added afterwards gets its hook run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.actions import Loop, loops
from support.daemon import Agent, is_result, real_mount_root
from support.faults import (
    Entry,
    FaultAgent,
    JournalCatcher,
    fault_agent,
    journal_mounts,
    slow_disk,
)
from support.marks import bed_as_root

from nvme_agent.actions import messages
from nvme_agent.harness.agent import AgentError
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig
from nvme_agent.outputs.journal import MSG_POLICY_RELOAD_FAILED

__all__ = ["loops"]  # the fixture, re-exported for pytest
pytestmark = bed_as_root("mount namespaces, loop devices: root only")

POLICY = """\
version: 1
defaults:
  mount_root: @ROOT@
rules:
  - name: canary
    match: {fs_label: "canary*"}
    on_add:
      - exec: {argv: [/bin/true]}
@RULES@
"""


class Rig:
    def __init__(self, bed: Bed, journal: JournalCatcher, tmp: Path, root: Path) -> None:
        self.bed = bed
        self.journal = journal
        self.tmp = tmp
        self.root = root
        self.policy = tmp / "policy.yaml"
        self.workdir = tmp / "agent"
        self.workdir.mkdir()
        self.canaries = 0

    def write_policy(self, rules: str) -> None:
        self.policy.write_text(
            POLICY.replace("@RULES@", rules.rstrip()).replace("@ROOT@", str(self.root))
        )

    def agent(
        self, *more: list[str], journal: bool = True, preload: str = "", extra: tuple[str, ...] = ()
    ) -> FaultAgent:
        mounts = journal_mounts(self.journal if journal else None, *more)
        agent = fault_agent(
            self.policy,
            self.workdir,
            self.bed.env(os.environ),
            mounts,
            preload=preload,
            extra=("--log-target", "journal", *extra),
        )
        try:
            return agent.start()
        except AgentError as exc:  # its log went to our journal: show it
            said = "\n".join(e.get("MESSAGE", "") for e in self.journal.entries[-20:])
            raise AgentError(f"{exc}\n--- journal ---\n{said}") from None

    def add(
        self, nsid: int, *, devname: str | None = None, label: str = "x", fs: str = "ext4"
    ) -> None:
        self.bed.add_namespace(
            NamespaceConfig("nvme0", nsid=nsid, fs=fs, label=label, devname=devname)
        )

    def still_serving(self, agent: Agent) -> None:
        """A namespace added now gets its plan run: the agent kept serving."""
        self.canaries += 1
        nsid = 100 + self.canaries
        self.add(nsid, label=f"canary{nsid}")
        result = agent.wait_for(is_result("exec", nsid), 60)
        assert result["status"] == "ok", result

    def entries(self, message_id: str, **fields: str) -> list[Entry]:
        return self.journal.matching(
            lambda e: (
                e.get("MESSAGE_ID") == message_id and all(e.get(k) == v for k, v in fields.items())
            )
        )

    def failed(self, action: str, nsid: int) -> list[Entry]:
        return self.entries(messages.ACTION_FAILED, NVME_ACTION=action, NVME_NSID=str(nsid))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with real_mount_root() as root, Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SNFAULT"), quiet=True)
        journal = JournalCatcher(tmp_path / "journal.sock")
        try:
            yield Rig(bed, journal, tmp_path, root)
        finally:
            journal.close()


def results(agent: Agent, action: str, nsid: int) -> list[dict[str, Any]]:
    return [r for r in agent.seen if is_result(action, nsid)(r)]


MOUNT_RULE = """\
  - name: data
    match: {fs_type: ext4}
    on_add:
      - mount: {path: "@ROOT@/{label}"@FSCK@}
"""


def _corrupt(loop: Loop, offset: int, size: int) -> None:
    with open(loop.dev, "r+b") as dev:
        dev.seek(offset)
        dev.write(b"\xa5" * size)
        dev.flush()
        os.fsync(dev.fileno())


def _mkfs4k(loop: Loop) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", loop.dev], check=True)


def test_a_corrupt_filesystem_fails_to_mount_once_and_leaves_nothing(
    rig: Rig, loops: Callable[..., Loop]
) -> None:
    loop = loops("ext4")
    _mkfs4k(loop)
    _corrupt(loop, 4096, 4096)  # the group descriptors; blkid still finds ext4
    rig.write_policy(MOUNT_RULE.replace("@FSCK@", ""))
    agent = rig.agent()
    try:
        rig.add(1, devname=loop.dev, label="corrupt")
        result = agent.wait_for(is_result("mount", 1), 60)
        assert result["status"] == "failed"
        rig.still_serving(agent)
        [entry] = rig.failed("mount", 1)
        assert "mount" in entry["NVME_ERROR"] and loop.dev in entry["MESSAGE"]
        assert len(results(agent, "mount", 1)) == 1  # not retried: the disk will not heal
        assert not (rig.root / "corrupt").exists()  # the directory it made is gone
        assert str(rig.root) not in agent.process.mountinfo()
    finally:
        assert agent.stop() == 0


def test_fsck_failing_stops_the_mount(rig: Rig, loops: Callable[..., Loop]) -> None:
    loop = loops("ext4")
    _mkfs4k(loop)
    for request in ("clri <2>", "ssv state 0"):  # no root directory, and marked not clean
        subprocess.run(["debugfs", "-w", "-R", request, loop.dev], check=True, capture_output=True)
    rig.write_policy(MOUNT_RULE.replace("@FSCK@", ", fsck: true"))
    agent = rig.agent()
    try:
        rig.add(2, devname=loop.dev, label="unclean")
        assert agent.wait_for(is_result("mount", 2), 60)["status"] == "failed"
        rig.still_serving(agent)
        [entry] = rig.failed("mount", 2)
        assert "fsck" in entry["NVME_ERROR"] and "e2fsck exited 4" in entry["NVME_ERROR"]
        assert len(results(agent, "mount", 2)) == 1
        assert not (rig.root / "unclean").exists()
        assert str(rig.root) not in agent.process.mountinfo()
    finally:
        assert agent.stop() == 0


def _journal_offset(image: Path) -> int:
    """Where the ext4 journal's first block is (mount reads it; blkid never does)."""
    out = subprocess.run(
        ["debugfs", "-R", "bmap <8> 0", str(image)], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1]) * 4096


def _removed_while_held(rig: Rig, tmp: Path, fsck: bool) -> None:
    image = tmp / "held.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "held", str(image)], check=True)
    hold = (0, 1 << 20) if fsck else (_journal_offset(image), _journal_offset(image) + 4096)
    rig.write_policy(MOUNT_RULE.replace("@FSCK@", ", fsck: true" if fsck else ""))
    with slow_disk(image, tmp / "fuse") as disk:
        agent = rig.agent()
        try:
            disk.send(f"hold {hold[0]} {hold[1]}")
            rig.add(3, devname=disk.loop, label="held")
            disk.expect("held", 60)  # e2fsck (or the kernel, for mount) waits on the disk
            rig.bed.remove_namespace("nvme0", 3)  # detached meanwhile ...
            disk.send("fail")  # ... so its I/O fails
            assert agent.wait_for(is_result("mount", 3), 60)["status"] == "failed"
            assert agent.feed is not None
            agent.feed.wait(lambda r: r.get("type") == "namespace-removed" and r["nsid"] == 3, 60)
            rig.still_serving(agent)
            [entry] = rig.failed("mount", 3)
            assert ("fsck" if fsck else "mount") in entry["NVME_ERROR"]
            assert len(results(agent, "mount", 3)) == 1
            assert not (rig.root / "held").exists()
            assert str(rig.root) not in agent.process.mountinfo()
        finally:
            assert agent.stop() == 0


def test_device_removed_during_fsck(rig: Rig, tmp_path: Path) -> None:
    _removed_while_held(rig, tmp_path, fsck=True)


def test_device_removed_during_mount(rig: Rig, tmp_path: Path) -> None:
    _removed_while_held(rig, tmp_path, fsck=False)


HOOK_RULE = """\
  - name: hook
    match: {fs_label: "hook*"}
    on_add:
      - exec: {argv: @ARGV@, timeout: 2}
      - exec: {argv: [/bin/true]}
"""


def _processes(token: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


def _sleep_token(seconds: int) -> str:
    """A ``sleep`` argument no other run of this test on the machine uses (GNU sleep takes
    fractions), so counting the processes that carry it counts only ours."""
    return f"{seconds}.{os.getpid()}"


def test_a_hook_that_hangs_is_killed_with_its_group(rig: Rig) -> None:
    token = _sleep_token(1001)
    argv = f'[/bin/sh, -c, "sleep {token} & sleep {token}"]'
    rig.write_policy(HOOK_RULE.replace("@ARGV@", argv))
    agent = rig.agent()
    try:
        rig.add(4, label="hook-hangs")
        result = agent.wait_for(is_result("exec", 4), 60)
        assert result["status"] == "failed" and "timed out after 2s" in result["message"]
        assert agent.wait_for(is_result("exec", 4))["status"] == "skipped"  # the rest of the plan
        rig.still_serving(agent)
        [entry] = rig.failed("exec", 4)
        assert "timed out" in entry["MESSAGE"]
        assert _processes(token) == []  # the hook's whole group is gone
    finally:
        assert agent.stop() == 0


def test_a_hook_that_exits_non_zero(rig: Rig) -> None:
    rig.write_policy(HOOK_RULE.replace("@ARGV@", '[/bin/sh, -c, "echo it broke >&2; exit 3"]'))
    agent = rig.agent()
    try:
        rig.add(5, label="hook-fails")
        result = agent.wait_for(is_result("exec", 5), 60)
        assert result["status"] == "failed" and "exited 3" in result["message"]
        rig.still_serving(agent)
        [entry] = rig.failed("exec", 5)
        assert "it broke" in entry["NVME_ERROR"]  # the cause, from the hook's stderr
        output = [e for e in rig.journal.matching(lambda e: e.get("HOOK_STREAM") == "stderr")]
        assert [e["MESSAGE"].endswith("it broke") for e in output] == [True]
    finally:
        assert agent.stop() == 0


def test_a_hook_that_forks_a_daemon_child(rig: Rig) -> None:
    # The child keeps the hook's stdout open and outlives it, like a careless "cmd &".
    token = _sleep_token(1003)
    argv = f'[/bin/sh, -c, "sleep {token} & echo started"]'
    rig.write_policy(HOOK_RULE.replace("@ARGV@", argv))
    agent = rig.agent()
    assert agent.proc is not None
    daemon = psutil.Process(agent.proc.pid)
    threads = []
    try:
        for nsid in (6, 7, 8, 9):
            rig.add(nsid, label=f"hook-forks{nsid}")
            result = agent.wait_for(is_result("exec", nsid), 60)
            assert result["status"] == "ok" and result["details"].get("lingering") == "true"
            assert agent.wait_for(is_result("exec", nsid))["status"] == "ok"
            assert agent.control({"cmd": "settle"})["ok"] is True
            threads.append(daemon.num_threads())
        rig.still_serving(agent)
        lingering = rig.journal.matching(lambda e: "left processes" in e.get("MESSAGE", ""))
        assert len(lingering) == 4  # once per hook run, naming it
        assert len(_processes(token)) == 4  # the children live on: not ours to kill
        assert threads[-1] <= threads[0], threads  # but nothing of ours waits on them
    finally:
        assert agent.stop() == 0
        for proc in _processes(token):
            proc.kill()


UNIT_RULE = """\
  - name: unit
    match: {fs_label: "unit*"}
    on_add:
      - systemd: {start: "app@{label}.service"}
"""


@pytest.mark.parametrize("how", ["missing", "failing"])
def test_systemctl_missing_or_failing(rig: Rig, how: str) -> None:
    rig.write_policy(UNIT_RULE)
    booted = [["mkdir", "/run/systemd/system"]]  # journal_mounts made /run/systemd private
    # "missing": an empty /usr/bin (merged /usr: /bin too) with only true(1) for the canary
    hide = [
        ["mkdir", "/run/systemd/usr-bin"],
        ["bind", "/usr/bin", "/run/systemd/usr-bin"],
        ["tmpfs", "/usr/bin"],
        ["touch", "/usr/bin/true"],
        ["bind", "/run/systemd/usr-bin/true", "/usr/bin/true"],
    ]
    agent = rig.agent(*booted, *(hide if how == "missing" else []))
    try:
        rig.add(9, label=f"unit{how}")
        assert agent.wait_for(is_result("systemd", 9), 60)["status"] == "failed"
        rig.still_serving(agent)
        [entry] = rig.failed("systemd", 9)
        cause = "systemctl is not installed" if how == "missing" else "systemctl exited"
        assert cause in entry["MESSAGE"] + entry.get("NVME_ERROR", "")
        assert len(results(agent, "systemd", 9)) == 1
    finally:
        assert agent.stop() == 0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_state_directory_read_only_or_full(rig: Rig, loops: Callable[..., Loop], how: str) -> None:
    loop = loops("ext4", label="state")
    rig.write_policy(MOUNT_RULE.replace("@FSCK@", ""))
    with small_tmpfs(rig.tmp / "state", "256k") as state:
        if how == "read-only":
            # Before the start: a running agent keeps its history and state log open for
            # writing, and the kernel refuses to remount such a filesystem read-only (EBUSY),
            # as it would for an administrator.  What breaks mid-run is the full case below.
            subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        agent = rig.agent(extra=("--state-dir", str(state)))
        try:
            if how == "full":
                fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT)
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * 4096):
                        pass
                os.close(fd)
            rig.add(10, devname=loop.dev, label="nostate")
            result = agent.wait_for(is_result("mount", 10), 60)
            # A mount the ledger cannot record would never be unmounted: not even tried.
            assert result["status"] == "failed" and "ledger" in result["error"]
            rig.still_serving(agent)
            [entry] = rig.failed("mount", 10)
            assert ("Read-only" if how == "read-only" else "No space") in entry["NVME_ERROR"]
            rig.still_serving(agent)  # two more history records
            history = rig.journal.matching(
                lambda e: "history" in e.get("MESSAGE", "") and e.get("PRIORITY") == "3"
            )
            assert len(history) <= 1  # a failing append is logged once, not per record
            assert str(rig.root) not in agent.process.mountinfo()
            assert not (rig.root / "nostate").exists()
        finally:
            assert agent.stop() == 0


def test_no_journal_socket_falls_back_to_stderr(rig: Rig) -> None:
    rig.write_policy("")
    agent = rig.agent(journal=False)
    try:
        rig.still_serving(agent)
        log = agent.process.tail(20000)
        assert "namespace-added nsid=101" in log  # the topology log was not thrown away
        assert "exec ok" in log  # nor the daemon's own log
        assert log.count("journal") >= 1
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize("how", ["deleted", "a directory", "a fifo"])
def test_policy_gone_or_unreadable_at_reload_keeps_the_old_one(rig: Rig, how: str) -> None:
    rig.write_policy("")
    agent = rig.agent()
    try:
        rig.policy.unlink()
        if how == "a directory":
            rig.policy.mkdir()
        elif how == "a fifo":
            os.mkfifo(rig.policy)
        answer = agent.control({"cmd": "reload"})
        assert answer["ok"] is False and answer["reason"] == "invalid-policy"
        rig.still_serving(agent)  # with the old policy's canary rule
        [entry] = rig.entries(MSG_POLICY_RELOAD_FAILED)
        assert str(rig.policy) in entry["MESSAGE"]
        assert entry["PRIORITY"] == "3"
    finally:
        assert agent.stop() == 0


GATED_RULE = """\
  - name: gated
    match: {fs_label: "gated*"}
    on_add:
      - exec: {argv: @ARGV@, timeout: 20}
"""


def test_the_wall_clock_jumping(rig: Rig) -> None:
    """The daemon measures every timeout on CLOCK_MONOTONIC (asyncio, hook and tool
    deadlines, the reload timeout, the watchdog); the wall clock only names files and stamps
    records.  ``fault_agent.py`` moves the wall clock (``time.time``) alone, as an NTP step
    or a wrong RTC at boot does: stopped, a year ahead while a hook runs, then years back."""
    from support.actions import Gate

    gate = Gate(rig.tmp, "clock")
    clock = rig.tmp / "clock"
    clock.write_text("=1930132800\n")  # stopped: every write in the same second
    state = rig.workdir / "run" / "topology.json"
    state.parent.mkdir(parents=True)
    rig.write_policy(GATED_RULE.replace("@ARGV@", json.dumps(["/bin/sh", *gate.argv[1:]])))
    os.environ["NVME_AGENT_TEST_CLOCK"] = str(clock)
    try:
        for attempt in (1, 2):  # two bad state files in the same (stopped) second
            state.write_text(f"not JSON {attempt}")
            agent = rig.agent()
            if attempt == 1:
                assert agent.stop() == 0
        asides = sorted(state.parent.glob("topology.json.corrupt.*"))
        try:
            assert sorted(p.read_text() for p in asides) == ["not JSON 1", "not JSON 2"]
            rig.add(11, label="gated")
            assert gate.wait_started(60)
            clock.write_text("+31536000\n")  # a year ahead while the hook runs
            assert agent.control({"cmd": "reload"})["ok"] is True  # its 10 s timeout holds
            clock.write_text("-94608000\n")  # three years back
            gate.release()
            result = agent.wait_for(is_result("exec", 11), 60)
            assert result["status"] == "ok", result  # not killed by a jump of the wall clock
            rig.still_serving(agent)
            assert rig.failed("exec", 11) == []
        finally:
            assert agent.stop() == 0
    finally:
        gate.close()
        os.environ.pop("NVME_AGENT_TEST_CLOCK", None)
