"""What a new policy would do differently to what is already attached (pure, no I/O).

A reload changes what the daemon does with the *next* change; present namespaces keep what
the old policy did to them (unless ``reconcile_on_reload: true``).  So the daemon remembers,
for every target (a namespace, or a partition of one), the add plan that ran for it: its
rule, its actions and the policy that decided it.  After a reload:

* :func:`drift` compares, for each present target, the add plan the policy in force decides
  now with the one that ran, by their actions (a renamed rule with the same actions is not
  a difference; the hook environment is not compared).  ``reload`` reports how many
  namespaces differ, ``status`` marks them ``not applied (policy changed)``;
* :func:`reconcile_plans` is what ``nvme-agent reconcile`` runs for one that differs: the
  old plan undone (the on_remove of the rule that applied, under the policy that applied it,
  with a graceful unmount: the device is still there), then the new add plan, in that order
  under the namespace's plan key.

Ejected namespaces are left alone: they stay unmounted until the host detaches them.

An assessment decides once or twice per present target: with a thousand namespaces and a
thousand rules, close to a second of CPU in a worker thread.  When its answer becomes moot
(another reload begins, the daemon stops) it is *called off*: ``called_off`` is asked before
each target, and :class:`CalledOff` ends it there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from nvme_agent.policy import Policy, decide
from nvme_agent.policy.plan import ActionSpec, Plan, UnmountSpec
from nvme_agent.service.recovery import DiskKey, present_changes
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot

#: The ``reason`` of the changes a reconcile decides on (hooks see NVME_AGENT_REASON).
RECONCILE_REASON = "reconcile"


@dataclass(frozen=True, slots=True)
class Target:
    """What an add plan is about: a disk, or one partition of it (by name)."""

    disk: DiskKey
    partition: str | None = None

    @classmethod
    def of_namespace(cls, ns: Namespace) -> Target:
        return cls(DiskKey.of(ns))

    @classmethod
    def of(cls, change: Change) -> Target | None:
        ns = change.namespace
        if ns is None:
            return None
        part = change.partition.name if change.partition is not None else None
        return cls(DiskKey.of(ns), part)


@dataclass(frozen=True, slots=True)
class Applied:
    """The add plan that ran for a target: under ``policy``, with ``rule`` and ``actions``
    (None: whatever ``policy`` decides, not computed yet).  Action specs are frozen values:
    two plans do the same when their actions are equal."""

    policy: Policy
    rule: str | None = None
    actions: tuple[ActionSpec, ...] | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    """A present target whose add plan under the policy in force differs from the one that
    ran: ``change`` (its add), ``plan`` (decided now), ``applied`` (what ran)."""

    change: Change
    plan: Plan
    applied: Applied

    @property
    def nsid(self) -> int | None:
        return self.change.nsid


class AppliedPlans:
    """The add plan that ran for each present target (mutable; the daemon's one).

    Kept per disk, then per partition name (``None``: the disk itself), so that a
    namespace's removal forgets its targets without a look at every other disk's."""

    def __init__(self) -> None:
        self._by_disk: dict[DiskKey, dict[str | None, Applied]] = {}

    def noted(self, plan: Plan, policy: Policy) -> None:
        """``plan`` was submitted under ``policy``: an add plan (or a change's) becomes the
        applied one of its target; a removal forgets the target (a namespace's removal its
        partitions too)."""
        change = plan.change
        target = Target.of(change)
        if target is None:
            return
        if change.type in ADD_KINDS or change.type is ChangeType.NAMESPACE_CHANGED:
            if change.type is ChangeType.NAMESPACE_CHANGED and change.partition is None:
                target = Target(target.disk)
            self._put(target, Applied(policy, plan.rule, plan.actions))
        elif change.type in REMOVE_KINDS:
            if change.partition is not None or change.reason == RECONCILE_REASON:
                self._forget(target)  # a reconcile undoes one target only
            else:
                self._by_disk.pop(target.disk, None)

    def _put(self, target: Target, applied: Applied) -> None:
        self._by_disk.setdefault(target.disk, {})[target.partition] = applied

    def _forget(self, target: Target) -> None:
        parts = self._by_disk.get(target.disk)
        if parts is not None:
            parts.pop(target.partition, None)
            if not parts:
                del self._by_disk[target.disk]

    def assume(self, snapshot: TopologySnapshot, policy: Policy) -> None:
        """Targets present without a record (handled by an earlier run under this very
        policy, so not planned again) count as applied under ``policy``."""
        for change in present_changes(snapshot):
            target = Target.of(change)
            if target is not None and self.get(target) is None:
                self._put(target, Applied(policy))

    def get(self, target: Target) -> Applied | None:
        parts = self._by_disk.get(target.disk)
        return parts.get(target.partition) if parts is not None else None

    def copy(self) -> dict[Target, Applied]:
        """A copy for a worker thread."""
        return {
            Target(disk, part): applied
            for disk, parts in self._by_disk.items()
            for part, applied in parts.items()
        }


class CalledOff(Exception):
    """An assessment stopped because its ``called_off()`` said so: nobody needs its answer."""


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Assessment:
    """One present target: its add ``change``, the ``plan`` the policy in force decides for
    it now, what ran for it (``applied``), and whether the two differ."""

    change: Change
    target: Target
    plan: Plan
    applied: Applied
    differs: bool


def assess(
    snapshot: TopologySnapshot,
    policy: Policy,
    applied: Mapping[Target, Applied],
    skip: Callable[[Namespace], bool] = lambda ns: False,
    called_off: Callable[[], bool] = _never,
) -> list[Assessment]:
    """Every present target, decided under ``policy`` and compared with what ran for it.

    A target planned under ``policy`` itself, ``skip``ped (ejected) or never planned does
    not differ.  One decision per target, two for one applied under an older policy whose
    actions were not recorded (a disk handled by an earlier run).  Raises
    :class:`CalledOff` once ``called_off()`` is true (asked first, then before each target).
    """
    out: list[Assessment] = []
    if called_off():
        raise CalledOff
    for change in present_changes(snapshot):
        if called_off():
            raise CalledOff
        ns = change.namespace
        target = Target.of(change)
        if ns is None or target is None:
            continue
        now = decide(change, snapshot, policy)
        before = applied.get(target) or Applied(policy)
        if before.policy is policy or skip(ns):
            out.append(Assessment(change, target, now, before, differs=False))
            continue
        if before.actions is None:
            old = decide(change, snapshot, before.policy)
            before = Applied(before.policy, old.rule, old.actions)
        out.append(Assessment(change, target, now, before, now.actions != before.actions))
    return out


def drift(
    snapshot: TopologySnapshot,
    policy: Policy,
    applied: Mapping[Target, Applied],
    skip: Callable[[Namespace], bool] = lambda ns: False,
    called_off: Callable[[], bool] = _never,
) -> list[Drift]:
    """The present targets (not ``skip``ped) whose add plan under ``policy`` differs (see
    :func:`assess` for ``called_off``)."""
    return [
        Drift(a.change, a.plan, a.applied)
        for a in assess(snapshot, policy, applied, skip, called_off)
        if a.differs
    ]


def drifted_namespaces(items: Iterable[Drift]) -> list[int]:
    """The distinct nsids of ``items``, in order."""
    return list(dict.fromkeys(d.nsid for d in items if d.nsid is not None))


def reconcile_plans(item: Drift, snapshot: TopologySnapshot, policy: Policy) -> list[Plan]:
    """Undo what ran for the target (its rule's on_remove under the policy that applied it,
    the unmount graceful), then the add plan ``policy`` decides now; both keyed like the
    target, so they run in this order."""
    change = dataclasses.replace(item.change, reason=RECONCILE_REASON)
    plans: list[Plan] = []
    if item.applied.actions:
        kind = ChangeType.PARTITION_REMOVED if change.partition else ChangeType.NAMESPACE_REMOVED
        undo = decide(dataclasses.replace(change, type=kind), snapshot, item.applied.policy)
        # decide() detaches a removed device lazily; this one is still there.
        graceful = tuple(
            dataclasses.replace(a, device_gone=False) if isinstance(a, UnmountSpec) else a
            for a in undo.actions
        )
        if graceful:
            plans.append(dataclasses.replace(undo, actions=graceful))
    plans.append(decide(change, snapshot, policy))
    return plans
