"""The baselines' receiver: a bare ``pyudev`` monitor, or a bare enumeration, and nothing else.

Run in a bed's environment (``python -m benchmarks.baremonitor [--enumerate]``).  The monitor
is set up like the agent's (``udev`` source, the same subsystem filter and receive buffer),
prints ``ready`` once bound, then one line per event received: ``ACTION SUBSYSTEM DEVPATH``.
``--enumerate`` lists what the agent enumerates at start, prints the count and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import pyudev

from nvme_agent.topology.intake import RECEIVE_BUFFER
from nvme_agent.topology.records import SUBSYSTEMS


def monitor() -> None:
    context = pyudev.Context()
    mon = pyudev.Monitor.from_netlink(context, source="udev")
    for subsystem in SUBSYSTEMS:
        mon.filter_by(subsystem=subsystem)
    with contextlib.suppress(OSError):  # the agent goes on without it too
        mon.set_receive_buffer_size(RECEIVE_BUFFER)
    mon.start()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while True:
        device = mon.poll()
        if device is None:
            continue
        out.write(f"{device.action} {device.subsystem} {device.device_path}\n")
        out.flush()


def enumerate_all() -> None:
    context = pyudev.Context()
    count = 0
    for subsystem in SUBSYSTEMS:
        for device in context.list_devices(subsystem=subsystem):
            count += len(device.properties)
    sys.stdout.write(f"{count}\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baremonitor")
    parser.add_argument("--enumerate", action="store_true")
    if parser.parse_args().enumerate:
        enumerate_all()
    else:
        monitor()


if __name__ == "__main__":
    main()
