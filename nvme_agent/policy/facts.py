"""The facts about one target block device that rules match on and templates render.

A change concerns one block device: the partition for ``partition-*`` changes, the whole
namespace disk otherwise.  :func:`facts_for` flattens namespace, partition, controller, path
and filesystem data into one read-only record so matchers and templates never need to know
where a value came from.

Paths: ``transports`` are those of every path the namespace is known through (a namespace
reached over tcp and rdma has both), ``paths_live`` counts its paths whose controller state is
``live``, and the ``path_*`` facts describe the path a ``path-added``/``path-lost`` change is
about (``None`` for every other change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nvme_agent.topology.model import (
    Namespace,
    NamespacePath,
    Partition,
    Properties,
    TopologySnapshot,
)

#: Facts that hold several values (a tuple): a glob condition on one holds when one value matches.
MULTI_VALUED = frozenset({"transports"})
#: The controller state of a path that carries I/O (``/sys/class/nvme/nvmeX/state``).
LIVE = "live"


@dataclass(frozen=True)
class Facts:
    """Everything a rule can look at.  ``None`` means "not known / not present".

    Built once per decision by :func:`facts_for`, which fills the instance's ``__dict__`` in
    one step: a frozen dataclass's ``__init__`` sets each of its (some thirty) fields through
    ``object.__setattr__``, which was a fifth of the cost of a decision.  (No ``slots``, so
    that there is a ``__dict__``; assignments still raise, the value stays frozen.)
    """

    nsid: int
    devnode: str | None
    devname: str | None
    ctrl: str | None
    serial: str | None
    model: str | None
    subsysnqn: str | None
    transports: tuple[str, ...]
    paths_live: int
    path: bool
    path_ctrl: str | None
    path_device: str | None
    path_transport: str | None
    path_address: str | None
    path_state: str | None
    uuid: str | None
    nguid: str | None
    eui64: str | None
    wwid: str | None
    identity: str
    identity_weak: bool
    partition: bool
    partn: int | None
    partlabel: str | None
    size: int | None
    fs_type: str | None
    fs_label: str | None
    fs_uuid: str | None
    fs_usage: str | None
    properties: Properties = field(default_factory=Properties)

    @property
    def partition_table(self) -> str | None:
        """The partition table type (gpt, dos), if the target carries one."""
        # Looked up when asked, not per decision: only a skipped mount explains with it.
        return self.properties.get("ID_PART_TABLE_TYPE") or None

    @property
    def fallback(self) -> str:
        """What an empty template value renders as."""
        if self.partition and self.partn is not None:
            return f"ns{self.nsid}p{self.partn}"
        return f"ns{self.nsid}"

    @property
    def mountable(self) -> bool:
        """A filesystem was detected on this block device.

        A whole disk with a partition table and no filesystem signature is not mountable
        (its partitions are); neither is a blank one.
        """
        # LUKS, LVM and RAID members and swap carry an ID_FS_TYPE but are not mountable.
        return bool(self.fs_type) and self.fs_usage in (None, "filesystem")

    def template_values(self) -> dict[str, str]:
        """Raw (unsanitised) strings for every template field except ``mountpoint``."""
        return {
            "nsid": str(self.nsid),
            "ctrl": self.ctrl or "",
            "devname": self.devname or "",
            "label": self.fs_label or "",
            "fs_uuid": self.fs_uuid or "",
            "fs_type": self.fs_type or "",
            "uuid": self.uuid or "",
            "nguid": self.nguid or "",
            "eui64": self.eui64 or "",
            "wwid": self.wwid or "",
            "serial": self.serial or "",
            "model": self.model or "",
            "subsysnqn": self.subsysnqn or "",
            "partn": "" if self.partn is None else str(self.partn),
            "partlabel": self.partlabel or "",
            "identity": self.identity,
            "paths_live": str(self.paths_live),
            **(self._path_values() if self.path else _NO_PATH_VALUES),
        }

    def _path_values(self) -> dict[str, str]:
        return {
            "path_ctrl": self.path_ctrl or "",
            "path_device": self.path_device or "",
            "path_transport": self.path_transport or "",
            "path_address": self.path_address or "",
            "path_state": self.path_state or "",
        }


#: The path facts of a change that is not about a path, and their template values.
_NO_PATH = dict.fromkeys(
    ("path_ctrl", "path_device", "path_transport", "path_address", "path_state")
)
_NO_PATH_VALUES = dict.fromkeys(_NO_PATH, "")


def _basename(devnode: str | None, name: str | None) -> str | None:
    if devnode:
        return devnode.rstrip("/").rsplit("/", 1)[-1]
    return name


def _facts(path: NamespacePath | None, **values: Any) -> Facts:
    facts = object.__new__(Facts)
    fields = facts.__dict__
    fields.update(values)  # every field, at once (see the class docstring)
    if path is None:
        fields.update(_NO_PATH)
        fields["path"] = False
    else:
        fields["path"] = True
        fields["path_ctrl"] = path.controller
        fields["path_device"] = path.device
        fields["path_transport"] = path.transport
        fields["path_address"] = path.address
        fields["path_state"] = path.state
    return facts


def _transports(ns: Namespace, fallback: str | None) -> tuple[str, ...]:
    """The transports of every path of ``ns`` (each once, in path order); without a path that
    knows its transport, the namespace's (or its controller's)."""
    if len(ns.paths) == 1:  # the usual case, without a dict
        only = ns.paths[0].transport
        if only:
            return (only,)
    elif ns.paths:
        found = tuple(dict.fromkeys(p.transport for p in ns.paths if p.transport))
        if found:
            return found
    return (fallback,) if fallback else ()


def facts_for(
    ns: Namespace,
    partition: Partition | None,
    topology: TopologySnapshot | None,
    path: NamespacePath | None = None,
) -> Facts:
    """Facts for ``partition`` of ``ns`` (or the whole disk ``ns`` when ``partition`` is None);
    ``path``: the path a path change is about.

    Controller attributes missing on the namespace are taken from the topology's controller.
    """
    ctrl = ns.ctrl
    c = topology.controller(ctrl) if (topology is not None and ctrl) else None
    # The namespace's value, else its controller's; "" counts as none.
    serial = ns.serial or (c.serial if c else None) or None
    model = ns.model or (c.model if c else None) or None
    transport = ns.transport or (c.transport if c else None) or None
    subsysnqn = ns.subsysnqn or (c.subsysnqn if c else None) or None
    if partition is not None:
        fs = partition.fs
        props = partition.properties
        devnode, name, size = partition.devnode, partition.name, partition.size_bytes
    else:
        fs = ns.fs
        props = ns.properties
        devnode, name, size = ns.devnode, ns.name, ns.size_bytes
    paths = ns.paths
    return _facts(
        path,
        nsid=ns.nsid,
        devnode=devnode,
        devname=_basename(devnode, name),
        ctrl=ctrl,
        serial=serial.strip() if serial else None,
        model=model.strip() if model else None,
        subsysnqn=subsysnqn,
        transports=_transports(ns, transport),
        paths_live=sum(1 for p in paths if p.state == LIVE) if paths else 0,
        uuid=ns.uuid,
        nguid=ns.nguid,
        eui64=ns.eui64,
        wwid=ns.wwid,
        identity=str(ns.identity),
        identity_weak=ns.identity.weak,
        partition=partition is not None,
        partn=partition.number if partition is not None else None,
        partlabel=partition.partlabel if partition is not None else None,
        size=size,
        fs_type=fs.type if fs else None,
        fs_label=fs.label if fs else None,
        fs_uuid=fs.uuid if fs else None,
        fs_usage=fs.usage if fs else None,
        properties=props,
    )
