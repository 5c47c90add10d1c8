"""Builders of model objects for the policy tests (no topology/udev needed)."""

from __future__ import annotations

from collections.abc import Mapping

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import (
    Controller,
    Filesystem,
    Identity,
    Namespace,
    NamespacePath,
    Partition,
    Properties,
    TopologySnapshot,
)

NQN = "nqn.2019-08.org.qemu:nvme-rig-subsys0"


def fs(
    fstype: str | None = "ext4", label: str | None = None, uuid: str | None = None
) -> Filesystem | None:
    if fstype is None:
        return None
    return Filesystem(type=fstype, usage="filesystem", label=label, uuid=uuid)


def namespace(
    nsid: int = 1,
    *,
    name: str | None = None,
    fstype: str | None = "ext4",
    label: str | None = None,
    fs_uuid: str | None = None,
    serial: str | None = "RIGCTRL0",
    model: str | None = "QEMU NVMe Ctrl",
    uuid: str | None = None,
    wwid: str | None = None,
    size: int | None = 256 * 2**20,
    props: Mapping[str, str] | None = None,
    partitions: tuple[Partition, ...] = (),
    nqn: str | None = NQN,
    diskseq: int | None = None,
    filesystem: Filesystem | None = None,
    read_only: bool = False,
    paths: tuple[NamespacePath, ...] = (),
    transport: str | None = "pcie",
) -> Namespace:
    name = name or f"nvme0n{nsid}"
    wwid = wwid if wwid is not None else f"nvme.1b36-52494743-51454d55-{nsid:08x}"
    return Namespace(
        nsid=nsid,
        name=name,
        devpath=f"/devices/virtual/nvme-subsystem/nvme-subsys0/{name}",
        devnode=f"/dev/{name}",
        identity=Identity.derive(
            uuid=uuid, nguid=None, eui64=None, wwid=wwid, subsysnqn=nqn, nsid=nsid
        ),
        subsysnqn=nqn,
        controllers=tuple(p.controller for p in paths if p.controller) or ("nvme0",),
        size_bytes=size,
        uuid=uuid,
        wwid=wwid,
        serial=serial,
        model=model,
        transport=transport,
        diskseq=diskseq,
        read_only=read_only,
        fs=filesystem if filesystem is not None else fs(fstype, label, fs_uuid),
        partitions=partitions,
        properties=Properties.of(dict(props or {})),
        paths=paths,
    )


def path(
    ctrl: str = "nvme1",
    *,
    transport: str | None = "tcp",
    state: str | None = "live",
    address: str | None = None,
    device: str | None = None,
) -> NamespacePath:
    """A path through ``ctrl``; the address defaults to a TCP port per controller."""
    port = 4420 + int(ctrl[4:] or 0) if ctrl.startswith("nvme") and ctrl[4:].isdigit() else 4420
    return NamespacePath(
        controller=ctrl,
        device=device,
        transport=transport,
        address=address or f"traddr=127.0.0.1,trsvcid={port}",
        state=state,
    )


def path_change(
    kind: ChangeType,
    after: Namespace,
    lost_or_added: NamespacePath,
    before: Namespace | None = None,
) -> Change:
    """A path-added or path-lost change of ``after`` (the namespace after it)."""
    return Change(kind, seqnum=3, namespace=after, previous=before or after, path=lost_or_added)


def partition(
    ns_name: str = "nvme0n1",
    number: int = 1,
    *,
    fstype: str | None = "ext4",
    label: str | None = None,
    partlabel: str | None = None,
    size: int | None = 100 * 2**20,
    props: Mapping[str, str] | None = None,
    fs_uuid: str | None = None,
) -> Partition:
    name = f"{ns_name}p{number}"
    return Partition(
        name=name,
        devpath=f"/devices/virtual/nvme-subsystem/nvme-subsys0/{ns_name}/{name}",
        devnode=f"/dev/{name}",
        number=number,
        size_bytes=size,
        fs=fs(fstype, label, fs_uuid),
        partlabel=partlabel,
        properties=Properties.of(dict(props or {})),
    )


def controller(name: str = "nvme0") -> Controller:
    return Controller(
        name=name,
        devpath=f"/devices/pci0000:00/0000:00:04.0/nvme/{name}",
        serial="RIGCTRL0",
        model="QEMU NVMe Ctrl",
        subsysnqn=NQN,
        transport="pcie",
    )


def topology(*namespaces: Namespace) -> TopologySnapshot:
    return TopologySnapshot(controllers=(controller(),), namespaces=tuple(namespaces))


def added(ns: Namespace, part: Partition | None = None) -> Change:
    kind = ChangeType.PARTITION_ADDED if part else ChangeType.NAMESPACE_ADDED
    return Change(type=kind, seqnum=1, namespace=ns, partition=part)


def removed(ns: Namespace, part: Partition | None = None, reason: str | None = None) -> Change:
    kind = ChangeType.PARTITION_REMOVED if part else ChangeType.NAMESPACE_REMOVED
    return Change(type=kind, seqnum=2, namespace=ns, partition=part, reason=reason)
