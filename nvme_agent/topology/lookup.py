"""The snapshot's lookup tables, kept up to date namespace by namespace.

A :class:`~nvme_agent.topology.model.TopologySnapshot` answers "which namespace has NSID n",
"which device is /dev/nvme0n3" and "which devices carry filesystem UUID u" through tables.
Built from scratch, each is a pass over every namespace: at 3,000 namespaces that is
milliseconds, paid by the first decision after every change, so deciding on one hot-added
namespace cost more the more namespaces the guest had (issue 13).  The tracker keeps the
tables here instead, changing only the entries of the namespace that changed, and hands them
to each new snapshot **copy-on-write**: a snapshot gets the live dict, and the next change
copies it (a C-level copy, microseconds) before touching it, so no snapshot ever sees a
later change.

The tracker also logs which namespace each change touched, so that a reader holding an
earlier snapshot (the state writer) can ask what changed since it without comparing every
namespace: :meth:`~nvme_agent.topology.model.TopologySnapshot.touched_since`.

Each table answers what a scan of the snapshot in its order would: the first namespace (or
device) in snapshot order for a name, or all of them in that order (``fs_uuid``).  The
property tests compare every table with :func:`build_tables` after random record sequences.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # the model builds its tables from scratch with this module
    from nvme_agent.topology.model import Filesystem, Namespace, Partition

_K = TypeVar("_K", bound=Hashable)

#: Where an entry stands in snapshot order: (namespace key, 0 for the disk / 1 for a
#: partition, the partition's index).
Order = tuple[tuple[str, int], int, int]
Device = tuple["Namespace", "Partition | None"]
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


class _Table(Generic[_K]):
    """Entries under each name, in snapshot order; ``visible`` maps each name to the first
    value (or, with ``every``, a tuple of all of them) and is shared copy-on-write."""

    def __init__(self, every: bool = False) -> None:
        self.every = every
        self.visible: dict[_K, Any] = {}
        self._entries: dict[_K, list[tuple[Order, Any]]] = {}
        self._shared = False

    def add(self, name: _K, order: Order, value: Any) -> None:
        entries = self._entries.setdefault(name, [])
        bisect.insort(entries, (order, value), key=lambda e: e[0])
        self._show(name, entries)

    def remove(self, name: _K, order: Order) -> None:
        entries = self._entries[name]
        del entries[next(i for i, e in enumerate(entries) if e[0] == order)]
        if not entries:
            del self._entries[name]
        self._show(name, entries)

    def share(self) -> dict[_K, Any]:
        self._shared = True
        return self.visible

    def _show(self, name: _K, entries: list[tuple[Order, Any]]) -> None:
        if self._shared:
            self.visible = dict(self.visible)
            self._shared = False
        if not entries:
            self.visible.pop(name, None)
        elif self.every:
            self.visible[name] = tuple(value for _, value in entries)
        else:
            self.visible[name] = entries[0][1]


class Lookup:
    """The tables of the namespaces the tracker holds; told of every namespace it publishes
    or drops."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table[Any]] = {
            "nsid": _Table(),
            "key": _Table(),
            "devnode": _Table(),
            "fs_uuid": _Table(every=True),
        }
        # (key, the namespace now or None): appended only, so a snapshot's prefix never moves.
        self._log: list[tuple[Key, Namespace | None]] = []

    def put(self, old: Namespace | None, new: Namespace | None) -> None:
        """Namespace ``old`` (None: none before) is now ``new`` (None: gone); one key."""
        if old is not None:
            for table, name, order, _ in _entries(old):
                self._tables[table].remove(name, order)
        if new is not None:
            for table, name, order, value in _entries(new):
                self._tables[table].add(name, order, value)
        touched = new if new is not None else old
        if touched is not None:
            if len(self._log) >= LOG_LIMIT:
                self._log = []
            self._log.append((touched.key, new))

    def share(self) -> dict[str, Any]:
        """The tables as they are, for a snapshot: never changed afterwards; and the change
        log with its length now (``"touched"``)."""
        tables: dict[str, Any] = {name: table.share() for name, table in self._tables.items()}
        tables["touched"] = (self._log, len(self._log))
        return tables


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


__all__ = ["Device", "Key", "Lookup", "build_tables", "fs_key"]
