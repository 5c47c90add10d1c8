"""``settle`` takes in the udev events already delivered before it waits (issue 14.1: the
README's ``nvme attach-ns ...; nvme-agent status --settle 30`` must show the namespace), and
the watchdog is fed while a stop drains (issue 14.12).

The daemon runs in process on an intake whose socket never becomes readable: the records it
holds reach the daemon only if settle itself reads them, so without that the namespace stays
missing, every time (no race to win or lose).
"""

from __future__ import annotations

import asyncio
import os
import threading
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


def test_watchdog_pings_go_on_while_the_stop_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain of running actions may take as long as WatchdogSec=: the pings must go on
    until the daemon is done, or systemd aborts it and SIGKILLs the hooks it waits for
    (found in the real guest: 'Watchdog timeout', SIGABRT, e2e hook SIGKILLed)."""
    released = threading.Event()
    with InProcess(monkeypatch, intake=HeldIntake(), watchdog_usec=100_000) as d:
        assert d.daemon is not None and d.daemon.runner is not None and d.loop is not None

        async def held_drain(timeout: float) -> bool:
            return await asyncio.to_thread(released.wait, 60)

        monkeypatch.setattr(d.daemon.runner, "drain", held_drain)
        d.loop.call_soon_threadsafe(d.daemon.stop)
        stopping = d.notify.wait_for("STOPPING=1")
        try:
            # Three in a row: one ping may already have been due when the stop came.
            seen = stopping
            for _ in range(3):
                seen = d.notify.wait_for("WATCHDOG=1", after=seen + 1, timeout=10)
        finally:
            released.set()
