"""``nvme-agent`` whose udev monitor can be made to overrun (run as a script).

Usage: ``storm_agent.py run ARGS...`` with ``NVME_AGENT_TEST_OVERRUN=PATH`` in the environment.

In the umockdev bed the daemon's netlink socket is an AF_UNIX datagram socket, which never
answers ``ENOBUFS``: the kernel's overrun has to be imitated.  This stands in for the kernel
only, at the boundary the daemon reads from (the pyudev monitor's non-blocking receive): when
the file at ``PATH`` exists and holds a number N, the next N events the monitor delivers are
read and thrown away (the kernel dropped them), then the receive raises ``OSError(ENOBUFS)``
once, as ``recvmsg`` does after a drop, and the file is renamed ``PATH.done``.  Everything
else is the product's own code: the CLI, the daemon, the real intake and its re-enumeration.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from nvme_agent.cli.main import main
from nvme_agent.service import daemon as daemon_module
from nvme_agent.topology.intake import UdevIntake

TRIGGER_ENV = "NVME_AGENT_TEST_OVERRUN"


class OverrunMonitor:
    """A pyudev monitor that drops N events and then reports ``ENOBUFS`` when told to."""

    def __init__(self, monitor: Any, trigger: Path) -> None:
        self._monitor = monitor
        self._trigger = trigger
        self._left: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._monitor, name)

    def _receive_device(self) -> Any:
        if self._left is None and self._trigger.exists():
            self._left = int(self._trigger.read_text())
        if self._left is None:
            return self._monitor._receive_device()
        while self._left > 0:
            if self._monitor._receive_device() is None:
                return None  # the rest has not arrived yet: the loop calls again
            self._left -= 1
        self._left = None
        os.replace(self._trigger, self._trigger.with_name(self._trigger.name + ".done"))
        raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))


class OverrunIntake(UdevIntake):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = OverrunMonitor(self.monitor, Path(os.environ[TRIGGER_ENV]))


if __name__ == "__main__":
    # The daemon makes its intake through the name it imported; patch.object fails loudly if
    # that name goes away, where an assignment would add one nobody uses.
    with mock.patch.object(daemon_module, "UdevIntake", OverrunIntake):
        code = main(sys.argv[1:])
    sys.exit(code)
