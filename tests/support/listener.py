"""A minimal pyudev listener for bed tests, run as a child process inside the bed.

It binds a ``udev`` monitor filtered like the agent's intake, prints ``{"ready": ...}`` with
the coldplug enumeration, then one JSON line per event (built with the agent's own
``record_from_device``) until it has printed ``argv[1]`` events.
"""

from __future__ import annotations

import json
import sys

import pyudev

from nvme_agent.topology.intake import enumerate_records, record_from_device
from nvme_agent.topology.records import SUBSYSTEMS


def main() -> int:
    count = int(sys.argv[1])
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="udev")
    for subsystem in SUBSYSTEMS:
        monitor.filter_by(subsystem=subsystem)
    monitor.start()
    coldplug = [
        r.to_dict() | {"parents": [list(p[:2]) for p in r.parents]}
        for r in enumerate_records(context)
    ]
    print(json.dumps({"ready": True, "coldplug": coldplug}), flush=True)
    seen = 0
    while seen < count:
        device = monitor.poll(timeout=10)
        if device is None:
            print(json.dumps({"timeout": True}), flush=True)
            return 1
        record = record_from_device(device)
        line = record.to_dict() | {"parents": [list(p[:2]) for p in record.parents]}
        if record.subsystem == "block" and record.action != "remove":
            node = device.device_node
            line["by_number"] = pyudev.Devices.from_device_number(
                context, "block", device.device_number
            ).device_path
            line["device_node"] = node
        print(json.dumps(line), flush=True)
        seen += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
