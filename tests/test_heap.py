"""The process's heap around coldplug (issue 13, ``nvme_agent.heap``): the collector is paused
while coldplug builds the topology, and only the program that is the daemon settles the heap
(one collection, then ``gc.freeze``) once it is ready.  Freezing is safe only because what the
start builds makes no garbage cycles when it goes: checked for the topology here and for a
policy in ``test_policy_loader``."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.inproc import InProcess

from nvme_agent.cli.main import main
from nvme_agent.harness.layout import ControllerConfig, Layout, NamespaceConfig, PartitionConfig
from nvme_agent.heap import settle_after_start
from nvme_agent.service import daemon as daemon_module
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology


def layout_records(count: int, multipath: bool = True) -> list[DeviceRecord]:
    layout = Layout(multipath=multipath)
    events = layout.add_controller(ControllerConfig("nvme0", "HEAP0"))
    events += layout.add_controller(ControllerConfig("nvme1", "HEAP0"))
    parts = (PartitionConfig(1, 64 << 20, fs="ext4", label="p"),)
    for nsid in range(1, count + 1):  # odd ones reached through both controllers
        label, fs = f"n{nsid}", "xfs" if nsid % 2 else None
        events += layout.attach(
            NamespaceConfig(
                "nvme0", nsid, fs=fs, label=label, partitions=parts if fs is None else ()
            )
        )
        if nsid % 2:
            events += layout.add_path("nvme1", nsid)
    return [e.device.record(e.action, seqnum) for seqnum, e in enumerate(events, 1)]


class ColdplugIntake:
    """Coldplug records, noting whether the collector ran while the daemon took them."""

    def __init__(self, records: list[DeviceRecord]) -> None:
        self._read, self._write = os.pipe()  # never readable: no live events
        self.records = records
        self.collector_on_at_start: bool | None = None

    def start(self) -> list[DeviceRecord]:
        self.collector_on_at_start = gc.isenabled()
        return list(self.records)

    def enumerate(self) -> list[DeviceRecord]:
        return list(self.records)

    def fileno(self) -> int:
        return self._read

    def drain(self) -> Iterator[DeviceRecord]:
        return iter(())

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def test_coldplug_runs_with_the_collector_paused_and_an_embedded_daemon_freezes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake = ColdplugIntake(layout_records(3))
    frozen = gc.get_freeze_count()
    try:
        with InProcess(monkeypatch, intake=intake) as d:
            assert intake.collector_on_at_start is False
            assert gc.isenabled()  # back once coldplug is done
            assert len(d.request({"cmd": "status"})["namespaces"]) == 3
            assert gc.get_freeze_count() == frozen  # not the daemon's process to settle
    finally:
        intake.close()


def test_the_program_that_is_the_daemon_settles_its_heap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Any] = []

    async def fake_run_daemon(config: Any) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(daemon_module, "run_daemon", fake_run_daemon)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules: []\n")
    code = main(["run", "--policy", str(policy), "--runtime-dir", str(tmp_path / "r")])
    assert code == 0 and len(seen) == 1 and seen[0].owns_process is True
    assert daemon_module.DaemonConfig(tmp_path, tmp_path, tmp_path).owns_process is False


def test_settling_freezes_what_lives() -> None:
    kept = [{"a": [1]} for _ in range(100)]
    try:
        settle_after_start()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("multipath", [True, False])
def test_a_topology_makes_no_garbage_cycles_when_it_goes(multipath: bool) -> None:
    # Frozen objects are freed by their reference counts; a cycle among them would stay.
    records = layout_records(20, multipath)
    gc.collect()

    def build_and_drop() -> None:
        topology = Topology()
        topology.apply_all(records)
        snap = topology.snapshot()
        assert len(snap.namespaces) == 20
        topology.apply_all(
            [DeviceRecord.build("remove", r.devpath, r.subsystem) for r in reversed(records)]
        )
        topology.snapshot()

    build_and_drop()
    assert gc.collect() == 0
