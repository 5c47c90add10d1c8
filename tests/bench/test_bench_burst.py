"""Benchmarks (marker ``bench``, not run by ``make test``): ``make bench`` prints the figures.

A rescan burst of N namespaces through the umockdev bed into the real daemon (dry run):
end-to-end time until every namespace-added and its plan is on the event stream, and the
daemon's resident memory afterwards.  Targets live here, not in timed correctness tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from support.daemon import Agent, is_type

from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig

pytestmark = [
    pytest.mark.bench,
    pytest.mark.umockdev,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

POLICY = """\
version: 1
defaults: {{mount_root: {root}}}
rules:
  - name: all
    match: {{fs_type: ext4}}
    on_add: [{{mount: {{path: "{root}/{{label}}"}}}}]
"""


@pytest.mark.parametrize("count", [256, 1000])
def test_burst_throughput_and_memory(count: int, tmp_path: Path) -> None:
    with Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(root=tmp_path / "mnt"))
        (tmp_path / "agent").mkdir()
        agent = Agent(policy, tmp_path / "agent", bed.env(os.environ)).start()
        try:
            configs = [
                NamespaceConfig("nvme0", nsid=1 + i, fs="ext4", label=f"n{i}") for i in range(count)
            ]
            started = time.perf_counter()
            events = [e for e in bed.burst(configs) if not e.device.silent]  # real uevents
            sent = time.perf_counter()
            agent.collect(is_type("namespace-added"), count, timeout=600)
            agent.cursor = 0
            agent.collect(is_type("plan"), count, timeout=600)
            settled = agent.control({"cmd": "settle", "timeout": 600})
            done = time.perf_counter()
            assert settled["ok"]
            assert agent.proc is not None
            rss = psutil.Process(agent.proc.pid).memory_info().rss
            print(
                f"\nburst of {count} namespaces ({len(events)} udev events): sent in "
                f"{sent - started:.2f}s, all changes+plans+dry-run results in "
                f"{done - started:.2f}s ({len(events) / (done - started):.0f} events/s); "
                f"daemon RSS {rss / 2**20:.1f} MiB"
            )
        finally:
            agent.stop()
