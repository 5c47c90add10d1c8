"""The ``status`` view, built in one place for the daemon and for ``nvme-agent status``
without a daemon (straight from udev and ``/proc/self/mountinfo``).

Controllers and namespaces are grouped by subsystem (``subsystems``): a namespace belongs to
its subsystem and is reached through any of its controllers (its ``paths`` say which, with
each controller's transport, address and state).  The daemon also knows the rule each
namespace and partition matches, whether the plan that ran for it is what the policy in force
would do (``applied``; false after a reload that changed it, until ``nvme-agent reconcile``),
and which namespaces were ejected; the CLI alone knows none of these, so they are absent
(``rule`` and ``applied`` None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nvme_agent.service.reconcile import Assessment, Target
from nvme_agent.topology.model import Namespace, TopologySnapshot


def mounts_by_source(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``{device: [mountpoint, ...]}`` from (source, mountpoint) pairs, in their order."""
    mounts: dict[str, list[str]] = {}
    for source, target in pairs:
        mounts.setdefault(source, []).append(target)
    return mounts


def _rule_fields(found: Assessment | None) -> dict[str, Any]:
    if found is None:
        return {"rule": None, "applied": None, "applied_rule": None}
    return {
        "rule": found.plan.rule,
        "applied": not found.differs,
        "applied_rule": found.applied.rule if found.differs else found.plan.rule,
    }


def topology_status(
    snap: TopologySnapshot,
    mounts: Mapping[str, list[str]],
    *,
    assessments: Iterable[Assessment] | None = None,
    is_ejected: Callable[[Namespace], bool] | None = None,
) -> dict[str, Any]:
    """``{"subsystems": [...], "controllers": [...], "namespaces": [...]}``: one item per
    namespace, with its mountpoints, its partitions' and (when the caller knows) the rule,
    whether it is applied, and whether it was ejected."""
    by_target = {a.target: a for a in assessments or ()}
    namespaces = []
    for ns in snap.namespaces:
        item = ns.to_dict()
        disk = Target.of_namespace(ns)
        item.update(_rule_fields(by_target.get(disk)))
        item["mountpoints"] = list(mounts.get(ns.devnode or "", []))
        for part in item["partitions"]:
            part.update(_rule_fields(by_target.get(Target(disk.disk, part["name"]))))
            part["mountpoints"] = list(mounts.get(part["devnode"] or "", []))
        if is_ejected is not None:
            item["ejected"] = is_ejected(ns)
        namespaces.append(item)
    return {
        "subsystems": subsystems(snap),
        "controllers": [c.to_dict() for c in snap.controllers],
        "namespaces": namespaces,
    }


def subsystems(snap: TopologySnapshot) -> list[dict[str, Any]]:
    """Each subsystem NQN with its controllers and the nsids of its namespaces, in order
    (``None`` gathers what has no NQN)."""
    groups: dict[str | None, dict[str, list[Any]]] = {}
    for c in snap.controllers:
        groups.setdefault(c.subsysnqn, {"controllers": [], "nsids": []})["controllers"].append(
            c.name
        )
    for ns in snap.namespaces:
        groups.setdefault(ns.subsysnqn, {"controllers": [], "nsids": []})["nsids"].append(ns.nsid)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    return [{"subsysnqn": nqn, **members} for nqn, members in ordered]


def counts(view: Mapping[str, Any]) -> dict[str, int]:
    """How many controllers, namespaces, mounts and namespaces not applied the view shows."""
    nss = view.get("namespaces") or []
    mounted = sum(
        len(n.get("mountpoints") or [])
        + sum(len(p.get("mountpoints") or []) for p in n["partitions"])
        for n in nss
    )
    pending = sum(
        1
        for n in nss
        if n.get("applied") is False or any(p.get("applied") is False for p in n["partitions"])
    )
    return {
        "controllers": len(view.get("controllers") or []),
        "namespaces": len(nss),
        "mounted": mounted,
        "not_applied": pending,
    }
