"""Rebuild a :class:`TopologySnapshot` from its ``to_dict()`` form (the state file)."""

from __future__ import annotations

from typing import Any

from nvme_agent.topology.model import (
    Controller,
    Filesystem,
    Identity,
    IdentitySource,
    Namespace,
    NamespacePath,
    Partition,
    TopologySnapshot,
)


def _fs(data: dict[str, Any] | None) -> Filesystem | None:
    if not data:
        return None
    return Filesystem(
        type=data["type"],
        usage=data.get("usage"),
        label=data.get("label"),
        uuid=data.get("uuid"),
        version=data.get("version"),
    )


def _partition(data: dict[str, Any]) -> Partition:
    return Partition(
        name=data["name"],
        devpath=data["devpath"],
        devnode=data.get("devnode"),
        number=data.get("number"),
        size_bytes=data.get("size_bytes"),
        fs=_fs(data.get("fs")),
        partlabel=data.get("partlabel"),
        partuuid=data.get("partuuid"),
    )


def _path(data: dict[str, Any]) -> NamespacePath:
    fields = NamespacePath.__dataclass_fields__
    return NamespacePath(**{k: v for k, v in data.items() if k in fields})


def _namespace(data: dict[str, Any]) -> Namespace:
    source = IdentitySource(data["identity_source"])
    value = str(data["identity"]).split(":", 1)[1]
    return Namespace(
        nsid=int(data["nsid"]),
        name=data["name"],
        devpath=data["devpath"],
        devnode=data.get("devnode"),
        identity=Identity(source, value, bool(data["identity_weak"])),
        subsysnqn=data.get("subsysnqn"),
        controllers=tuple(data.get("controllers", ())),
        multipath=bool(data.get("multipath")),
        size_bytes=data.get("size_bytes"),
        lba_size=data.get("lba_size"),
        uuid=data.get("uuid"),
        nguid=data.get("nguid"),
        eui64=data.get("eui64"),
        wwid=data.get("wwid"),
        serial=data.get("serial"),
        model=data.get("model"),
        transport=data.get("transport"),
        diskseq=data.get("diskseq"),
        read_only=bool(data.get("read_only")),
        fs=_fs(data.get("fs")),
        generic=data.get("generic"),
        partitions=tuple(_partition(p) for p in data.get("partitions", ())),
        # A state file of an older version has no paths: () means "not known", and the diff
        # then compares none.
        paths=tuple(_path(p) for p in data.get("paths", ())),
    )


def _controller(data: dict[str, Any]) -> Controller:
    fields = Controller.__dataclass_fields__
    return Controller(**{k: v for k, v in data.items() if k in fields})


def snapshot_from_dict(data: dict[str, Any]) -> TopologySnapshot:
    """Inverse of :meth:`TopologySnapshot.to_dict` (udev properties are not kept)."""
    return TopologySnapshot(
        controllers=tuple(_controller(c) for c in data.get("controllers", ())),
        namespaces=tuple(_namespace(n) for n in data.get("namespaces", ())),
    )
