"""Parse ``udevadm monitor --property`` output and reduce events to comparable shapes.

Values such as SEQNUM, device numbers, DISKSEQ or timestamps differ from run to run; what must
not drift between the real guest and the harness's synthetic events is: which events come, in
which order per device, with which devpath shape and which property keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"^(UDEV|KERNEL)\s*\[[\d.]+\]\s+(\S+)\s+(\S+)\s+\((\S+)\)$")


@dataclass(frozen=True)
class MonitorEvent:
    """One event block of ``udevadm monitor --property``."""

    source: str
    action: str
    devpath: str
    subsystem: str
    props: dict[str, str] = field(default_factory=dict)

    @property
    def devtype(self) -> str | None:
        """DEVTYPE property (disk/partition for block), if any."""
        return self.props.get("DEVTYPE")

    @property
    def shape(self) -> str:
        """The devpath with every number replaced by N: stable across runs and names."""
        return devpath_shape(self.devpath)


def devpath_shape(devpath: str) -> str:
    """``/devices/virtual/bdi/259:3`` -> ``/devices/virtual/bdi/N:N``."""
    return re.sub(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d|\d+", "N", devpath)


def parse_monitor(text: str) -> list[MonitorEvent]:
    """Every event in ``udevadm monitor --property`` output (header lines are skipped)."""
    events: list[MonitorEvent] = []
    current: MonitorEvent | None = None
    for line in text.splitlines():
        match = _HEADER.match(line)
        if match:
            source, action, devpath, subsystem = match.groups()
            current = MonitorEvent(source, action, devpath, subsystem)
            events.append(current)
            continue
        if not line.strip():
            current = None
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.props[key] = value
    return events
