"""The operator's view of the running daemon through the real pyudev path (umockdev bed, dry
run): a new rule and what is already attached (reload -> pending -> status -> reconcile),
status with two controllers, the metrics file, and times in the history and the stream
(issue 14: 2, 7, 8, 14; issue 12: paths in status)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import Agent, dry_mount_root, is_result, is_type

from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig, PartitionConfig
from nvme_agent.outputs.metrics import METRICS, PREFIX
from nvme_agent.outputs.times import parse

pytestmark = [
    pytest.mark.umockdev,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

NQN = "nqn.2019-08.org.qemu:shared"
LOGS_ONLY = """\
version: 1
defaults:
  mount_root: {root}
rules:
  - name: logs
    match: {{fs_label: "logs*"}}
    on_add:
      - mount: {{path: "{root}/{{label}}"}}
"""
WITH_DATA = (
    LOGS_ONLY
    + """\
  - name: data
    match: {{fs_type: ext4}}
    on_add:
      - mount: {{path: "{root}/data-{{nsid}}"}}
"""
)


def cli(bed: Bed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvme_agent", *args],
        env=bed.env(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def two_path_bed() -> Iterator[Bed]:
    """Two controllers of one subsystem, native multipath: every namespace has two paths."""
    with Bed(multipath=True) as b:
        for i in (0, 1):
            b.add_controller(
                ControllerConfig(f"nvme{i}", serial="SHARED01", subsysnqn=NQN, cntlid=i),
                quiet=True,
            )
        yield b


def start(bed: Bed, tmp_path: Path, text: str, *extra: str) -> Agent:
    root = dry_mount_root(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(text.format(root=root))
    (tmp_path / "agent").mkdir(exist_ok=True)
    return Agent(policy, tmp_path / "agent", bed.env(os.environ), extra_args=extra).start()


def ns(nsid: int, label: str, **kw: Any) -> NamespaceConfig:
    return NamespaceConfig("nvme0", nsid=nsid, fs="ext4", label=label, **kw)


def test_a_new_rule_is_reported_by_reload_shown_by_status_and_applied_by_reconcile(
    two_path_bed: Bed, tmp_path: Path
) -> None:
    agent = start(two_path_bed, tmp_path, LOGS_ONLY)
    run = ["--runtime-dir", str(agent.runtime_dir)]
    try:
        two_path_bed.add_namespace(ns(1, "data1"))
        two_path_bed.add_namespace(ns(2, "logs2"))
        two_path_bed.add_namespace(ns(3, "data3"))
        for nsid in (1, 2, 3):
            agent.cursor = 0
            agent.wait_for(is_type("plan", nsid))
        agent.policy.write_text(WITH_DATA.format(root=dry_mount_root(tmp_path)))
        reload = cli(two_path_bed, "reload", *run)
        assert reload.returncode == 0, reload.stderr
        assert reload.stdout.splitlines() == [
            "policy reloaded (generation 2)",
            "2 present namespaces would be treated differently (nsid 1, 3): "
            "`nvme-agent reconcile` applies the policy to them",
        ]
        status = cli(two_path_bed, "status", "--json", *run)
        records = [json.loads(line) for line in status.stdout.splitlines()]
        summary = records[0]
        assert summary["type"] == "summary" and summary["not_applied"] == 2
        assert summary["counters"]["reconcile_pending"] == 2
        rows = {r["nsid"]: r for r in records if r["type"] == "namespace"}
        assert [(n, rows[n]["rule"], rows[n]["applied"]) for n in (1, 2, 3)] == [
            (1, "data", False),
            (2, "logs", True),
            (3, "data", False),
        ]
        text = cli(two_path_bed, "status", *run).stdout
        assert text.count("data, not applied (policy changed)") == 2
        dry = cli(two_path_bed, "reconcile", "--dry-run", "--json", *run)
        targets = [json.loads(line) for line in dry.stdout.splitlines()]
        assert [t["nsid"] for t in targets if t["type"] == "reconcile-target"] == [1, 3]
        one = cli(two_path_bed, "reconcile", "--nsid", "1", *run)
        assert one.returncode == 0, one.stderr
        assert "mount: dry-run" in one.stdout and one.stdout.endswith("reconciled 1 target(s)\n")
        plan = next(r for r in agent.seen if r.get("type") == "plan" and r.get("rule") == "data")
        assert plan["nsid"] == 1 and plan["actions"][0]["target"].endswith("/data-1")
        after = cli(two_path_bed, "status", "--json", *run)
        rows = {r["nsid"]: r for r in map(json.loads, after.stdout.splitlines()) if r["nsid"]}
        assert (rows[1]["applied"], rows[3]["applied"]) == (True, False)
        assert cli(two_path_bed, "reconcile", "--nsid", "42", *run).returncode == 3
        rest = cli(two_path_bed, "reconcile", *run)
        assert rest.returncode == 0 and "reconciled 1 target(s)" in rest.stdout
        assert cli(two_path_bed, "reconcile", "--dry-run", *run).stdout.startswith(
            "nothing to reconcile"
        )
    finally:
        assert agent.stop() == 0


def test_status_with_two_controllers_groups_by_subsystem_and_lists_paths(
    two_path_bed: Bed, tmp_path: Path
) -> None:
    agent = start(two_path_bed, tmp_path, LOGS_ONLY)
    run = ["--runtime-dir", str(agent.runtime_dir)]
    try:
        two_path_bed.add_namespace(ns(1, "logs1"))
        two_path_bed.add_namespace(
            NamespaceConfig(
                "nvme0", nsid=2, partitions=(PartitionConfig(1, 64 << 20, fs="ext4", label="p"),)
            )
        )
        agent.wait_for(is_type("partition-added", 2))
        out = cli(two_path_bed, "status", *run)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        head = lines.index(f"subsystem {NQN}")
        assert [line.split()[1] for line in lines[head + 1 : head + 3]] == ["nvme0:", "nvme1:"]
        rows = [line.split() for line in lines if re.match(r"^  \d ", line)]
        assert [r[0] for r in rows] == ["1", "2"]
        assert any(line.split()[0].startswith("/dev/") and "partition" in line for line in lines)
        paths = [line.strip() for line in lines if line.strip().startswith("paths:")]
        assert paths and all("nvme0" in p and "nvme1" in p and "live" in p for p in paths)
        records = [
            json.loads(line)
            for line in cli(two_path_bed, "status", "--json", *run).stdout.splitlines()
        ]
        assert records[0]["subsystems"] == [
            {"subsysnqn": NQN, "controllers": ["nvme0", "nvme1"], "nsids": [1, 2]}
        ]
    finally:
        assert agent.stop() == 0


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, checking the exposition format's shape line by line."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) nvme_agent_[a-z_]+ .+$", line), line
            continue
        label = r'[a-z_]+="[^"\\]*"'
        match = re.match(rf"^(nvme_agent_[a-z_]+(?:\{{{label}(?:,{label})*\}})?) (\S+)$", line)
        assert match, line
        values[match.group(1)] = float(match.group(2))
    return values


def test_the_metrics_file_and_the_status_summary_count_the_same_things(
    two_path_bed: Bed, tmp_path: Path
) -> None:
    metrics = tmp_path / "textfile" / "nvme-agent.prom"
    metrics.parent.mkdir()
    agent = start(two_path_bed, tmp_path, LOGS_ONLY, "--metrics-file", str(metrics))
    try:
        first = parse_prometheus(metrics.read_text())  # written at READY=1
        assert first[f"{PREFIX}namespaces"] == 0
        assert first[f"{PREFIX}policy_generation"] == 1
        two_path_bed.add_namespace(ns(1, "logs1"))
        agent.wait_for(is_result("mount", 1))
        settle = agent.control({"cmd": "settle", "timeout": 30})
        assert settle["ok"]
        agent.wait_notify("STATUS=1 namespaces, 0 mounted, 0 failures")
        assert agent.control({"cmd": "reload"})["ok"]
        summary = agent.control({"cmd": "status"})["counters"]
    finally:
        assert agent.stop() == 0  # the last write is at stop: nothing is left pending
    values = parse_prometheus(metrics.read_text())
    assert values[f'{PREFIX}topology_changes_total{{change="namespace-added"}}'] == 1
    assert values[f'{PREFIX}actions_total{{action="mount",status="dry-run"}}'] == 1
    assert values[f'{PREFIX}policy_reloads_total{{result="ok"}}'] == 1
    assert values[f"{PREFIX}namespaces"] == 1 and values[f"{PREFIX}policy_generation"] == 2
    assert values[f"{PREFIX}udev_events_total"] == summary["udev_events"] > 0
    assert summary["changes"]["namespace-added"] == 1
    assert summary["actions"]["mount"]["dry-run"] == 1
    names = {re.sub(r"\{.*", "", k) for k in values}
    assert names >= {PREFIX + m.name for m in METRICS if not m.labels} | {f"{PREFIX}info"}
    assert [p.name for p in metrics.parent.iterdir()] == ["nvme-agent.prom"]  # no temp left
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"


def test_history_and_the_event_stream_carry_times(two_path_bed: Bed, tmp_path: Path) -> None:
    agent = start(two_path_bed, tmp_path, LOGS_ONLY)
    try:
        two_path_bed.add_namespace(ns(5, "logs5"))
        added = agent.wait_for(is_type("namespace-added", 5))
        plan = agent.wait_for(is_type("plan", 5))
        result = agent.wait_for(is_result("mount", 5))
    finally:
        assert agent.stop() == 0
    stamps = [t for r in (added, plan, result) if (t := parse(r["time"])) is not None]
    assert len(stamps) == 3 and stamps == sorted(stamps)
    history = (tmp_path / "agent" / "state" / "history.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in history if '"nsid": 5' in line]
    assert record["time"] == added["time"]
    shown = cli(two_path_bed, "history", "--state-dir", str(tmp_path / "agent" / "state")).stdout
    assert shown.split()[0] != "-" and parse(shown.split()[0]) is not None
