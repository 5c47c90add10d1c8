"""Replay a ``udevadm monitor --property`` capture through the real intake path.

Only the ``UDEV`` events are used (what the agent's ``udev`` monitor receives; ``KERNEL``
events are the raw uevents before rule processing).  Each event's device is recreated in a
bed, with sysfs attributes reconstructed from its properties (``nsid`` from ``ID_NSID``,
``wwid`` from ``ID_WWN``, partition offsets and sizes from ``ID_PART_ENTRY_*``, a controller's
``transport``/``address`` from ``NVME_TRTYPE``/``NVME_TRADDR``/``NVME_TRSVCID`` or its PCI
slot), and sent to the daemon's pyudev monitor, one at a time: the next event goes once the
daemon has reacted as the topology says it must.

The device tree follows the capture.  A device the capture removes or changes before adding
it was there before the capture began; so was a controller (``.../nvme/nvmeN``,
``/devices/virtual/nvme-fabrics/ctl/nvmeN``) or subsystem (``nvme-subsysN``) that an event
lives under before the capture adds it.  Those are built before the daemon starts, so it finds
them at coldplug; everything else (controllers and subsystems that come and go, fabrics
connects and disconnects) happens when the capture says.

Any text replays and nothing ends in a traceback.  What replay cannot rebuild, it names with
the line number as a note: lines it does not understand, events it cannot read or the bed
refuses (a devpath that would leave ``/devices``), and the guesses it has to make (an NQN the
capture does not contain, the controllers of a multipath disk whose paths send no uevents).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvme_agent.harness.agent import AgentError, AgentProcess, EventFeed, environ_without_bed
from nvme_agent.harness.bed import Bed, BedError
from nvme_agent.harness.layout import MINOR_BASE, Device, Event
from nvme_agent.harness.simulate import await_reaction
from nvme_agent.harness.timeline import CHANGE_TYPES, describe_record, shown
from nvme_agent.topology.capture import parse_capture
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

Record = dict[str, Any]
Emit = Callable[[Record, str | None], None]
_SKIP = {"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "USEC_INITIALIZED"}
_SUBSYS = re.compile(r"^(/devices/virtual/nvme-subsystem/nvme-subsys\d+)/")
_CTRL = re.compile(r"^(/devices/.*?/(?:nvme|nvme-fabrics/ctl)/nvme\d+)/")
_SLOT = re.compile(r"/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/nvme/nvme\d+$")
_EVENT_START = re.compile(r"^(KERNEL|UDEV)\b")
_PREAMBLE = (
    "monitor will print the received events for:",
    "UDEV - the event which udev sends out after rule processing",
    "KERNEL - the kernel uevent",
)
#: The actions udev sends; an event with another one is named and skipped.
ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")
DEFAULT_NQN = "nqn.2014-08.org.nvmexpress:replayed-subsystem"


@dataclass(frozen=True)
class Note:
    """Something replay did not understand or had to guess, at ``line`` of the capture."""

    line: int
    text: str

    def record(self) -> Record:
        return {"type": "replay-note", "nsid": None, "line": self.line, "note": self.text}

    def __str__(self) -> str:
        return f"line {self.line}: {self.text}"


@dataclass(frozen=True)
class Captured:
    """One ``UDEV`` event and the line its header is on."""

    line: int
    record: DeviceRecord


@dataclass
class ReplayResult:
    """The daemon's event-stream records for the replayed (live) events, notes, any error."""

    records: list[Record] = field(default_factory=list)
    coldplug: list[Record] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    error: str | None = None

    @property
    def changes(self) -> list[Record]:
        return [r for r in self.records if r.get("type") in CHANGE_TYPES]


# --------------------------------------------------------------------------- reading
def read_capture_file(path: str | Path) -> tuple[str, list[Note]]:
    """The text of a capture file; bytes that are not UTF-8 are replaced (and noted).

    ``OSError`` propagates (the file cannot be read at all).
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        note = Note(line, "the capture is not UTF-8: undecodable bytes replaced by U+FFFD")
        return data.decode("utf-8", "replace"), [note]


def _chunks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each event block; text before the first one too."""
    start, chunk = 1, list[str]()
    for number, line in enumerate(lines, 1):
        if _EVENT_START.match(line) and chunk:
            yield start, chunk
            start, chunk = number, []
        chunk.append(line)
    if chunk:
        yield start, chunk


def read_capture(text: str) -> tuple[list[Captured], list[Note]]:
    """The ``UDEV`` events of a capture in arrival order, and a note for every line that is
    not part of an event, a comment or ``udevadm``'s preamble."""
    events: list[Captured] = []
    notes: list[Note] = []
    kernel = 0
    for start, lines in _chunks(text.splitlines()):
        try:
            parsed = list(parse_capture("\n".join(lines)))
        except ValueError as exc:
            notes.append(Note(start, f"cannot read this event: {shown(exc)}"))
            continue
        understood = {start + e.line - 1 for e in parsed}
        for e in parsed:
            if e.source == "UDEV":
                events.append(Captured(start + e.line - 1, e.record))
            else:
                kernel += 1
        record = parsed[-1].record if parsed else None
        notes += _stray_lines(lines, start, understood, record)
    if kernel and not events:
        notes.append(Note(1, "KERNEL events only: replay needs UDEV events (monitor --udev)"))
    return events, notes


def _stray_lines(
    lines: list[str], start: int, headers: set[int], record: DeviceRecord | None
) -> list[Note]:
    notes = []
    for number, line in enumerate(lines, start):
        if number in headers or not line.strip() or line.startswith("#"):
            continue
        if line.strip() in _PREAMBLE:
            continue
        key, sep, value = line.partition("=")
        if sep and record is not None and record.properties.get(key) == value:
            continue
        if sep and record is not None and key in record.properties:
            notes.append(Note(number, f"property {shown(key)} given twice: the last one counts"))
            continue
        notes.append(Note(number, f"not understood: {shown(line[:120])}"))
    return notes


def udev_events(text: str) -> list[DeviceRecord]:
    """The ``UDEV`` events of a capture, in arrival order."""
    return [c.record for c in read_capture(text)[0]]


# --------------------------------------------------------------------------- the device tree
def implied_parents(devpath: str) -> list[str]:
    """The controller and subsystem devpaths ``devpath`` lives under."""
    out = []
    for pattern in (_CTRL, _SUBSYS):
        m = pattern.match(devpath)
        if m:
            out.append(m.group(1))
    return out


def implied_present(records: list[DeviceRecord]) -> list[DeviceRecord]:
    """Devices the capture removes or changes without adding them first (present before it
    began), parents before children."""
    present: set[str] = set()
    before: dict[str, DeviceRecord] = {}
    for rec in records:
        if rec.action == "add":
            present.add(rec.devpath)
        elif rec.devpath not in present:
            before.setdefault(rec.devpath, rec)
            present.add(rec.devpath)
        if rec.action == "remove":
            present.discard(rec.devpath)
    return sorted(before.values(), key=lambda r: (r.devpath.count("/"), r.devpath))


@dataclass
class _Identity:
    """What the capture tells about a controller or subsystem (from its disks' properties)."""

    serial: str = "REPLAY"
    model: str = "Replayed NVMe Ctrl"
    firmware: str = "1.0"
    line: int = 0


class Tree:
    """The capture's devices as the bed must hold them, event by event."""

    def __init__(self, events: list[Captured], subsysnqn: str) -> None:
        self.events = events
        self.subsysnqn = subsysnqn
        self.present: dict[str, Device] = {}
        self.notes: list[Note] = []
        self.lines: dict[str, int] = {}  # devpath -> line of the event that implies it
        self._ident: dict[str, _Identity] = {}
        self._nqn: dict[str, str] = {}
        self._pathless = False
        self._learn()

    def _learn(self) -> None:
        """Serial/model/firmware of each controller and subsystem, from the disks under it."""
        for ev in self.events:
            props = ev.record.properties
            if "ID_SERIAL_SHORT" not in props:
                continue
            for parent in implied_parents(ev.record.devpath):
                name = parent.rsplit("/", 1)[-1]
                self._ident.setdefault(
                    name,
                    _Identity(
                        props["ID_SERIAL_SHORT"],
                        props.get("ID_MODEL", "Replayed NVMe Ctrl"),
                        props.get("ID_REVISION", "1.0"),
                        ev.line,
                    ),
                )

    # ----------------------------------------------------------------- plan
    def initial(self) -> list[Device]:
        """Devices present before the capture began, parents before children."""
        present: set[str] = set()
        first: dict[str, Captured] = {}
        for ev in self.events:
            path = ev.record.devpath
            for parent in implied_parents(path):
                if parent not in present:
                    present.add(parent)
                    first.setdefault(parent, ev)
            if ev.record.action == "add":
                present.add(path)
            elif path not in present:
                present.add(path)
                first.setdefault(path, ev)
            if ev.record.action == "remove":
                present.discard(path)
        self.lines.update((path, ev.line) for path, ev in first.items())
        devices = [self._build(path, ev) for path, ev in first.items()]
        return sorted(devices, key=lambda d: (d.devpath.count("/"), d.devpath))

    def _build(self, path: str, ev: Captured) -> Device:
        if path == ev.record.devpath:
            return self.device(ev)
        return self._implied(path, ev.line)

    def _implied(self, path: str, line: int) -> Device:
        """A controller or subsystem the capture only shows as a parent."""
        name = path.rsplit("/", 1)[-1]
        if name.startswith("nvme-subsys"):
            return Device(path, "nvme-subsystem", attributes=self._subsystem_attrs(name, line))
        self.notes.append(
            Note(line, f"controller {name} appears only as a parent here: rebuilt from its path")
        )
        return Device(path, "nvme", attributes=self._controller_attrs(path, {}, line))

    # ----------------------------------------------------------------- devices
    def device(self, ev: Captured) -> Device:
        """The bed device for one captured event (parents: what the bed holds now)."""
        rec = ev.record
        props = {k: v for k, v in rec.properties.items() if k not in _SKIP}
        dev = self._number(props, ev.line)
        devname = props.get("DEVNAME")
        if devname and not devname.startswith("/dev/"):
            devname = props["DEVNAME"] = "/dev/" + devname
        parents = self.ancestors(rec.devpath)
        self._note_pathless(ev)
        return Device(
            devpath=rec.devpath,
            subsystem=rec.subsystem,
            devtype=rec.devtype or props.get("DEVTYPE"),
            attributes=self._attributes(rec, ev.line),
            properties=props,
            dev=dev,
            devnode=devname if dev else None,
            parents=tuple(parents),
        )

    def _note_pathless(self, ev: Captured) -> None:
        """Say (once) that a multipath disk is replayed without the controllers reaching it."""
        rec = ev.record
        disk = rec.subsystem == "block" and (rec.devtype or rec.properties.get("DEVTYPE")) == "disk"
        if self._pathless or not disk or not _SUBSYS.match(rec.devpath):
            return
        if any(d.subsystem == "nvme" for d in self.present.values()):
            return
        self._pathless = True
        self.notes.append(
            Note(
                ev.line,
                f"{shown(rec.sysname)} is a native-multipath disk and the capture shows no "
                "controller (path devices send no uevents): replayed without one",
            )
        )

    def ancestors(self, devpath: str) -> list[Device]:
        found = [d for path, d in self.present.items() if devpath.startswith(path + "/")]
        return sorted(found, key=lambda d: -len(d.devpath))

    def _number(self, props: dict[str, str], line: int) -> str | None:
        """A fake device number (host udev database entries for real 259:N would leak in)."""
        major, minor = props.get("MAJOR", ""), props.get("MINOR", "")
        if not (major or minor):
            return None
        if not (major.isdigit() and minor.isdigit() and len(major + minor) < 12):
            self.notes.append(Note(line, f"device number {shown(major)}:{shown(minor)} dropped"))
            props.pop("MAJOR", None)
            props.pop("MINOR", None)
            return None
        props["MINOR"] = str(int(minor) + MINOR_BASE)
        return f"{int(major)}:{props['MINOR']}"

    def _attributes(self, rec: DeviceRecord, line: int) -> dict[str, str]:
        if rec.subsystem == "block":
            return _block_attrs(rec)
        if rec.subsystem == "nvme":
            return self._controller_attrs(rec.devpath, rec.properties, line)
        if rec.subsystem == "nvme-subsystem":
            return self._subsystem_attrs(rec.sysname, line)
        return {}

    def _controller_attrs(self, path: str, props: Any, line: int) -> dict[str, str]:
        name = path.rsplit("/", 1)[-1]
        ident = self._ident.get(name) or self._ident.get(f"nvme-subsys{name[4:]}") or _Identity()
        slot = _SLOT.search(path)
        transport = props.get("NVME_TRTYPE") or ("pcie" if slot else "tcp")
        address = slot.group(1) if slot else ""
        if "NVME_TRADDR" in props:
            address = f"traddr={props['NVME_TRADDR']},trsvcid={props.get('NVME_TRSVCID', 'none')}"
        return {
            "serial": ident.serial,
            "model": ident.model,
            "firmware_rev": ident.firmware,
            "subsysnqn": self.nqn(f"nvme-subsys{name[4:]}", name, line),
            "cntlid": "0",
            "transport": transport,
            "address": address,
            "state": "live",
        }

    def _subsystem_attrs(self, name: str, line: int) -> dict[str, str]:
        ident = self._ident.get(name) or _Identity()
        return {
            "subsysnqn": self.nqn(name, name, line),
            "serial": ident.serial,
            "model": ident.model,
            "firmware_rev": ident.firmware,
            "iopolicy": "numa",
        }

    def nqn(self, subsystem: str, who: str, line: int) -> str:
        """The NQN of ``subsystem`` (captures never contain one): the first subsystem gets
        ``--subsysnqn``, others a variant of it; each guess is noted once."""
        if subsystem not in self._nqn:
            nqn = self.subsysnqn if not self._nqn else f"{self.subsysnqn}:{subsystem}"
            self._nqn[subsystem] = nqn
            self.notes.append(
                Note(line, f"{who}: the subsystem NQN is not in the capture; replayed as {nqn}")
            )
        return self._nqn[subsystem]


def _block_attrs(rec: DeviceRecord) -> dict[str, str]:
    props = rec.properties
    attrs = {"ro": "0", "removable": "0"}
    for key, attr in (("ID_NSID", "nsid"), ("ID_WWN", "wwid"), ("DISKSEQ", "diskseq")):
        if key in props:
            attrs[attr] = props[key]
    if rec.devtype == "partition" or props.get("DEVTYPE") == "partition":
        attrs["partition"] = props.get("PARTN", "1")
        for key, attr in (("ID_PART_ENTRY_SIZE", "size"), ("ID_PART_ENTRY_OFFSET", "start")):
            if key in props:
                attrs[attr] = props[key]
        return attrs
    hidden = re.fullmatch(r"nvme\d+c\d+n\d+", rec.sysname) is not None
    attrs.update({"hidden": "1" if hidden else "0", "queue/logical_block_size": "512"})
    return attrs


# --------------------------------------------------------------------------- running
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
        notes: list[Note] | None = None,
    ) -> None:
        self.events, found = read_capture(text)
        self.notes = [*(notes or []), *found]
        self.emit = emit
        self.policy = policy
        self.policy_text = policy_text or "version: 1\nrules: []\n"
        self.dry_run = dry_run
        self.subsysnqn = subsysnqn
        self.timeout = timeout

    @property
    def records(self) -> list[DeviceRecord]:
        return [c.record for c in self.events]

    def _note(self, result: ReplayResult, note: Note) -> None:
        result.notes.append(note)
        self.emit(note.record(), f"note: {note}")

    def _flush_notes(self, tree: Tree, result: ReplayResult) -> None:
        for note in tree.notes:
            self._note(result, note)
        tree.notes.clear()

    def run(self) -> ReplayResult:
        """Replay; errors end up in the result (``error``, ``notes``), never raised."""
        result = ReplayResult()
        for note in self.notes:
            self._note(result, note)
        multipath = any("/nvme-subsystem/" in c.record.devpath for c in self.events)
        try:
            with Bed(multipath=multipath) as bed:
                self._run(bed, result)
        except (BedError, AgentError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    def _run(self, bed: Bed, result: ReplayResult) -> None:
        tree = Tree(self.events, self.subsysnqn)
        shadow = Topology()
        for device in tree.initial():
            line = tree.lines.get(device.devpath, 0)
            if self._apply(bed, tree, result, Event("add", device), quiet=True, line=line):
                shadow.apply(device.record("add", coldplug=True))
        self._flush_notes(tree, result)
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
            self._live(bed, tree, shadow, agent, result)
        finally:
            agent.stop()

    def _live(
        self, bed: Bed, tree: Tree, shadow: Topology, agent: AgentProcess, result: ReplayResult
    ) -> None:
        feed = EventFeed(agent.events_socket)
        try:
            history = agent.request({"cmd": "history", "limit": 0}).get("records", [])
            result.coldplug = [r for r in history if r.get("coldplug")]
            for cold in result.coldplug:
                self.emit(cold, describe_record(cold))
            start = len(feed.snapshot())
            try:
                for captured in self.events:
                    self._event(bed, tree, shadow, feed, captured, result)
            except (TimeoutError, AgentError) as exc:
                result.error = f"{exc}{agent.tail()}"
            result.records = feed.snapshot()[start:]
            specs: dict[str, list[dict[str, Any]]] = {}
            for rec in result.records:
                key = str(rec.get("key") or "")
                if rec.get("type") == "plan":
                    specs.setdefault(key, []).extend(rec.get("actions") or [])
                self.emit(rec, describe_record(rec, specs.get(key)))
        finally:
            feed.close()

    def _event(
        self,
        bed: Bed,
        tree: Tree,
        shadow: Topology,
        feed: EventFeed,
        captured: Captured,
        result: ReplayResult,
    ) -> None:
        action = captured.record.action
        if action not in ACTIONS:
            self._note(result, Note(captured.line, f"unknown action {shown(action)}: skipped"))
            return
        device = tree.device(captured)
        self._flush_notes(tree, result)
        if action == "add" and device.devpath in tree.present:
            # Added twice (or rebuilt before the capture began): replace, then add.
            self._apply(bed, tree, result, Event("remove", device), quiet=True)
        begin = len(feed.snapshot())
        if not self._apply(bed, tree, result, Event(action, device), line=captured.line):
            return
        expected = [(c.type.value, c.nsid) for c in shadow.apply(device.record(action))]
        try:
            await_reaction(feed, expected, begin, self.timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"line {captured.line}: {exc}") from None

    def _apply(
        self,
        bed: Bed,
        tree: Tree,
        result: ReplayResult,
        event: Event,
        *,
        quiet: bool = False,
        line: int = 0,
    ) -> bool:
        """One event into the bed; a refusal becomes a note.  Keeps ``tree.present``."""
        try:
            bed.apply([event], quiet=quiet)
        except BedError as exc:
            if not bed.alive():
                raise
            self._note(result, Note(line, f"cannot rebuild {shown(event.device.devpath)}: {exc}"))
            return False
        if event.action == "remove":
            gone = event.device.devpath
            for path in [p for p in tree.present if p == gone or p.startswith(gone + "/")]:
                del tree.present[path]
        elif event.action in ("add", "change") or event.device.devpath not in tree.present:
            tree.present[event.device.devpath] = event.device
        return True
