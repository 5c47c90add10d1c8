"""``settle`` takes in the udev events already delivered before it waits (issue 14.1: the
README's ``nvme attach-ns ...; nvme-agent status --settle 30`` must show the namespace).

The daemon runs in process on an intake whose socket never becomes readable: the records it
holds reach the daemon only if settle itself reads them, so without that the namespace stays
missing, every time (no race to win or lose).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support.inproc import InProcess

from nvme_agent.harness.devices import ControllerConfig, NamespaceConfig
from nvme_agent.harness.layout import Layout
from nvme_agent.topology.records import DeviceRecord


class HeldIntake:
    """Delivered udev records whose socket never signals readable."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()  # nothing is ever written: never readable
        self.held: list[DeviceRecord] = []

    def start(self) -> list[DeviceRecord]:
        return []

    def enumerate(self) -> list[DeviceRecord]:
        return []

    def fileno(self) -> int:
        return self._read

    def drain(self) -> Iterator[DeviceRecord]:
        while self.held:
            yield self.held.pop(0)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def _attach_records(nsid: int) -> list[DeviceRecord]:
    layout = Layout()
    events = layout.add_controller(ControllerConfig("nvme0", "SETTLE0"))
    events += layout.attach(NamespaceConfig("nvme0", nsid, fs="ext4", label="data"))
    return [e.device.record(e.action, seqnum) for seqnum, e in enumerate(events, 1)]


def test_settle_takes_in_delivered_udev_events_before_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake = HeldIntake()
    try:
        with InProcess(monkeypatch, intake=intake) as d:
            assert d.request({"cmd": "status"})["namespaces"] == []
            intake.held.extend(_attach_records(2))
            assert d.request({"cmd": "settle", "timeout": 30})["ok"] is True
            found = d.request({"cmd": "status"})["namespaces"]
            assert [(n["nsid"], n["name"]) for n in found] == [(2, "nvme0n1")], found
            assert intake.held == []
    finally:
        intake.close()
