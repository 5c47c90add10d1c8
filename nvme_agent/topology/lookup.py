"""The snapshot's lookup tables: by nsid, key and device node built on first use, and the
one a decision needs on every change, by filesystem UUID, kept up to date by the tracker.

A :class:`~nvme_agent.topology.model.TopologySnapshot` answers "which namespace has NSID n",
"which device is /dev/nvme0n3" and "which devices carry filesystem UUID u" through tables.
Built from scratch, a table is a pass over every namespace: at 3,000 namespaces that is
milliseconds.  The first three serve commands (``status``, ``eject``) and a start, and are
built on first use.  The last serves every mount decision (two devices of one filesystem are
never both mounted), so building it per snapshot made deciding on one hot-added namespace
cost more the more namespaces the guest had (issue 13).  The tracker keeps it here, changing
only the entries of the namespace that changed, as a frozen **base** dict and a small
**overlay** of the names changed since: a snapshot gets the base and a copy of the overlay,
and the overlay is folded into a new base once it is as long as the square root of the base
(a full copy every so many changes, never one per change).  No snapshot sees a later change.

The tracker also logs which namespace each change touched, so that a reader holding an
earlier snapshot (the state writer) can ask what changed since it without comparing every
namespace: :meth:`~nvme_agent.topology.model.TopologySnapshot.touched_since`.

Every table answers what a scan of the snapshot in its order would: the first namespace (or
device) in snapshot order for a name, or all of them in that order (``fs_uuid``).  The
property tests compare the kept table with :func:`build_tables` after random record
sequences.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the model builds its tables from scratch with this module
    from nvme_agent.topology.model import Filesystem, Namespace, Partition


#: Where an entry stands in snapshot order: (namespace key, 0 for the disk / 1 for a
#: partition, the partition's index).
Order = tuple[tuple[str, int], int, int]
Device = tuple["Namespace", "Partition | None"]
#: (subsystem NQN or "", nsid): what identifies a namespace slot (``Namespace.key``).
Key = tuple[str, int]
#: The change log starts over (in a new list: the snapshots that hold the old one keep it)
#: once this long; a reader whose snapshot holds the old log compares everything, once.
LOG_LIMIT = 1 << 16


def fs_key(fs: Filesystem | None) -> str | None:
    """The filesystem UUID a table files ``fs`` under (lower case: tools disagree on the case
    of hex), or None."""
    if fs is None or not fs.uuid:
        return None
    return fs.uuid.lower()


def _entries(ns: Namespace) -> Iterator[tuple[str, Hashable, Order, Any]]:
    """(table, name, order, value) of every entry ``ns`` puts in the tables."""
    key = ns.key
    whole: Order = (key, 0, 0)
    yield "nsid", ns.nsid, whole, ns
    yield "key", (ns.subsysnqn, ns.nsid), whole, ns
    if ns.devnode:
        yield "devnode", ns.devnode, whole, (ns, None)
    uuid = fs_key(ns.fs)
    if uuid is not None:
        yield "fs_uuid", uuid, whole, (ns, None)
    for i, part in enumerate(ns.partitions):
        order: Order = (key, 1, i)
        if part.devnode:
            yield "devnode", part.devnode, order, (ns, part)
        uuid = fs_key(part.fs)
        if uuid is not None:
            yield "fs_uuid", uuid, order, (ns, part)


class _Gone:
    """An overlay's mark of a name that is in the base no more."""


_GONE = _Gone()


class Layered:
    """A read-only table: ``overlay`` over ``base``; neither is changed after it is made."""

    __slots__ = ("base", "overlay")

    def __init__(self, base: dict[Any, Any], overlay: dict[Any, Any]) -> None:
        self.base = base
        self.overlay = overlay

    def get(self, name: Any, default: Any = None) -> Any:
        value = self.overlay.get(name, self)
        if value is self:
            return self.base.get(name, default)
        return default if value is _GONE else value

    def to_dict(self) -> dict[Any, Any]:
        merged = dict(self.base)
        for name, value in self.overlay.items():
            if value is _GONE:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged


class _Carriers:
    """Filesystem UUID -> the devices carrying it in snapshot order, kept entry by entry."""

    def __init__(self) -> None:
        self._entries: dict[str, list[tuple[Order, Device]]] = {}
        self._base: dict[str, tuple[Device, ...]] = {}
        self._overlay: dict[str, Any] = {}

    def add(self, name: str, order: Order, value: Device) -> None:
        entries = self._entries.setdefault(name, [])
        bisect.insort(entries, (order, value), key=lambda e: e[0])
        self._show(name, entries)

    def remove(self, name: str, order: Order) -> None:
        entries = self._entries[name]
        del entries[next(i for i, e in enumerate(entries) if e[0] == order)]
        if not entries:
            del self._entries[name]
        self._show(name, entries)

    def share(self) -> Layered:
        return Layered(self._base, dict(self._overlay))

    def _show(self, name: str, entries: list[tuple[Order, Device]]) -> None:
        self._overlay[name] = tuple(v for _, v in entries) if entries else _GONE
        if len(self._overlay) ** 2 > max(len(self._base), 1024):
            # Fold into a new base (the old one may be a snapshot's): O(n) once per
            # sqrt(n) changes.
            self._base = Layered(self._base, self._overlay).to_dict()
            self._overlay = {}


class Lookup:
    """The filesystem UUID table of the namespaces the tracker holds and the log of what it
    touched; told of every namespace it publishes or drops."""

    def __init__(self) -> None:
        self._carriers = _Carriers()
        # (key, the namespace now or None): appended only, so a snapshot's prefix never moves.
        self._log: list[tuple[Key, Namespace | None]] = []

    def put(self, old: Namespace | None, new: Namespace | None) -> None:
        """Namespace ``old`` (None: none before) is now ``new`` (None: gone); one key."""
        if old is not None:
            for name, order, _ in _carried(old):
                self._carriers.remove(name, order)
        if new is not None:
            for name, order, value in _carried(new):
                self._carriers.add(name, order, value)
        touched = new if new is not None else old
        if touched is not None:
            if len(self._log) >= LOG_LIMIT:
                self._log = []
            self._log.append((touched.key, new))

    def share(self) -> dict[str, Any]:
        """For a snapshot: the filesystem UUID table as it is (``"fs_uuid"``, never changed
        afterwards) and the change log with its length now (``"touched"``)."""
        return {"fs_uuid": self._carriers.share(), "touched": (self._log, len(self._log))}


def _carried(ns: Namespace) -> Iterator[tuple[str, Order, Device]]:
    """(filesystem UUID, order, device) of every device of ``ns`` with a filesystem UUID."""
    for table, name, order, value in _entries(ns):
        if table == "fs_uuid":
            yield str(name), order, value


def build_tables(namespaces: Iterable[Namespace]) -> dict[str, dict[Any, Any]]:
    """The same tables, from scratch, for ``namespaces`` in snapshot order."""
    firsts: dict[str, dict[Any, Any]] = {"nsid": {}, "key": {}, "devnode": {}}
    every: dict[Any, list[Device]] = {}
    for ns in namespaces:
        for table, name, _, value in _entries(ns):
            if table == "fs_uuid":
                every.setdefault(name, []).append(value)
            else:
                firsts[table].setdefault(name, value)
    return firsts | {"fs_uuid": {name: tuple(values) for name, values in every.items()}}


__all__ = ["Device", "Key", "Layered", "Lookup", "build_tables", "fs_key"]
