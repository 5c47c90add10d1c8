"""Real-mount figures: ext4 on loop devices behind fake namespaces, the daemon acting for real.

The bed's namespaces carry ``DEVNAME`` of a loop device holding a real ext4
(:class:`~nvme_agent.harness.real.RealBacking`), so the daemon's mount(8) mounts it.  Load
comes from :mod:`benchmarks.wire` as for the dry-run figures.  Baselines: the same loop devices
mounted by a bare ``mount -o nodev,nosuid,noatime`` (the policy's default options), one by one.
Everything mounted below the benchmark's mount root is unmounted and every loop device
detached on the way out (also after an error).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.daemon import (
    BED_TIMEOUT,
    TIMEOUT,
    Rig,
    plan_for,
    scratch_parent,
    state_root,
)
from benchmarks.report import Figure, Report, summary
from benchmarks.wire import PLAN, RESULT, EventTap, Sender
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.real import RealBacking, RealModeError, check_real_mode

SIZE = 64 << 20
OPTIONS = "nodev,nosuid,noatime"


def mount_result(nsid: int | None = None, action: str = "mount") -> Any:
    def match(record: Any) -> bool:
        return (
            isinstance(record, dict)
            and record.get("type") == "action-result"
            and record.get("action") == action
            and (nsid is None or record.get("nsid") == nsid)
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
    """Each device mounted by a bare mount(8), one after the other; seconds per mount."""
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
            subprocess.run(["umount", str(target)], check=False, capture_output=True)
            target.rmdir()
    return times


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
    rig.record()
    _bare_mounts(devices, mount_root)  # warm-up: the first mount of a new filesystem is slower
    bare = _bare_mounts(devices, mount_root)
    rig.mount_root = str(mount_root)
    policy = rig.write_policy("policy.yaml", 1)
    before = set(bed.listeners())
    agent = rig.start_agent("agent", policy, dry_run=False)
    try:
        tap = EventTap(agent.events_socket)
        sender = Sender(rig.listener(before))
        rig.quiet_attach(rig.configs)
        start = len(tap)
        first = sender.send(rig.burst[0])
        for datagram in rig.burst[1:]:
            sender.send(datagram)
        mounted, done = tap.wait_count(mount_result(), start, count, TIMEOUT, RESULT)
        latencies: list[float] = []
        for i in range(cycles):
            cycle = rig.cycles[i % len(rig.cycles)]
            at = len(tap)
            sender.send(cycle.remove)
            tap.wait(mount_result(cycle.nsid, "unmount"), at, TIMEOUT, RESULT)
            at = len(tap)
            sent = sender.send(cycle.add)
            _, stamp, result = tap.wait(mount_result(cycle.nsid), at, TIMEOUT, RESULT)
            if result.get("status") == "ok":
                latencies.append((stamp - sent) / 1e9)
        failed = tap.count(lambda r: mount_result()(r) and r.get("status") != "ok", start, RESULT)
        planned = tap.count(plan_for("namespace-added"), start, PLAN)
        sender.close()
        tap.close()
    finally:
        agent.stop()
    _figures(report, bare, latencies, count, mounted, failed, planned, first, done)


def _figures(
    report: Report,
    bare: list[float],
    latencies: list[float],
    count: int,
    mounted: int,
    failed: int,
    planned: int,
    first: int,
    done: int | None,
) -> None:
    one, base = summary(latencies), summary(bare)
    report.figures.append(
        Figure(
            name="uevent -> real mount done (ext4 on loop), p50",
            value=one.get("p50", 0) * 1e3 if one["n"] else None,
            unit="ms",
            baseline="bare mount(8) of the same device, p50",
            baseline_value=base.get("p50", 0) * 1e3 if base["n"] else None,
            target="<= 1.2x",
            met=bool(one["n"] and base["n"]) and one["p50"] <= 1.2 * base["p50"],
            details={"agent": one, "bare_mount": base, "failed_mounts": failed},
        )
    )
    burst = (done - first) / 1e9 if done is not None else None
    serial = sum(bare)
    speedup = serial / burst if burst else None
    report.figures.append(
        Figure(
            name=f"{count} real mounts in one burst, parallel runner",
            value=burst,
            unit="s",
            baseline=f"the same {count} mounted one by one (bare mount)",
            baseline_value=serial,
            target=">= 1.6x faster",
            met=speedup is not None and speedup >= 1.6 and mounted == count,
            details={
                "speedup": speedup,
                "mounted": mounted,
                "planned": planned,
                "cpus": os.cpu_count(),
            },
        )
    )
