"""The operator's side in the real guest: the README's quick start (issue 14.1), a stop that
drains a running hook (``KillMode=mixed``, issue 14.12), and a storm of attach/detach with a
``kill -9`` of the agent in the middle (issue 16.3).

They run in the single-controller guest in the default (native multipath) mode only: none of
them depends on the multipath mode, and each costs a minute or so of guest time.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from nvme_agent.outputs.journal import CHANGE_MESSAGE_IDS, MSG_DAEMON_READY
from nvme_agent.topology.changes import ChangeType

from . import agentctl
from .agentctl import MOUNT_ROOT, POLICY
from .guest import PAYLOAD_MOUNT, PROBE, Guest
from .guestimage import GuestImage
from .quickstart import README, Command, quick_start, section

ADDED = CHANGE_MESSAGE_IDS[ChangeType.NAMESPACE_ADDED]
REMOVED = CHANGE_MESSAGE_IDS[ChangeType.NAMESPACE_REMOVED]
#: systemd's "Stopping UNIT..." (SD_MESSAGE_UNIT_STOPPING)
UNIT_STOPPING = "de5b426a63be47a7b6ac3eaac82e2f6f"
#: ``nvme-agent history`` and ``eject`` print local times like 2025-01-31T10:15:02.123+01:00.
ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
#: ``journalctl -o short-iso``: 2025-01-31T10:15:02+0100
ISO_JOURNAL = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"


def _default_mode_only(g: Guest) -> None:
    if g.mode != "multipath":
        pytest.skip("independent of the multipath mode: run in the default mode only")


def _promise(promise: str, device: str) -> re.Pattern[str]:
    """A README comment as a pattern for a whole output line: its example time stands for
    any such time, ``...`` for anything, ``nvme0nX`` for the device the guest named."""
    pattern = re.escape(promise)
    example = r"\d{4}\\-\d\d\\-\d\dT\d\d:\d\d:\d\d\\\.\d{3}\\\+\d\d:\d\d"
    pattern = re.sub(example, lambda _m: ISO_MS, pattern)
    pattern = pattern.replace(r"\.\.\.", ".*").replace("nvme0nX", re.escape(device))
    return re.compile(pattern)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- quick start


@dataclass
class QuickStart:
    """One run of the README's commands in the guest."""

    g: Guest
    image: GuestImage
    payload_dir: str
    device: str = "nvme0nX"
    cursor: str = ""
    ran: list[str] = field(default_factory=list)

    def sh(self, command: str, check: bool = True) -> Any:
        return self.g.sh(command, check=check, timeout=300)

    def udev(self, action: str, command: str) -> None:
        """The README's nvme command itself, run by the probe, which returns once udev
        announced the disk (the operator's next command then finds it)."""
        res = self.g.probe("run-wait-udev", "--action", action, "--nsid", "2", "--timeout",
                           "60", "--", *shlex.split(command))  # fmt: skip
        assert res["rc"] == 0 and not res.get("timed_out"), res


def _qs_make_deb(qs: QuickStart, cmd: Command) -> None:
    # Host side: the payload is what `make deb` builds (packaging/build-deb.sh): the name the
    # README promises must be the one it produced.
    wanted = cmd.promise.split("->", 1)[1].split(",")[0].strip()
    found = qs.sh(f"ls {PAYLOAD_MOUNT}").stdout.split()
    assert wanted.removeprefix("dist/") in found, (wanted, found)


def _qs_apt_install(qs: QuickStart, cmd: Command) -> None:
    # The guest has no checkout: ./dist/ is made from the payload disk; apt runs as written
    # and asks "Do you want to continue? [Y/n]": the operator's answer is on its stdin.
    qs.sh(f"rm -rf /root/quickstart && mkdir -p /root/quickstart/dist && "
          f"cp {PAYLOAD_MOUNT}/nvme-agent_*_all.deb /root/quickstart/dist/")  # fmt: skip
    res = qs.sh(f"cd /root/quickstart && echo Y | DEBIAN_FRONTEND=noninteractive {cmd.shell}")
    assert "nvme-agent" in res.stdout, res.stdout


def _qs_status_unit(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell, check=False)
    assert res.exitcode == 0 and "active (running)" in res.stdout, res.stdout
    mounted = [m for m in qs.g.state()["mounts"] if m["target"].startswith(MOUNT_ROOT)]
    assert mounted == [], "the default policy mounted something"


def _qs_write_policy(qs: QuickStart, cmd: Command) -> None:
    qs.sh(cmd.shell)
    assert "name: data" in qs.sh("cat /etc/nvme-agent/policy.yaml").stdout


def _qs_check(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell, check=False)
    assert res.exitcode == 0 and _lines(res.stdout) == [cmd.promise], res


def _qs_reload(qs: QuickStart, cmd: Command) -> None:
    cursor = qs.g.journal_cursor()
    res = qs.sh(cmd.shell, check=False)
    assert res.exitcode == 0, res
    # ExecReload= is `nvme-agent reload`: what it prints goes to the unit's journal.
    said = re.search(r'"(.*)"', cmd.promise)
    assert said, cmd.promise
    found = qs.g.wait_journal(cursor, MESSAGE=said.group(1), _SYSTEMD_UNIT="nvme-agent.service")
    assert found["ok"], agentctl.agent_log(qs.g)
    # The paragraph below the block: ns1 (ext4, attached at boot) is now matched by `data`.
    prose = " ".join(section(README.read_text()).split())
    pending = re.search(r'\("(1 present namespace would be treated differently .*?)"\)', prose)
    assert pending, "the quick start no longer quotes the pending-namespace line"
    text = pending.group(1)
    found = qs.g.wait_journal(cursor, MESSAGE=text, _SYSTEMD_UNIT="nvme-agent.service")
    assert found["ok"], f"{text!r} not logged by the reload\n{agentctl.agent_log(qs.g)}"


def _qs_attach(qs: QuickStart, cmd: Command) -> None:
    qs.cursor = qs.g.journal_cursor()
    qs.udev("add", cmd.shell)
    qs.device = qs.g.attached()[2]["name"]
    assert re.fullmatch(r"nvme0n\d+", qs.device), qs.device


def _qs_status(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell, check=False)
    assert res.exitcode == 0, res
    rows = [line.split() for line in res.stdout.splitlines()]
    row = [r for r in rows if r[:1] == ["2"] and f"/dev/{qs.device}" in r]
    assert len(row) == 1 and "data" in row[0], res.stdout
    mounts = [m for m in qs.g.state()["mounts"] if m["source"] == f"/dev/{qs.device}"]
    assert [m["target"] for m in mounts] == [f"{MOUNT_ROOT}/nsxfs"], mounts


def _qs_history_added(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell)
    pattern = _promise(cmd.promise, qs.device)
    assert any(pattern.fullmatch(line) for line in _lines(res.stdout)), (pattern, res.stdout)


def _qs_journal(qs: QuickStart, cmd: Command) -> None:
    assert cmd.promise == "the same, with times"
    found = qs.g.wait_journal(qs.cursor, MESSAGE_ID=ADDED, NVME_NSID="2")
    assert found["ok"], agentctl.agent_log(qs.g)
    res = qs.sh(cmd.shell)
    pattern = re.compile(rf"{ISO_JOURNAL} \S+ nvme-agent\[\d+\]: namespace-added nsid=2 "
                         rf"{qs.device} .*")  # fmt: skip
    assert any(pattern.fullmatch(line) for line in _lines(res.stdout)), res.stdout


def _qs_eject(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell, check=False)
    assert res.exitcode == 0, res
    # Each removal action's outcome first, then the verdict the README shows.
    assert _promise(cmd.promise, qs.device).fullmatch(_lines(res.stdout)[-1]), res.stdout
    assert [m for m in qs.g.state()["mounts"] if m["source"] == f"/dev/{qs.device}"] == []


def _qs_detach(qs: QuickStart, cmd: Command) -> None:
    cursor = qs.g.journal_cursor()
    qs.udev("remove", cmd.shell)
    # The operator's next command reads the history: the agent must have taken it in.
    found = qs.g.wait_journal(cursor, MESSAGE_ID=REMOVED, NVME_NSID="2")
    assert found["ok"], agentctl.agent_log(qs.g)


def _qs_history_removed(qs: QuickStart, cmd: Command) -> None:
    res = qs.sh(cmd.shell)
    lines = _lines(res.stdout)
    assert len(lines) == 2, res.stdout
    assert _promise(cmd.promise, qs.device).fullmatch(lines[-1]), res.stdout
    assert re.match(ISO_MS + " ", lines[-1]), lines


#: What each command of the quick start must show, by its first line (the README decides the
#: order; a command missing here, or here but gone from the README, fails the test).
QUICK_START: dict[str, Callable[[QuickStart, Command], None]] = {
    "make deb": _qs_make_deb,
    "apt install ./dist/nvme-agent_0.1.0_all.deb nvme-cli": _qs_apt_install,
    "systemctl status nvme-agent": _qs_status_unit,
    "cat > /etc/nvme-agent/policy.yaml <<'EOF'": _qs_write_policy,
    "nvme-agent check": _qs_check,
    "systemctl reload nvme-agent": _qs_reload,
    "nvme attach-ns /dev/nvme0 -n 2 -c 0": _qs_attach,
    "nvme-agent status --settle 30": _qs_status,
    "nvme-agent history -n 5": _qs_history_added,
    "journalctl -u nvme-agent -o short-iso --since -10min": _qs_journal,
    "nvme-agent eject --nsid 2": _qs_eject,
    "nvme detach-ns /dev/nvme0 -n 2 -c 0": _qs_detach,
    "nvme-agent history -n 2": _qs_history_removed,
}


def _unmount_all(g: Guest) -> None:
    g.sh(f"findmnt -rn -o TARGET | grep '^{MOUNT_ROOT}/' | sort -r | xargs -r umount -l")


def test_readme_quick_start_in_the_guest(guest: Guest, guest_image: GuestImage) -> None:
    """The README's quick start as an operator types it: a fresh install of the .deb, the
    two-rule policy, check, reload, attach NSID 2 of nvme0 (the single guest's layout is the
    README's: an xfs namespace detached at boot), status, history, eject, detach."""
    g = guest
    _default_mode_only(g)
    g.ensure_running()
    if g.payload.kind != "deb":
        pytest.skip(f"the quick start installs the .deb: {g.payload.why}")
    commands = quick_start()
    firsts = [c.shell.splitlines()[0] for c in commands]
    assert sorted(firsts) == sorted(QUICK_START), "README quick start and test differ"
    # An operator's fresh guest: no agent, nothing mounted, NSID 2 detached.
    agentctl.stop(g)
    _unmount_all(g)
    g.reset()
    g.sh(f"DEBIAN_FRONTEND=noninteractive apt-get purge -y nvme-agent && rm -rf {MOUNT_ROOT}",
         timeout=300)  # fmt: skip
    qs = QuickStart(g, guest_image, PAYLOAD_MOUNT)
    try:
        for first, command in zip(firsts, commands, strict=True):
            QUICK_START[first](qs, command)
            qs.ran.append(first)
    finally:
        # Whatever failed, the next test finds the package installed (it was purged).
        if g.sh("dpkg-query -W -f '${Status}' nvme-agent", check=False).stdout != (
            "install ok installed"
        ):
            agentctl.install(g)
    assert qs.ran == firsts


# --------------------------------------------------------------------------- drain on stop

DRAIN = "/run/e2e-drain"
SLOW_HOOK = f"""#!/bin/sh
# e2e drain hook: tells the test its pid (a FIFO the test reads), waits until the test
# releases it (another FIFO), then leaves its marker.  A SIGTERM is recorded, not obeyed.
trap 'echo TERM >> {DRAIN}/signals' TERM
echo "$$" > {DRAIN}/started
read line < {DRAIN}/release
echo "finished $line" > {DRAIN}/done
"""
#: ns2 only (ns1 would run it too, at the restart: "policy changed"); the hook's own timeout
#: (default 30 s) must not end it while the test holds it: the test releases it, through the
#: FIFO, only after it saw the stop wait for it.
DRAIN_POLICY = POLICY.replace('fs_label: "ns*"', 'fs_label: "nsxfs"').replace(
    'argv: ["/usr/local/libexec/e2e-hook", "add"]',
    'argv: ["/usr/local/libexec/e2e-slow"]\n          timeout: 600',
)
#: The daemon's drain is bounded (--drain-timeout, 30 s by default): longer here, where a
#: loaded 2-core TCG host takes seconds per guest command.  KillMode= stays the package's.
DRAIN_DROPIN = "/run/systemd/system/nvme-agent.service.d/e2e-drain.conf"
DRAIN_TIMEOUT = 300
DRAIN_UNIT = f"""[Service]
ExecStart=
ExecStart=/usr/bin/nvme-agent run --drain-timeout {DRAIN_TIMEOUT}
"""
DRAIN_WAITING = f"stopping: waiting up to {DRAIN_TIMEOUT}s for the actions of 1 plan key to finish"


def test_stop_lets_a_running_hook_finish(guest: Guest) -> None:
    """``systemctl stop`` while an add hook runs: the daemon gets SIGTERM, says it waits,
    the hook is not signalled and finishes, then the daemon exits 0."""
    g = guest
    _default_mode_only(g)
    g.ensure_running()
    assert DRAIN_POLICY != POLICY
    agentctl.stop(g)
    g.reset()
    g.sh(f"rm -rf {DRAIN} && mkdir {DRAIN} && mkfifo {DRAIN}/started {DRAIN}/release")
    g.qga.write_file("/usr/local/libexec/e2e-slow", SLOW_HOOK)
    g.sh("chmod 755 /usr/local/libexec/e2e-slow")
    g.sh(f"mkdir -p {DRAIN_DROPIN.rsplit('/', 1)[0]}")
    g.qga.write_file(DRAIN_DROPIN, DRAIN_UNIT)
    g.sh("systemctl daemon-reload")
    agentctl.start(g, DRAIN_POLICY)
    g.attach(2)
    # Blocks until the hook runs (it writes its pid into the FIFO).
    hook_pid = int(g.sh(f"cat {DRAIN}/started", timeout=120).stdout)
    main_pid = int(g.sh("systemctl show -p MainPID --value nvme-agent").stdout)
    cursor = g.journal_cursor()
    stop = ["systemctl", "stop", "nvme-agent"]
    pid = g.qga.start(stop)
    waiting = g.wait_journal(
        cursor,
        MESSAGE=DRAIN_WAITING,
        _PID=str(main_pid),
    )
    assert waiting["ok"], agentctl.agent_log(g)
    # The daemon got SIGTERM and waits; the hook is alive and was not signalled.
    assert g.sh(f"kill -0 {hook_pid} && kill -0 {main_pid}", check=False).exitcode == 0
    assert g.sh("systemctl is-active nvme-agent", check=False).stdout.strip() == "deactivating"
    g.sh(f"echo go > {DRAIN}/release")
    res = g.qga.wait(pid, stop, timeout=120)
    assert res.exitcode == 0, res
    assert g.sh(f"cat {DRAIN}/done").stdout == "finished go\n"
    assert g.sh(f"cat {DRAIN}/signals 2>/dev/null", check=False).stdout == ""
    shown = g.sh("systemctl show -p Result -p ExecMainStatus -p ExecMainCode nvme-agent").stdout
    assert sorted(shown.split()) == ["ExecMainCode=1", "ExecMainStatus=0", "Result=success"]
    # The journal tells the story: systemd stopping; the daemon waiting, the hook's outcome,
    # every action finished, in this order (systemd's own line may come in before or after
    # the daemon's first: two writers).
    entries = g.journal(cursor)
    texts = [str(e.get("MESSAGE", "")) for e in entries]
    assert any(e.get("MESSAGE_ID") == UNIT_STOPPING for e in entries), "\n".join(texts)
    order = [
        texts.index(waiting["message"]),
        next(i for i, t in enumerate(texts) if "e2e-slow" in t),
        texts.index("stopping: every action finished"),
    ]
    assert order == sorted(order), "\n".join(texts)
    g.sh(f"rm -rf {DRAIN} /usr/local/libexec/e2e-slow {DRAIN_DROPIN} && systemctl daemon-reload")
    agentctl.start(g)  # the e2e policy again: it unmounts ns2 when it goes
    assert g.change_until_mounted("remove", 2, f"{MOUNT_ROOT}/nsxfs")["ok"]


# --------------------------------------------------------------------------- storm

STORM_NSIDS = (1, 2, 3, 4)
STORM_OPS = 30
#: label of what the e2e policy mounts per NSID (ns3 is blank; ns4's partition 1)
STORM_MOUNTS = {1: "nsext4", 2: "nsxfs", 4: "nspart1"}


@dataclass
class Storm:
    g: Guest
    seed: int
    present: set[int]
    #: per NSID: ops before the kill, in the window (kill to READY seen), after
    ops: dict[int, list[list[str]]] = field(default_factory=dict)
    ready: dict[str, Any] | None = None

    def op(self, nsid: int, phase: int) -> None:
        action = "remove" if nsid in self.present else "add"
        if action == "add":
            self.g.attach(nsid)
            self.present.add(nsid)
        else:
            self.g.detach(nsid)
            self.present.discard(nsid)
        kind = "namespace-added" if action == "add" else "namespace-removed"
        self.ops.setdefault(nsid, [[], [], []])[phase].append(kind)


def _history(g: Guest) -> list[dict[str, Any]]:
    out = g.sh("nvme-agent history --json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _poll_exit(g: Guest, pid: int) -> dict[str, Any] | None:
    """The guest process's status if it has exited (one question, no waiting)."""
    status = g.qga.call("guest-exec-status", {"pid": pid})
    return dict(status) if status.get("exited") else None


def _check_history(storm: Storm, records: list[dict[str, Any]]) -> None:
    """Per NSID: the changes alternate from the state before the storm (nothing doubled or
    lost), every op before the kill and after the restarted agent's READY is there as
    itself, and what happened while the agent was down is there at most as its net effect
    (reason 'while the agent was down'), between the two."""
    for nsid in STORM_NSIDS:
        pre, window, post = storm.ops.get(nsid, [[], [], []])
        mine = [r for r in records if r.get("nsid") == nsid and r.get("type") in (
            "namespace-added", "namespace-removed")]  # fmt: skip
        kinds = [r["type"] for r in mine]
        why = f"seed {storm.seed}, nsid {nsid}: ops {pre}|{window}|{post}, history {kinds}"
        assert all(a != b for a, b in itertools.pairwise(kinds)), why
        assert kinds[: len(pre)] == pre, why
        assert kinds[len(kinds) - len(post) :] == post if post else True, why
        middle = mine[len(pre) : len(mine) - len(post)]
        assert len(middle) <= len(window) and len(middle) % 2 == len(window) % 2, why
        down = [r for r in mine if "while the agent was down" in str(r.get("reason"))]
        assert all(r in middle for r in down), why
        # The net effect of the down time: nothing, one change, or, when the namespace came
        # back as another disk instance (a new diskseq), its removal and its addition.
        assert len(down) <= 2, why
        if len(down) == 2:
            assert [r["type"] for r in down] == ["namespace-removed", "namespace-added"], why
            seqs = [(r.get("namespace") or {}).get("diskseq") for r in down]
            assert None in seqs or seqs[0] != seqs[1], why


def test_storm_with_a_kill_in_the_middle(agent: Guest) -> None:
    """30 seeded random attach/detach of NSIDs 1-4, ``kill -9`` of the agent after the 15th
    (systemd restarts it while the storm goes on); then the mounts, the mount root, the
    history and status against what is attached."""
    g = agent
    _default_mode_only(g)
    seed = int(os.environ.get("NVME_AGENT_E2E_STORM_SEED") or random.SystemRandom().getrandbits(32))
    print(f"storm seed {seed} (NVME_AGENT_E2E_STORM_SEED={seed} repeats it)")
    rng = random.Random(seed)
    storm = Storm(g, seed, set(g.attached()))
    before = len(_history(g))
    waiter: int | None = None
    phase = 0
    for i in range(STORM_OPS):
        if i == STORM_OPS // 2:
            # Every event so far is taken in (settle reads what udev delivered; 0 s: the
            # actions may still run when the kill comes).
            g.sh("nvme-agent status --settle 0 >/dev/null", check=False)
            cursor = g.journal_cursor()
            g.sh("systemctl kill -s KILL nvme-agent")
            ready = f"MESSAGE_ID={MSG_DAEMON_READY}"
            waiter = g.qga.start(["python3", PROBE, "wait-journal", "--after", cursor,
                                  "--match", ready, "--timeout", "120"])  # fmt: skip
            phase = 1
        if phase == 1 and waiter is not None:
            done = _poll_exit(g, waiter)
            if done is not None:
                storm.ready = done
                phase = 2
        storm.op(rng.choice(STORM_NSIDS), phase)
    assert waiter is not None
    if storm.ready is None:
        argv = ["python3", PROBE, "wait-journal"]
        storm.ready = {"exitcode": g.qga.wait(waiter, argv, timeout=180).exitcode}
    assert storm.ready.get("exitcode") == 0, storm.ready
    res = g.sh("nvme-agent status --settle 120 --json", check=False, timeout=180)
    assert res.exitcode == 0, f"seed {seed}: {res}\n{agentctl.agent_log(g)}"
    status = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    attached = g.attached()
    assert set(attached) == storm.present

    # Mounts: exactly one per present namespace the policy mounts, from its device.
    mounts = [m for m in g.state()["mounts"] if m["target"].startswith(MOUNT_ROOT + "/")]
    expected = []
    for nsid in sorted(storm.present & set(STORM_MOUNTS)):
        ns = attached[nsid]
        device = ns["partitions"][0] if nsid == 4 else ns["name"]
        expected.append((f"{MOUNT_ROOT}/{STORM_MOUNTS[nsid]}", f"/dev/{device}"))
    got = sorted((m["target"], m["source"]) for m in mounts)
    assert got == sorted(expected), f"seed {seed}\n{agentctl.agent_log(g)}"
    # Nothing left behind under the mount root.
    left = g.sh(f"ls -A {MOUNT_ROOT} 2>/dev/null || true").stdout.split()
    assert sorted(left) == sorted(STORM_MOUNTS[n] for n in storm.present & set(STORM_MOUNTS))

    _check_history(storm, _history(g)[before:])
    listed = json.loads(g.sh("nvme list -o json").stdout)
    nvme_nsids = {int(d.get("NameSpace", d.get("NSID", 0))) for d in listed["Devices"]}
    agent_nsids = {o["nsid"] for o in status if o.get("type") == "namespace"}
    assert agent_nsids == nvme_nsids == storm.present, f"seed {seed}"
