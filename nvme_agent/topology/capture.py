"""Parse ``udevadm monitor --property`` output (the format of the real-guest captures)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nvme_agent.topology.records import DeviceRecord

_HEADER = re.compile(
    r"^(?P<source>KERNEL|UDEV)\s*\[(?P<ts>[\d.]+)\]\s+(?P<action>\S+)\s+(?P<devpath>\S+)\s+"
    r"\((?P<subsystem>[^)]+)\)\s*$"
)


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One event block of a capture."""

    source: str
    timestamp: float
    record: DeviceRecord
    line: int


def parse_capture(text: str) -> Iterator[CapturedEvent]:
    """Every event block in ``text``, in file order (KERNEL and UDEV alike)."""
    header: re.Match[str] | None = None
    header_line = 0
    props: dict[str, str] = {}

    def flush() -> CapturedEvent | None:
        if header is None:
            return None
        record = DeviceRecord.build(
            props.get("ACTION", header["action"]),
            props.get("DEVPATH", header["devpath"]),
            props.get("SUBSYSTEM", header["subsystem"]),
            props,
        )
        return CapturedEvent(header["source"], float(header["ts"]), record, header_line)

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        match = _HEADER.match(line)
        if match:
            event = flush()
            if event is not None:
                yield event
            header, header_line, props = match, lineno, {}
            continue
        if header is not None and "=" in line and not line.startswith(("#", " ")):
            key, _, value = line.partition("=")
            if key.isupper() or key.replace("_", "").isalnum():
                props[key] = value
    event = flush()
    if event is not None:
        yield event


def udev_records(path: str | Path) -> list[DeviceRecord]:
    """The post-rules (``UDEV``) events of a capture file as records, in arrival order."""
    text = Path(path).read_text(encoding="utf-8")
    return [e.record for e in parse_capture(text) if e.source == "UDEV"]


def parse_export_db(text: str) -> list[DeviceRecord]:
    """Devices of a ``udevadm info --export-db`` dump, as coldplug ``add`` records."""
    records: list[DeviceRecord] = []
    for block in re.split(r"\n\s*\n", text):
        devpath = subsystem = devtype = None
        props: dict[str, str] = {}
        for line in block.splitlines():
            tag, _, value = line.partition(": ")
            if tag == "P":
                devpath = value
            elif tag == "U":
                subsystem = value
            elif tag == "T":
                devtype = value
            elif tag == "E":
                key, _, val = value.partition("=")
                props[key] = val
        if devpath and subsystem:
            records.append(
                DeviceRecord.build("add", devpath, subsystem, props, devtype=devtype, coldplug=True)
            )
    return records
