"""The client side of ``listener.py``: a pyudev monitor in a child process inside a bed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from nvme_agent.harness.agent import environ_without_bed
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import Event

LISTENER = Path(__file__).with_name("listener.py")


def reaches_agent(event: Event) -> bool:
    """Whether the agent's filtered monitor receives ``event`` (not bdi, pci, hidden paths)."""
    return not event.device.silent and event.device.subsystem in (
        "block",
        "nvme",
        "nvme-generic",
        "nvme-subsystem",
    )


class Listener:
    """tests/support/listener.py in a child process inside the bed."""

    def __init__(self, bed: Bed, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LISTENER), str(count)],
            stdout=subprocess.PIPE,
            text=True,
            env=bed.env(environ_without_bed()),
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())  # monitor bound, coldplug done
        self.coldplug: list[dict[str, Any]] = first["coldplug"]
        # Read continuously: a full stdout pipe would stall the listener, then the bed.
        self.lines: list[str] = []
        self.arrived = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.arrived:
                self.lines.append(line)
                self.arrived.notify_all()
        with self.arrived:
            self.eof = True
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        """Block until the listener printed ``count`` event lines (or exited)."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.lines) >= count or self.eof, timeout)
        assert ok and len(self.lines) >= count, f"listener printed {len(self.lines)}/{count}"

    def finish(self) -> list[dict[str, Any]]:
        assert self.proc.wait(timeout=30) == 0
        self.reader.join(timeout=10)
        events = [json.loads(line) for line in self.lines]
        assert all("timeout" not in e for e in events), "listener timed out waiting for events"
        return events
