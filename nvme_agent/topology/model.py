"""Immutable value objects for the NVMe topology: controllers, namespaces, partitions, identities.

Everything here is a frozen dataclass so that a snapshot handed to the policy engine, the action
runner or the journal can never change under them.  The mutable bookkeeping lives in
:mod:`nvme_agent.topology.tracker`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, overload

from nvme_agent.topology.lookup import Key, build_tables

_T = TypeVar("_T")


class IdentitySource(StrEnum):
    """Where a namespace's stable identity came from, strongest first."""

    UUID = "uuid"
    NGUID = "nguid"
    EUI64 = "eui64"
    WWID = "wwid"
    SUBSYS_NSID = "subsysnqn+nsid"


#: All-zero identifiers are what a controller reports when it has none; never trust them.
_NULL_IDS = {"", "0" * 32, "0" * 16, "00000000-0000-0000-0000-000000000000"}


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.replace("-", "").replace(":", "").strip("0") == "" or value in _NULL_IDS:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """A namespace's stable key and how much it can be trusted.

    ``weak`` is true when the identity cannot tell a different image at the same NSID from the
    old one: a wwid the kernel synthesised from vendor/serial/model/nsid (``nvme.<vid>-...``,
    QEMU's "bogus Namespace Identifiers" quirk), or the bare (subsystem NQN, nsid) fallback.
    """

    source: IdentitySource
    value: str
    weak: bool

    def __str__(self) -> str:
        return f"{self.source.value}:{self.value}"

    @classmethod
    def derive(
        cls,
        *,
        uuid: str | None,
        nguid: str | None,
        eui64: str | None,
        wwid: str | None,
        subsysnqn: str | None,
        nsid: int,
    ) -> Identity:
        """Pick the strongest identifier present: uuid > nguid > eui64 > wwid > (NQN, nsid)."""
        for source, raw in (
            (IdentitySource.UUID, uuid),
            (IdentitySource.NGUID, nguid),
            (IdentitySource.EUI64, eui64),
        ):
            value = _clean(raw)
            if value is not None:
                return cls(source, value.lower(), weak=False)
        value = _clean(wwid)
        if value is not None:
            # The kernel builds "nvme.<vid>-<serial>-<model>-<nsid>" when the controller reports
            # no usable uuid/nguid/eui64; it is a function of the slot, not of the data.
            return cls(IdentitySource.WWID, value, weak=value.startswith("nvme."))
        return cls(IdentitySource.SUBSYS_NSID, f"{subsysnqn or '?'}#{nsid}", weak=True)


@dataclass(frozen=True, slots=True)
class Filesystem:
    """What blkid (through udev's ``ID_FS_*`` properties) found on a block device."""

    type: str
    usage: str | None = None
    label: str | None = None
    uuid: str | None = None
    version: str | None = None

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> Filesystem | None:
        fstype = props.get("ID_FS_TYPE")
        if not fstype:
            return None
        return cls(
            type=fstype,
            usage=props.get("ID_FS_USAGE") or None,
            label=props.get("ID_FS_LABEL") if "ID_FS_LABEL" in props else None,
            uuid=props.get("ID_FS_UUID") or None,
            version=props.get("ID_FS_VERSION") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "usage": self.usage,
            "label": self.label,
            "uuid": self.uuid,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Properties(Mapping[str, str]):
    """An immutable, hashable mapping of udev properties."""

    items_: tuple[tuple[str, str], ...] = ()
    # A lookup table beside the canonical tuple: every event reads a dozen properties, and a
    # scan of a 40-item tuple per read was a visible share of the per-record cost.
    _map: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_map", dict(self.items_))

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> Properties:
        return cls(tuple(sorted(mapping.items())))

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    @overload
    def get(self, key: str, /) -> str | None: ...

    @overload
    def get(self, key: str, default: str | _T, /) -> str | _T: ...

    def get(self, key: str, default: object = None, /) -> object:
        return self._map.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)


@dataclass(frozen=True, slots=True)
class Controller:
    """An NVMe controller (``nvmeX``, subsystem ``nvme``)."""

    name: str
    devpath: str
    serial: str | None = None
    model: str | None = None
    firmware: str | None = None
    subsysnqn: str | None = None
    cntlid: int | None = None
    transport: str | None = None
    address: str | None = None
    state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "devpath": self.devpath,
            "serial": self.serial,
            "model": self.model,
            "firmware": self.firmware,
            "subsysnqn": self.subsysnqn,
            "cntlid": self.cntlid,
            "transport": self.transport,
            "address": self.address,
            "state": self.state,
        }


#: Controller states in which the kernel has not finished bringing a controller up: its sysfs
#: attributes may still read as placeholders, so it is not announced yet.
NOT_LIVE_STATES = frozenset({"new", "connecting"})


@dataclass(frozen=True, slots=True)
class NamespacePath:
    """One way to reach a namespace: a controller and the block device behind it.

    Without native multipath each controller has its own visible disk (``nvme0n1`` and
    ``nvme1n1`` for one namespace behind two controllers); with it the visible head is the
    namespace and each path is a hidden ``nvmeXcYnZ`` disk (``device`` is ``None`` when no
    such disk was seen and the path is inferred from the subsystem's controllers).
    ``transport``, ``address`` and ``state`` are the controller's.
    """

    controller: str | None
    device: str | None = None
    devpath: str | None = None
    devnode: str | None = None
    transport: str | None = None
    address: str | None = None
    state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "controller": self.controller,
            "device": self.device,
            "devpath": self.devpath,
            "devnode": self.devnode,
            "transport": self.transport,
            "address": self.address,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Partition:
    """A partition of a namespace's block device."""

    name: str
    devpath: str
    devnode: str | None
    number: int | None
    size_bytes: int | None = None
    fs: Filesystem | None = None
    partlabel: str | None = None
    partuuid: str | None = None
    properties: Properties = field(default_factory=Properties)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "devpath": self.devpath,
            "devnode": self.devnode,
            "number": self.number,
            "size_bytes": self.size_bytes,
            "fs": self.fs.to_dict() if self.fs else None,
            "partlabel": self.partlabel,
            "partuuid": self.partuuid,
        }


@dataclass(frozen=True, slots=True)
class Namespace:
    """An NVMe namespace as the guest sees it: the visible block device ``nvmeXnY`` (the
    multipath head when native multipath is on) plus what belongs to it.

    Never identify a namespace by ``name``: block names follow attach order, not NSIDs.
    """

    nsid: int
    name: str
    devpath: str
    devnode: str | None
    identity: Identity
    subsysnqn: str | None
    controllers: tuple[str, ...] = ()
    multipath: bool = False
    size_bytes: int | None = None
    lba_size: int | None = None
    uuid: str | None = None
    nguid: str | None = None
    eui64: str | None = None
    wwid: str | None = None
    serial: str | None = None
    model: str | None = None
    transport: str | None = None
    diskseq: int | None = None
    read_only: bool = False
    fs: Filesystem | None = None
    generic: str | None = None
    partitions: tuple[Partition, ...] = ()
    properties: Properties = field(default_factory=Properties)
    paths: tuple[NamespacePath, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        """The topology key: (subsystem NQN, nsid). Stable across renames, not across swaps."""
        return (self.subsysnqn or "", self.nsid)

    @property
    def ctrl(self) -> str | None:
        """The first controller this namespace is reachable through."""
        return self.controllers[0] if self.controllers else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "nsid": self.nsid,
            "name": self.name,
            "devpath": self.devpath,
            "devnode": self.devnode,
            "identity": str(self.identity),
            "identity_source": self.identity.source.value,
            "identity_weak": self.identity.weak,
            "subsysnqn": self.subsysnqn,
            "controllers": list(self.controllers),
            "multipath": self.multipath,
            "size_bytes": self.size_bytes,
            "lba_size": self.lba_size,
            "uuid": self.uuid,
            "nguid": self.nguid,
            "eui64": self.eui64,
            "wwid": self.wwid,
            "serial": self.serial,
            "model": self.model,
            "transport": self.transport,
            "diskseq": self.diskseq,
            "read_only": self.read_only,
            "fs": self.fs.to_dict() if self.fs else None,
            "generic": self.generic,
            "partitions": [p.to_dict() for p in self.partitions],
            "paths": [p.to_dict() for p in self.paths],
        }


@dataclass(frozen=True, slots=True)
class TopologySnapshot:
    """A consistent, immutable view of the whole topology at one instant."""

    controllers: tuple[Controller, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    # Lookup tables (:mod:`~nvme_agent.topology.lookup`): the filesystem UUID table and the
    # change log handed over by the tracker, the rest built on first use.  Not part of the
    # value.
    _index: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def indexed(
        cls,
        controllers: tuple[Controller, ...],
        namespaces: tuple[Namespace, ...],
        tables: Mapping[str, Any],
    ) -> TopologySnapshot:
        """A snapshot with its namespace tables given (never changed afterwards)."""
        snap = cls(controllers=controllers, namespaces=namespaces)
        snap._index.update(tables)
        return snap

    def _table(self, name: str) -> Any:
        table = self._index.get(name)
        if table is None:
            if name == "controller":
                table = {c.name: c for c in reversed(self.controllers)}
                self._index[name] = table
            else:
                for built, value in build_tables(self.namespaces).items():
                    self._index.setdefault(built, value)  # a table handed over stays
                table = self._index[name]
        return table

    def namespace(self, nsid: int, subsysnqn: str | None = None) -> Namespace | None:
        """The namespace ``nsid`` (of subsystem ``subsysnqn``; the first in order if None)."""
        if subsysnqn is None:
            found: Namespace | None = self._table("nsid").get(nsid)
        else:
            found = self._table("key").get((subsysnqn, nsid))
        return found

    def controller(self, name: str) -> Controller | None:
        found: Controller | None = self._table("controller").get(name)
        return found

    def device(self, devnode: str) -> tuple[Namespace, Partition | None] | None:
        """The namespace (and partition) whose device node is ``devnode``."""
        found: tuple[Namespace, Partition | None] | None = self._table("devnode").get(devnode)
        return found

    def carriers(self, fs_uuid: str) -> tuple[tuple[Namespace, Partition | None], ...]:
        """The namespaces (and partitions) whose filesystem has UUID ``fs_uuid`` (any case),
        in snapshot order."""
        found: tuple[tuple[Namespace, Partition | None], ...] = self._table("fs_uuid").get(
            fs_uuid.lower(), ()
        )
        return found

    def touched_since(self, earlier: TopologySnapshot) -> list[tuple[Key, Namespace | None]] | None:
        """(key, the namespace now or None when gone) of every namespace changed between
        ``earlier`` and this snapshot, in order, possibly several times; None when the
        tracker's log cannot say (a snapshot not made by the tracker, or a log started over):
        then compare the namespaces."""
        mine = self._index.get("touched")
        theirs = earlier._index.get("touched")
        if mine is None or theirs is None or mine[0] is not theirs[0] or theirs[1] > mine[1]:
            return None
        log: list[tuple[Key, Namespace | None]] = mine[0][theirs[1] : mine[1]]
        return log

    def to_dict(self) -> dict[str, Any]:
        return {
            "controllers": [c.to_dict() for c in self.controllers],
            "namespaces": [n.to_dict() for n in self.namespaces],
        }
