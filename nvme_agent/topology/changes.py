"""Typed topology change records: what the topology emits and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nvme_agent.topology.model import Controller, Namespace, NamespacePath, Partition
from nvme_agent.topology.text import escape


class ChangeType(StrEnum):
    """Kinds of topology change.  The values are the ``type`` field of every JSON line."""

    NAMESPACE_ADDED = "namespace-added"
    NAMESPACE_REMOVED = "namespace-removed"
    NAMESPACE_RESIZED = "namespace-resized"
    NAMESPACE_CHANGED = "namespace-changed"
    PARTITION_ADDED = "partition-added"
    PARTITION_REMOVED = "partition-removed"
    CONTROLLER_ADDED = "controller-added"
    CONTROLLER_REMOVED = "controller-removed"
    PATH_ADDED = "path-added"
    PATH_LOST = "path-lost"


#: Change kinds whose policy hook is ``on_add`` / ``on_remove`` / ``on_resize``.
ADD_KINDS = frozenset({ChangeType.NAMESPACE_ADDED, ChangeType.PARTITION_ADDED})
REMOVE_KINDS = frozenset({ChangeType.NAMESPACE_REMOVED, ChangeType.PARTITION_REMOVED})
RESIZE_KINDS = frozenset({ChangeType.NAMESPACE_RESIZED})


@dataclass(frozen=True, slots=True)
class Change:
    """One topology change.

    ``namespace`` is the namespace after the change (before it, for a removal); ``previous`` is
    the state before a resize or change.  ``partition`` is set for partition changes, and
    ``namespace`` then is the namespace the partition belongs to (if known).
    ``coldplug`` marks changes found by enumeration at start rather than by a live event.
    ``path`` is set for path changes: the path that came or went, while ``namespace`` (and
    ``previous``, before the change) stay present.
    """

    type: ChangeType
    seqnum: int = 0
    namespace: Namespace | None = None
    previous: Namespace | None = None
    partition: Partition | None = None
    controller: Controller | None = None
    coldplug: bool = False
    reason: str | None = None
    path: NamespacePath | None = None

    @property
    def nsid(self) -> int | None:
        return self.namespace.nsid if self.namespace else None

    @property
    def ctrl(self) -> str | None:
        if self.controller is not None:
            return self.controller.name
        if self.path is not None and self.path.controller:
            return self.path.controller
        return self.namespace.ctrl if self.namespace else None

    @property
    def devnode(self) -> str | None:
        """The block device the change is about: the partition's, else the namespace's."""
        if self.partition is not None:
            return self.partition.devnode
        return self.namespace.devnode if self.namespace else None

    def summary(self) -> str:
        """One human line, as printed by ``simulate`` and on stderr without a journal.

        Every device string is escaped (:func:`~nvme_agent.topology.text.escape`): the line
        never holds a newline, a control character or a leading ``<N>``.
        """
        ns = self.namespace
        parts = [self.type.value]
        if self.controller is not None and ns is None:
            c = self.controller
            parts.append(f"{escape(c.name)} serial={escape(c.serial)} nqn={escape(c.subsysnqn)}")
        if ns is not None:
            parts.append(f"nsid={ns.nsid} {escape(ns.name)}")
            if self.partition is not None:
                parts.append(f"partition={escape(self.partition.name)}")
            if self.path is not None:
                parts.append(_path_summary(self.path))
            parts.append(f"id={escape(ns.identity)}{' (weak)' if ns.identity.weak else ''}")
            if ns.size_bytes is not None:
                parts.append(f"size={ns.size_bytes}")
            fs = self.partition.fs if self.partition is not None else ns.fs
            if fs is not None:
                parts.append(
                    f"fs={escape(fs.type)}" + (f" label='{escape(fs.label)}'" if fs.label else "")
                )
        now = ns.size_bytes if ns else None
        if self.previous is not None and self.previous.size_bytes != now:
            parts.append(f"was={self.previous.size_bytes}")
        if self.reason:
            parts.append(f"({escape(self.reason)})")
        if self.coldplug:
            parts.append("[coldplug]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line for this change (``type`` and ``nsid`` always present)."""
        return {
            "type": self.type.value,
            "nsid": self.nsid,
            "ctrl": self.ctrl,
            "seqnum": self.seqnum,
            "coldplug": self.coldplug,
            "reason": self.reason,
            "namespace": self.namespace.to_dict() if self.namespace else None,
            "previous": self.previous.to_dict() if self.previous else None,
            "partition": self.partition.to_dict() if self.partition else None,
            "controller": self.controller.to_dict() if self.controller else None,
            "path": self.path.to_dict() if self.path else None,
        }


def _path_summary(path: NamespacePath) -> str:
    parts = [
        f"path={escape(path.controller or '?')}"
        + (f" ({escape(path.device)})" if path.device else "")
    ]
    for name, value in (
        ("transport", path.transport),
        ("address", path.address),
        ("state", path.state),
    ):
        if value:
            parts.append(f"{name}={escape(value)}")
    return " ".join(parts)
