"""Smoke runs of ``make bench`` (``python -m benchmarks --quick``): every group runs, prints its
table and writes its JSON, nothing is lost and nothing is left behind.  No timing is asserted
here; the figures themselves are what ``make bench`` is for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nvme_agent.harness.bed import unavailable_reason

REPO = Path(__file__).resolve().parents[1]


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| figure | measured | baseline (same run) | ratio | target | met |" in done.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["cpus"] == os.cpu_count()
    return data


def figures(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in data["figures"]}


def test_in_process_figures_and_growth_tables(tmp_path: Path) -> None:
    data = bench(tmp_path, "--only", "topology,policy")
    found = figures(data)
    apply = next(f for name, f in found.items() if name.startswith("topology apply"))
    assert apply["baseline_value"] > 0 and apply["ratio"] is not None and apply["met"] is not None
    tables = {t["name"]: t for t in data["tables"]}
    topo = next(t for name, t in tables.items() if name.startswith("topology"))
    assert topo["rows"] == ["3", "10"] and "x smallest" in topo["cells"]["10"]
    decide = next(t for name, t in tables.items() if name.startswith("decide"))
    assert decide["columns"] == ["R=1", "R=5"]


@pytest.mark.umockdev
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_daemon_figures_lose_no_event(tmp_path: Path) -> None:
    data = bench(tmp_path, "--only", "daemon", "--idle-seconds", "0.2")
    assert "daemon" not in data["skipped"]
    assert data["notes"]["bytecode"].startswith("compiled beforehand")
    found = figures(data)
    burst = next(f for name, f in found.items() if name.endswith("after the last uevent"))
    assert burst["details"]["lost"] == 0 and burst["baseline_value"] is not None
    latency = found["uevent -> change -> plan decided, p50"]
    assert latency["details"]["daemon"]["n"] == latency["details"]["bare_monitor"]["n"] == 8
    reload = next(f for name, f in found.items() if name.startswith("reload"))
    assert reload["details"]["reload_ok"] and reload["baseline_value"] > 0
    during = next(f for name, f in found.items() if name.startswith("events during"))
    assert during["details"]["lost"] == 0 and during["details"]["events"] > 0
    assert any(name.startswith("coldplug") for name in found)
    assert any(name.startswith("idle: RSS") for name in found)


@pytest.mark.umockdev
@pytest.mark.root
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
@pytest.mark.skipif(os.geteuid() != 0, reason="real mounts need root")
def test_real_mount_figures_leave_nothing_behind(tmp_path: Path) -> None:
    data = bench(tmp_path, "--only", "mounts")
    assert "mounts" not in data["skipped"]
    burst = next(f for f in data["figures"] if "parallel runner" in f["name"])
    # Every round's burst was mounted, taken back and mounted again, each beside its baseline.
    assert burst["details"]["mounted"] == 2
    assert len(burst["details"]["bursts_s"]) == len(burst["details"]["serial_s"]) == 3
    assert None not in burst["details"]["bursts_s"]
    one = next(f for f in data["figures"] if f["name"].startswith("uevent -> real mount"))
    assert one["details"]["failed_mounts"] == 0
    assert one["details"]["agent"]["n"] == one["details"]["bare_mount"]["n"] == 2
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        assert "nvme-agent-bench" not in f.read()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    assert "nvme-agent-bench" not in loops


def test_the_readme_shows_the_latest_run_as_benchmarks_doc_renders_it() -> None:
    from benchmarks import doc

    data = json.loads(doc.LATEST.read_text(encoding="utf-8"))
    assert data["quick"] is False  # a smoke run's figures are never published
    text = doc.README.read_text(encoding="utf-8")
    assert doc.update(text, data) == text, "run: python -m benchmarks.doc"
    for figure in data["figures"]:
        assert f"| {figure['name']} |" in text


def test_a_figure_read_back_renders_as_written() -> None:
    from benchmarks.report import Figure, Report, Table

    report = Report(
        figures=[Figure("f", 2.0, "ms", "bare", 1.0, "<= 2x", True)],
        tables=[Table("t", ["10"], ["a"], {"10": {"a": 1.5}}, "us")],
        skipped={"mounts": "not root"},
    )
    again = Report.from_dict(json.loads(json.dumps(report.to_dict("cmd", quick=False))))
    assert again.render() == report.render()


# --------------------------------------------------------------------- the baselines' pairing
class _Log(list[str]):
    """What happened, in order, to the fakes below."""


class _FakeSender:
    def __init__(self, log: _Log) -> None:
        self.log, self.clock = log, 0

    def send(self, datagram: bytes) -> int:
        self.log.append(f"daemon {datagram.decode()}")
        self.clock += 10
        return self.clock


class _FakeTap:
    def __init__(self, sender: _FakeSender) -> None:
        self.sender = sender

    def __len__(self) -> int:
        return 0

    def wait(self, match: Any, start: int, timeout: float, needle: Any = None) -> Any:
        return 0, self.sender.clock + 3, {}


class _FakeBare:
    def __init__(self, log: _Log) -> None:
        self.log = log

    def cycle(self, cycle: Any, run: Any) -> None:
        self.log.append(f"bare {cycle.nsid}")
        run.add.append(1)


def test_each_daemon_cycle_follows_the_same_cycle_through_the_baseline_the_daemon_settled() -> None:
    from benchmarks.daemon import Beside, Cycle, Run, _cycles

    log = _Log()
    sender = _FakeSender(log)
    cycles = [Cycle(1, b"-1", b"+1"), Cycle(2, b"-2", b"+2")]
    measured, base = Run(), Run()
    beside = Beside(_FakeBare(log), base, lambda: log.append("settle"))  # type: ignore[arg-type]
    _cycles(sender, _FakeTap(sender), cycles, 3, measured, beside)  # type: ignore[arg-type]
    assert log == [
        *("settle", "bare 1", "daemon -1", "daemon +1"),
        *("settle", "bare 2", "daemon -2", "daemon +2"),
        *("settle", "bare 1", "daemon -1", "daemon +1"),
    ]
    assert measured.remove == measured.add == [3, 3, 3] and len(base.add) == 3


def _rounds(serial: list[float], burst: list[float | None], mounted: list[int]) -> Any:
    from benchmarks.mounts import Rounds

    return Rounds(serial=serial, burst=burst, mounted=mounted)


@pytest.mark.parametrize(
    ("serial", "burst", "mounted", "speedup", "met"),
    [
        # per-round speedups 2.0, 1.5, 1.7: the median decides, not the medians' ratio
        ([1.0, 0.9, 1.7], [0.5, 0.6, 1.0], [4, 4, 4], 1.7, True),
        ([1.0, 0.9, 1.7], [0.5, 0.6, 1.0], [4, 3, 4], 1.7, False),  # a round short of a mount
        ([1.0, 1.0, 1.0], [0.5, None, 0.5], [4, 4, 4], 2.0, False),  # a burst never finished
        ([1.0, 1.0, 1.0], [0.8, 0.5, 0.9], [4, 4, 4], 1.25, False),
    ],
)
def test_the_burst_figure_is_the_median_of_each_rounds_own_speedup(
    serial: list[float], burst: list[float | None], mounted: list[int], speedup: float, met: bool
) -> None:
    from benchmarks.mounts import Pairs, _figures
    from benchmarks.report import Report

    report = Report()
    _figures(report, _rounds(serial, burst, mounted), Pairs([0.012], [0.010]), 4, 0, 4)
    one, figure = report.figures
    assert one.met and one.ratio == pytest.approx(1.2)
    assert figure.details["speedup"] == pytest.approx(speedup)
    assert figure.met is met


@pytest.mark.umockdev
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
@pytest.mark.parametrize("count", [2, 22])
def test_the_recorded_teardown_removes_every_namespace_and_leaves_none_in_sysfs(
    tmp_path: Path, count: int
) -> None:
    from benchmarks.daemon import CYCLE_NAMESPACES, Rig, _is_disk, _nsid
    from nvme_agent.harness.bed import Bed

    assert (count > CYCLE_NAMESPACES) is (count == 22)  # both of record()'s branches
    with Bed(multipath=True, timeout=300) as bed:
        rig = Rig(bed, tmp_path, count)
        rig.record(teardown=True)
        removed = [_nsid(d) for d in rig.teardown if _is_disk(d, "remove")]
        assert sorted(removed) == list(range(1, count + 1))
        added = [_nsid(d) for d in rig.burst if _is_disk(d, "add")]
        assert sorted(added) == list(range(1, count + 1))
        assert len(rig.teardown) == len(rig.burst)  # every datagram of a namespace goes
        assert bed.root is not None
        subsystem = Path(bed.root) / "sys/devices/virtual/nvme-subsystem/nvme-subsys0"
        assert not list(subsystem.glob("nvme0n*"))
