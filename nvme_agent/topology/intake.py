"""Event intake through pyudev: the netlink monitor, coldplug enumeration, record building.

The monitor listens to the ``udev`` source (events after rule processing, so blkid's
``ID_FS_*`` properties are present) for the subsystems in :data:`SUBSYSTEMS`.  It is bound
*before* enumerating, so nothing that happens during coldplug falls between the two.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pyudev

try:  # pyudev's own helper over libudev's lists; not public, so a fallback is kept
    from pyudev._util import udev_list_iterate
except ImportError:  # pragma: no cover - a pyudev without it
    udev_list_iterate = None

from nvme_agent.topology.model import Properties
from nvme_agent.topology.records import (
    COLDPLUG_ORDER,
    PARENT_ATTRIBUTES,
    SUBSYSTEMS,
    DeviceRecord,
    attributes_read,
    clean_value,
    reads_sysfs,
)

log = logging.getLogger(__name__)

#: Netlink receive buffer.  A rescan of hundreds of namespaces emits several events each;
#: the kernel default (~200 KiB) overruns.  libudev uses SO_RCVBUFFORCE, so root gets it all.
RECEIVE_BUFFER = 128 * 1024 * 1024


class Overrun(Exception):
    """The kernel dropped events (ENOBUFS): the caller must re-enumerate and diff."""


def _read_attributes(device: Any, names: tuple[str, ...]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for name in names:
        try:
            value = device.attributes.get(name)
        except (OSError, UnicodeDecodeError):
            value = None
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        attrs[name] = text.strip()
    return attrs


def _parents(device: Any) -> tuple[tuple[str, str, Properties], ...]:
    found: list[tuple[str, str, Properties]] = []
    for subsystem, names in PARENT_ATTRIBUTES.items():
        try:
            parent = device.find_parent(subsystem)
        except (OSError, ValueError):
            parent = None
        if parent is not None:
            attrs = _read_attributes(parent, names)
            found.append((subsystem, parent.sys_name, Properties.of(attrs)))
    return tuple(found)


def _parents_among(
    devpath: str, known: Mapping[str, DeviceRecord]
) -> tuple[tuple[str, str, Properties], ...]:
    """What :func:`_parents` reads, taken from the records of an enumeration instead.

    sysfs nests a device under its parents, and coldplug enumerates every controller and
    subsystem before any disk: the nearest ancestor of each subsystem is the nearest record
    up the devpath.  libudev's parent lookup re-reads sysfs up the tree for every disk (a
    third of a 1,000-namespace coldplug, issue 13); this is a dictionary walk.
    """
    nearest: dict[str, tuple[str, str, Properties]] = {}
    path = devpath
    while "/" in path:
        path = path.rpartition("/")[0]
        rec = known.get(path)
        if rec is None or rec.subsystem in nearest:
            continue
        names = PARENT_ATTRIBUTES.get(rec.subsystem)
        if names is not None:
            attrs = {n: rec.attributes[n] for n in names if n in rec.attributes}
            nearest[rec.subsystem] = (rec.subsystem, rec.sysname, Properties.of(attrs))
    return tuple(nearest[sub] for sub in PARENT_ATTRIBUTES if sub in nearest)


class ParentCache:
    """The NVMe controllers and subsystems seen so far (enumerated, then from events), by
    devpath: a live disk's parents are taken from here instead of libudev's walk up sysfs,
    two parent lookups per event (issue 13).

    A subsystem NQN is fixed for the life of a controller or subsystem device, and a device
    that goes away is forgotten with its remove (a lost one with the re-enumeration after an
    overrun).  A value that is not known yet (``(efault)`` while a fabrics controller
    connects) is not kept as an answer: such a disk's parents are read from sysfs.
    """

    def __init__(self) -> None:
        self._records: dict[str, DeviceRecord] = {}

    @property
    def seen(self) -> Mapping[str, DeviceRecord]:
        """The controllers' and subsystems' records, by devpath."""
        return self._records

    def clear(self) -> None:
        self._records = {}

    def note(self, record: DeviceRecord) -> None:
        if record.subsystem not in PARENT_ATTRIBUTES:
            return
        if record.action == "remove":
            self._records.pop(record.devpath, None)
        else:
            self._records[record.devpath] = record

    def parents(self, devpath: str) -> tuple[tuple[str, str, Properties], ...] | None:
        """The parents of the device at ``devpath``; ``None`` when they must be read."""
        found = _parents_among(devpath, self._records)
        if not found or any(clean_value(a.get("subsysnqn")) is None for _, _, a in found):
            return None
        return found


def _properties(device: Any) -> dict[str, str]:
    """Every udev property of ``device`` in one pass over libudev's list.

    pyudev's mapping looks each value up again by name, which made reading the properties
    the largest part of building a record.  Its public mapping is the fallback.
    """
    if udev_list_iterate is not None:
        try:
            lib = device._libudev
            entry = lib.udev_device_get_properties_list_entry(device)
            return {
                name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                for name, value in udev_list_iterate(lib, entry)
            }
        except AttributeError:
            pass  # not the pyudev this was written against: the public mapping below
    return {str(k): str(v) for k, v in device.properties.items()}


def record_from_device(
    device: Any,
    action: str | None = None,
    *,
    coldplug: bool = False,
    known: Mapping[str, DeviceRecord] | None = None,
    cache: ParentCache | None = None,
) -> DeviceRecord:
    """Build a :class:`DeviceRecord` from a ``pyudev.Device``.

    Attributes and parents are read only where the tracker uses them
    (:func:`~nvme_agent.topology.records.reads_sysfs`).  ``known``: the
    records of the enumeration so far, by devpath, where the parents are taken from;
    ``cache``: the intake's, tried before sysfs.
    """
    action = action or device.action or "add"
    subsystem = device.subsystem or ""
    props = _properties(device)
    if not reads_sysfs(action, subsystem, device.sys_name):
        attrs: dict[str, str] = {}
        parents: tuple[tuple[str, str, Properties], ...] = ()
    else:
        attrs = _read_attributes(device, attributes_read(subsystem, device.device_type))
        if known is not None:
            parents = _parents_among(device.device_path, known)
        else:
            cached = cache.parents(device.device_path) if cache is not None else None
            parents = cached if cached is not None else _parents(device)
    seqnum = device.sequence_number if not coldplug else 0
    return DeviceRecord.build(
        action,
        device.device_path,
        subsystem,
        props,
        attrs,
        devtype=device.device_type,
        seqnum=int(seqnum or 0),
        parents=parents,
        coldplug=coldplug,
    )


def enumerate_records(context: Any, parents: ParentCache | None = None) -> list[DeviceRecord]:
    """Coldplug: every device of interest that exists now, parents first.

    ``parents`` is filled afresh with the controllers and subsystems enumerated, which are
    the disks' parents.  Does not depend on ``is_initialized`` or tags: those need the udev
    database, which is absent in containers and test beds.
    """
    records: list[DeviceRecord] = []
    parents = parents if parents is not None else ParentCache()
    parents.clear()
    for subsystem in COLDPLUG_ORDER:
        devices = list(context.list_devices(subsystem=subsystem))
        if subsystem == "block":
            # Disks before partitions, so no partition waits for its disk.
            devices.sort(key=lambda d: (d.device_type != "disk", d.device_path))
        else:
            devices.sort(key=lambda d: d.device_path)
        for device in devices:
            try:
                record = record_from_device(device, "add", coldplug=True, known=parents.seen)
            except (OSError, pyudev.DeviceNotFoundError) as exc:
                log.debug("device %s vanished during enumeration: %s", device, exc)
                continue
            records.append(record)
            parents.note(record)
    return records


class UdevIntake:
    """A bound udev monitor plus enumeration, for a ``selectors``/``asyncio`` loop.

    Use :meth:`start` (binds, then enumerates), register :meth:`fileno` for reading, and call
    :meth:`drain` when it is readable.
    """

    def __init__(self, context: Any | None = None, receive_buffer: int = RECEIVE_BUFFER) -> None:
        self.context = context if context is not None else pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source="udev")
        for subsystem in SUBSYSTEMS:
            self.monitor.filter_by(subsystem=subsystem)
        try:
            self.monitor.set_receive_buffer_size(receive_buffer)
        except OSError as exc:  # without CAP_NET_ADMIN the size is capped by rmem_max
            log.warning("cannot enlarge the udev receive buffer to %d: %s", receive_buffer, exc)
        # drain() receives without polling first: an empty socket must answer EAGAIN at once
        # (libudev opens it non-blocking; this makes sure of it).
        fd = self.monitor.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.parents = ParentCache()

    def start(self) -> list[DeviceRecord]:
        """Bind the monitor, then enumerate: the coldplug records."""
        self.monitor.start()
        return self.enumerate()

    def enumerate(self) -> list[DeviceRecord]:
        return enumerate_records(self.context, self.parents)

    def fileno(self) -> int:
        fd: int = self.monitor.fileno()
        return fd

    def drain(self) -> Iterator[DeviceRecord]:
        """Every record readable now, without blocking.  Raises :class:`Overrun` on ENOBUFS.

        Each one is taken with pyudev's non-blocking receive (what ``poll`` calls once a
        poll(2) said readable): ``poll(timeout=0)`` built a poll object and asked the kernel
        once more per record, and once more to find the socket empty (issue 13).
        """
        receive = getattr(self.monitor, "_receive_device", None)
        if receive is None:  # not the pyudev this was written against
            receive = functools.partial(self.monitor.poll, timeout=0)
        while True:
            try:
                device = receive()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise Overrun("udev netlink receive buffer overrun") from exc
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise
            if device is None:
                return
            try:
                record = record_from_device(device, cache=self.parents)
            except (OSError, pyudev.DeviceNotFoundError) as exc:
                log.warning("cannot read %s: %s", getattr(device, "device_path", device), exc)
                continue
            self.parents.note(record)
            yield record
