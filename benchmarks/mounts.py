"""Real-mount figures: ext4 on loop devices behind fake namespaces, the daemon acting for real.

The bed's namespaces carry ``DEVNAME`` of a loop device holding a real ext4
(:class:`~nvme_agent.harness.real.RealBacking`), so the daemon's mount(8) mounts it.  Load
comes from :mod:`benchmarks.wire` as for the dry-run figures.  Baselines: the same loop devices
mounted by a bare ``mount -o nodev,nosuid,noatime`` (the policy's default options), one by one,
each next to what it is the baseline of, since this machine's speed moves by half within
minutes: a bare mount of the same device just before each of the agent's single mounts, and
all the devices one by one before each of :data:`ROUNDS` bursts (the burst taken back by the
removal of every namespace between rounds).  The daemon runs meanwhile, idle; the bare mounts
are outside its mount root.
Everything mounted below the benchmark's mount root is unmounted and every loop device
detached on the way out (also after an error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.daemon import (
    BED_TIMEOUT,
    TIMEOUT,
    Rig,
    plan_for,
    scratch_parent,
    settle,
    state_root,
)
from benchmarks.report import Figure, Report, summary
from benchmarks.wire import PLAN, RESULT, EventTap, Sender
from nvme_agent.harness.agent import AgentProcess
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.real import RealBacking, RealModeError, check_real_mode

SIZE = 64 << 20
OPTIONS = "nodev,nosuid,noatime"
#: Bursts, each alternated with its one-by-one baseline; the figure is their median.
ROUNDS = 3


def mount_result(nsid: int | None = None, action: str = "mount", *, ok: bool | None = None) -> Any:
    """Matches an ``action-result`` of ``action`` (of ``nsid``); ``ok``: only those whose
    status is ``ok`` (True) or is not (False)."""

    def match(record: Any) -> bool:
        return (
            isinstance(record, dict)
            and record.get("type") == "action-result"
            and record.get("action") == action
            and (nsid is None or record.get("nsid") == nsid)
            and (ok is None or (record.get("status") == "ok") is ok)
        )

    return match


def _why_not() -> str | None:
    reason = unavailable_reason()
    if reason is not None:
        return reason
    try:
        check_real_mode()
    except RealModeError as exc:
        return str(exc)
    return None


def _bare_mounts(devices: list[str], root: Path) -> list[float]:
    """Each device mounted by a bare mount(8), one after the other; seconds per mount.
    Everything is unmounted again afterwards (not timed)."""
    times: list[float] = []
    targets: list[Path] = []
    try:
        for i, device in enumerate(devices):
            target = root / f"bare-{i}"
            target.mkdir()
            targets.append(target)
            started = time.perf_counter()
            subprocess.run(["mount", "-o", OPTIONS, device, str(target)], check=True)
            times.append(time.perf_counter() - started)
    finally:
        for target in targets:
            _unmount_bare(target)
    return times


def _unmount_bare(target: Path) -> None:
    """Unmount a baseline's mount point (lazily if it is busy) and remove it; never a
    recursive removal, which would go into a filesystem still mounted."""
    done = subprocess.run(["umount", str(target)], check=False, capture_output=True)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
    with contextlib.suppress(OSError):
        target.rmdir()


def _remove_bare_root(root: Path) -> None:
    for target in root.iterdir():
        _unmount_bare(target)
    with contextlib.suppress(OSError):
        root.rmdir()


def _results_ok(tap: EventTap, action: str, at: int, count: int, what: str) -> None:
    """Wait for ``count`` results of ``action`` since ``at``; raise unless all came, ok."""
    seen, _ = tap.wait_count(mount_result(action=action), at, count, TIMEOUT, RESULT)
    ok = tap.count(mount_result(action=action, ok=True), at, RESULT)
    if seen < count or ok < count:
        raise RuntimeError(f"{what}: {ok} of {count} {action}s done ({seen} results)")


@dataclass
class Rounds:
    """Bursts alternated with their baseline: the same devices mounted one by one."""

    serial: list[float] = field(default_factory=list)  # seconds, all devices one by one
    burst: list[float | None] = field(default_factory=list)  # first uevent sent -> last mount
    mounted: list[int] = field(default_factory=list)

    def speedups(self) -> list[float]:
        return [s / b for s, b in zip(self.serial, self.burst, strict=True) if b]


@dataclass
class Pairs:
    """Single mounts, each beside a bare mount of the same device just before it."""

    agent: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)


def run(report: Report, *, count: int, cycles: int) -> None:
    reason = _why_not()
    if reason is not None:
        report.skipped["mounts"] = reason
        return
    # Not below /tmp: the policy refuses a mount root in a system or home tree.
    mount_root = Path(tempfile.mkdtemp(prefix="nvme-agent-bench-mnt-", dir="/run"))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="nvme-agent-bench-", dir=scratch_parent()) as tmp,
            state_root(report) as states,
            Bed(multipath=True, timeout=BED_TIMEOUT) as bed,
            RealBacking(Path(tmp) / "images", str(mount_root)) as backing,
        ):
            rig = Rig(bed, Path(tmp), count, state_root=states)
            _measure(report, rig, backing, mount_root, count, cycles)
    finally:
        shutil.rmtree(mount_root, ignore_errors=True)


def _measure(
    report: Report,
    rig: Rig,
    backing: RealBacking,
    mount_root: Path,
    count: int,
    cycles: int,
) -> None:
    bed = rig.bed
    rig.configs = [
        backing.back(dataclasses.replace(cfg, size_bytes=SIZE), lambda _event, _text: None)
        for cfg in rig.configs
    ]
    devices = [cfg.devname or "" for cfg in rig.configs]
    rig.record(teardown=True)
    # The baselines' mount points are outside the agent's mount root: nothing of theirs is
    # the agent's to look at.
    bare_root = Path(tempfile.mkdtemp(prefix="nvme-agent-bench-bare-", dir="/run"))
    try:
        _bare_mounts(devices, bare_root)  # warm-up: the first mount of a new filesystem is slower
        rig.mount_root = str(mount_root)
        policy = rig.write_policy("policy.yaml", 1)
        before = set(bed.listeners())
        agent = rig.start_agent("agent", policy, dry_run=False)
        try:
            tap = EventTap(agent.events_socket)
            sender = Sender(rig.listener(before))
            rig.quiet_attach(rig.configs)
            start = len(tap)
            rounds = _rounds(rig, agent, sender, tap, devices, bare_root, count)
            pairs = _pairs(rig, agent, sender, tap, bare_root, cycles)
            failed = tap.count(mount_result(ok=False), start, RESULT)
            planned = tap.count(plan_for("namespace-added"), start, PLAN)
            sender.close()
            tap.close()
        finally:
            agent.stop()
    finally:
        _remove_bare_root(bare_root)
    _figures(report, rounds, pairs, count, failed, planned)


def _rounds(
    rig: Rig,
    agent: AgentProcess,
    sender: Sender,
    tap: EventTap,
    devices: list[str],
    bare_root: Path,
    count: int,
) -> Rounds:
    """:data:`ROUNDS` times: every device mounted one by one (bare), then the whole burst sent
    to the agent, then taken back (every namespace removed, so unmounted) but after the last.
    Each burst is next to its own baseline, so a slow moment of the machine hits both; each
    starts with what was written before it on disk (``sync``) and the agent settled."""
    rounds = Rounds()
    for round_ in range(ROUNDS):
        os.sync()
        rounds.serial.append(sum(_bare_mounts(devices, bare_root)))
        os.sync()
        at = len(tap)
        first = sender.send(rig.burst[0])
        for datagram in rig.burst[1:]:
            sender.send(datagram)
        _, done = tap.wait_count(mount_result(), at, count, TIMEOUT, RESULT)
        rounds.mounted.append(tap.count(mount_result(ok=True), at, RESULT))
        rounds.burst.append((done - first) / 1e9 if done is not None else None)
        if round_ < ROUNDS - 1:
            at = len(tap)
            for datagram in rig.teardown:
                sender.send(datagram)
            _results_ok(tap, "unmount", at, count, f"taking back burst {round_ + 1}")
            settle(agent)
    return rounds


def _pairs(
    rig: Rig, agent: AgentProcess, sender: Sender, tap: EventTap, bare_root: Path, cycles: int
) -> Pairs:
    """Each cycle: the namespace removed (the agent unmounts it), its device mounted and
    unmounted by a bare mount(8), then the namespace added again (the agent mounts it).  Each
    timed mount starts with the agent settled and what was written before it on disk."""
    pairs = Pairs()
    for i in range(cycles):
        cycle = rig.cycles[i % len(rig.cycles)]
        at = len(tap)
        sender.send(cycle.remove)
        _results_ok(tap, "unmount", at, 1, f"removing nsid {cycle.nsid}")
        settle(agent)
        device = rig.configs[cycle.nsid - 1].devname or ""
        os.sync()
        (bare,) = _bare_mounts([device], bare_root)
        os.sync()
        at = len(tap)
        sent = sender.send(cycle.add)
        _, stamp, result = tap.wait(mount_result(cycle.nsid), at, TIMEOUT, RESULT)
        if result.get("status") == "ok":
            pairs.agent.append((stamp - sent) / 1e9)
            pairs.bare.append(bare)
    return pairs


def _figures(
    report: Report, rounds: Rounds, pairs: Pairs, count: int, failed: int, planned: int
) -> None:
    one, base = summary(pairs.agent), summary(pairs.bare)
    report.figures.append(
        Figure(
            name="uevent -> real mount done (ext4 on loop), p50",
            value=one.get("p50", 0) * 1e3 if one["n"] else None,
            unit="ms",
            baseline="bare mount(8) of the same device just before each, p50",
            baseline_value=base.get("p50", 0) * 1e3 if base["n"] else None,
            target="<= 1.2x",
            met=bool(one["n"] and base["n"]) and one["p50"] <= 1.2 * base["p50"],
            details={"agent": one, "bare_mount": base, "failed_mounts": failed},
        )
    )
    speedups = rounds.speedups()
    speedup = statistics.median(speedups) if speedups else None
    bursts = [b for b in rounds.burst if b is not None]
    all_mounted = len(bursts) == ROUNDS and all(m == count for m in rounds.mounted)
    report.figures.append(
        Figure(
            name=f"{count} real mounts in one burst, parallel runner, median of {ROUNDS}",
            value=statistics.median(bursts) if bursts else None,
            unit="s",
            baseline=f"the same {count} mounted one by one (bare mount) before each burst, "
            f"median of {ROUNDS}",
            baseline_value=statistics.median(rounds.serial),
            target=">= 1.6x faster",
            met=speedup is not None and speedup >= 1.6 and all_mounted,
            details={
                "speedup": speedup,
                "speedups": speedups,
                "bursts_s": rounds.burst,
                "serial_s": rounds.serial,
                "mounted": min(rounds.mounted, default=0),
                "planned": planned,
                "cpus": os.cpu_count(),
            },
        )
    )
