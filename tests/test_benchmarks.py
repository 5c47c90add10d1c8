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
