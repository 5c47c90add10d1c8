"""Replay a ``udevadm monitor --property`` capture through the real intake path.

Only the ``UDEV`` events are used (what the agent's ``udev`` monitor receives; ``KERNEL``
events are the raw uevents before rule processing).  Each event's device is recreated in a
bed, with sysfs attributes reconstructed from its properties (``nsid`` from ``ID_NSID``,
``wwid`` from ``ID_WWN``, partition offsets and sizes from ``ID_PART_ENTRY_*``), and sent to the
daemon's pyudev monitor; the parents the capture's devpaths imply (the PCI device, the
controller ``nvmeN``, the ``nvme-subsystem``) are created before the daemon starts.

A capture of one step often removes devices that an earlier step added (``06-detach-ns4``
removes what ``02-attach-ns4`` brought).  Such devices are recreated from their ``remove``
event's properties before the daemon starts, so the daemon finds them at coldplug and the
replayed removes have something to remove: every capture file replays on its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvme_agent.harness.agent import AgentProcess, EventFeed, environ_without_bed
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import MINOR_BASE, Device, Event
from nvme_agent.harness.simulate import CHANGE_TYPES, await_reaction, describe_record
from nvme_agent.topology.capture import parse_capture
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

Record = dict[str, Any]
Emit = Callable[[Record, str | None], None]
_SKIP = {"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "USEC_INITIALIZED"}
_SUBSYS = re.compile(r"^(/devices/virtual/nvme-subsystem/nvme-subsys\d+)/")
_CTRL = re.compile(r"^((/devices/.+?)/nvme/(nvme\d+))/")
DEFAULT_NQN = "nqn.2014-08.org.nvmexpress:replayed-subsystem"


@dataclass
class ReplayResult:
    """The daemon's event-stream records for the replayed (live) events, and any error."""

    records: list[Record] = field(default_factory=list)
    coldplug: list[Record] = field(default_factory=list)
    error: str | None = None

    @property
    def changes(self) -> list[Record]:
        return [r for r in self.records if r.get("type") in CHANGE_TYPES]


def udev_events(text: str) -> list[DeviceRecord]:
    """The ``UDEV`` events of a capture, in arrival order."""
    return [e.record for e in parse_capture(text) if e.source == "UDEV"]


def _fake(major_minor: str) -> str:
    major, minor = major_minor.split(":")
    return f"{major}:{int(minor) + MINOR_BASE}"


def device_from_record(record: DeviceRecord) -> Device:
    """A bed device for a captured event, attributes reconstructed from its properties."""
    props = {k: v for k, v in record.properties.items() if k not in _SKIP}
    dev: str | None = None
    if "MAJOR" in props and "MINOR" in props:
        # Host udev database entries for real 259:N disks would leak in: use fake minors.
        dev = _fake(f"{props['MAJOR']}:{props['MINOR']}")
        props["MINOR"] = dev.split(":")[1]
    attrs: dict[str, str] = {}
    if record.subsystem == "block":
        if "ID_NSID" in props:
            attrs["nsid"] = props["ID_NSID"]
        if "ID_WWN" in props:
            attrs["wwid"] = props["ID_WWN"]
        if "DISKSEQ" in props:
            attrs["diskseq"] = props["DISKSEQ"]
        attrs.update({"ro": "0", "removable": "0"})
        if record.devtype == "partition" or props.get("DEVTYPE") == "partition":
            attrs["partition"] = props.get("PARTN", "1")
            for key, attr in (("ID_PART_ENTRY_SIZE", "size"), ("ID_PART_ENTRY_OFFSET", "start")):
                if key in props:
                    attrs[attr] = props[key]
        else:
            attrs.update({"hidden": "0", "queue/logical_block_size": "512"})
    devname = props.get("DEVNAME")
    if devname and not devname.startswith("/dev/"):
        devname = props["DEVNAME"] = "/dev/" + devname
    return Device(
        devpath=record.devpath,
        subsystem=record.subsystem,
        devtype=record.devtype or props.get("DEVTYPE"),
        attributes=attrs,
        properties=props,
        dev=dev,
        devnode=devname if dev else None,
    )


def parents_for(records: list[DeviceRecord], subsysnqn: str) -> list[Device]:
    """The PCI device, controllers and subsystems the capture's devpaths live under."""
    out: dict[str, Device] = {}
    ident: dict[str, str] = {}
    for rec in records:
        for key in ("ID_SERIAL_SHORT", "ID_MODEL", "ID_REVISION"):
            if key in rec.properties:
                ident.setdefault(key, rec.properties[key])
    serial = ident.get("ID_SERIAL_SHORT", "REPLAY")
    model = ident.get("ID_MODEL", "Replayed NVMe Ctrl")
    firmware = ident.get("ID_REVISION", "1.0")
    common = {"serial": serial, "model": model, "firmware_rev": firmware, "subsysnqn": subsysnqn}
    for rec in records:
        m = _SUBSYS.match(rec.devpath)
        if m and m.group(1) not in out:
            out[m.group(1)] = Device(
                devpath=m.group(1), subsystem="nvme-subsystem", attributes=dict(common)
            )
        m = _CTRL.match(rec.devpath + "/")
        if m and m.group(1) not in out:
            pci, name = m.group(2), m.group(3)
            if pci not in out and pci.count("/") >= 3:
                out[pci] = Device(devpath=pci, subsystem="pci", properties={"DRIVER": "nvme"})
            minor = MINOR_BASE + int(name[4:])
            out[m.group(1)] = Device(
                devpath=m.group(1),
                subsystem="nvme",
                attributes={**common, "state": "live", "transport": "pcie", "cntlid": "0"},
                properties={"MAJOR": "245", "MINOR": str(minor), "DEVNAME": f"/dev/{name}"},
                dev=f"245:{minor}",
                devnode=f"/dev/{name}",
            )
    # A multipath capture never names the controller (disks live under the subsystem), but a
    # guest always has one: give it the usual QEMU PCI address.
    if not any(d.subsystem == "nvme" for d in out.values()):
        pci = "/devices/pci0000:00/0000:00:04.0"
        out[pci] = Device(devpath=pci, subsystem="pci", properties={"DRIVER": "nvme"})
        out[pci + "/nvme/nvme0"] = Device(
            devpath=pci + "/nvme/nvme0",
            subsystem="nvme",
            attributes={**common, "state": "live", "transport": "pcie", "cntlid": "0"},
            properties={"MAJOR": "245", "MINOR": str(MINOR_BASE), "DEVNAME": "/dev/nvme0"},
            dev=f"245:{MINOR_BASE}",
            devnode="/dev/nvme0",
        )
    # Controllers of a non-multipath capture are also members of a subsystem.
    if not any(d.subsystem == "nvme-subsystem" for d in out.values()):
        path = "/devices/virtual/nvme-subsystem/nvme-subsys0"
        out[path] = Device(devpath=path, subsystem="nvme-subsystem", attributes=dict(common))
    order = {"pci": 0, "nvme-subsystem": 1, "nvme": 2}
    return sorted(out.values(), key=lambda d: (order[d.subsystem], d.devpath))


def implied_present(records: list[DeviceRecord]) -> list[DeviceRecord]:
    """Devices the capture removes without adding them first (present before it began)."""
    added: set[str] = set()
    present: dict[str, DeviceRecord] = {}
    for rec in records:
        if rec.action == "add":
            added.add(rec.devpath)
        elif rec.action == "remove" and rec.devpath not in added:
            present.setdefault(rec.devpath, rec)
    # parents before children (a disk before its partitions)
    return sorted(present.values(), key=lambda r: (r.devpath.count("/"), r.devpath))


class Replay:
    """Replays capture text through a bed and the real daemon (dry-run unless told)."""

    def __init__(
        self,
        text: str,
        emit: Emit,
        *,
        policy: Path | None = None,
        policy_text: str | None = None,
        dry_run: bool = True,
        subsysnqn: str = DEFAULT_NQN,
        timeout: float = 10.0,
    ) -> None:
        self.records = udev_events(text)
        self.emit = emit
        self.policy = policy
        self.policy_text = policy_text or "version: 1\nrules: []\n"
        self.dry_run = dry_run
        self.subsysnqn = subsysnqn
        self.timeout = timeout

    def run(self) -> ReplayResult:
        result = ReplayResult()
        multipath = any("/nvme-subsystem/" in r.devpath for r in self.records)
        with Bed(multipath=multipath) as bed:
            shadow = Topology()
            coldplug = [Event("add", d) for d in parents_for(self.records, self.subsysnqn)]
            coldplug += [Event("add", device_from_record(r)) for r in implied_present(self.records)]
            bed.apply(coldplug, quiet=True)
            for ev in coldplug:
                shadow.apply(_record(ev, "add"))
            agent = AgentProcess(
                self.policy or Path("/nonexistent"),
                bed.env(environ_without_bed()),
                dry_run=self.dry_run,
            )
            if self.policy is None:
                policy_file = agent.base / "policy.yaml"
                policy_file.write_text(self.policy_text, encoding="utf-8")
                agent.policy = policy_file
            try:
                agent.start()
                feed = EventFeed(agent.events_socket)
                try:
                    history = agent.request({"cmd": "history", "limit": 0}).get("records", [])
                    result.coldplug = [r for r in history if r.get("coldplug")]
                    for cold in result.coldplug:
                        self.emit(cold, describe_record(cold))
                    start = len(feed.snapshot())
                    for event in self.records:
                        device = device_from_record(event)
                        begin = len(feed.snapshot())
                        bed.apply([Event(event.action, device)])
                        expected = [
                            (c.type.value, c.nsid)
                            for c in shadow.apply(
                                _record(Event(event.action, device), event.action)
                            )
                        ]
                        await_reaction(feed, expected, begin, self.timeout)
                    records = feed.snapshot()[start:]
                    result.records = records
                    specs: dict[str, list[dict[str, Any]]] = {}
                    for rec_ in records:
                        key = str(rec_.get("key") or "")
                        if rec_.get("type") == "plan":
                            specs.setdefault(key, []).extend(rec_.get("actions") or [])
                        self.emit(rec_, describe_record(rec_, specs.get(key)))
                except TimeoutError as exc:
                    result.records = feed.snapshot()
                    result.error = f"{exc}{agent.tail()}"
                finally:
                    feed.close()
            finally:
                agent.stop()
        return result


def _record(event: Event, action: str) -> DeviceRecord:
    return event.device.record(action, coldplug=False)
