"""The ``status`` view, built in one place for the daemon and for ``nvme-agent status``
without a daemon (straight from udev and ``/proc/self/mountinfo``).

The daemon knows the matching rule and which namespaces were ejected; the CLI alone knows
neither, so those are optional (``rule`` is then None and ``ejected`` absent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot


def mounts_by_source(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``{device: [mountpoint, ...]}`` from (source, mountpoint) pairs, in their order."""
    mounts: dict[str, list[str]] = {}
    for source, target in pairs:
        mounts.setdefault(source, []).append(target)
    return mounts


def topology_status(
    snap: TopologySnapshot,
    mounts: Mapping[str, list[str]],
    *,
    rule_of: Callable[[Change], str | None] | None = None,
    is_ejected: Callable[[Namespace], bool] | None = None,
) -> dict[str, Any]:
    """``{"controllers": [...], "namespaces": [...]}``: one item per namespace, with its
    mountpoints and its partitions' (and the rule its addition matches, and whether it was
    ejected, when the caller knows)."""
    namespaces = []
    for ns in snap.namespaces:
        item = ns.to_dict()
        change = Change(ChangeType.NAMESPACE_ADDED, namespace=ns)
        item["rule"] = rule_of(change) if rule_of is not None else None
        item["mountpoints"] = list(mounts.get(ns.devnode or "", []))
        for part in item["partitions"]:
            part["mountpoints"] = list(mounts.get(part["devnode"] or "", []))
        if is_ejected is not None:
            item["ejected"] = is_ejected(ns)
        namespaces.append(item)
    return {
        "controllers": [c.to_dict() for c in snap.controllers],
        "namespaces": namespaces,
    }
