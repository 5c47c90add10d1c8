"""What the daemon remembers between plans, results and restarts: pure, no I/O, no clock.

* **handled**: disk instances whose add plans have all finished, with the digest of the
  policy that planned them.  Persisted, so that a restart after ``kill -9`` re-runs exactly
  the add plans that were cut short, and the ones a changed policy would plan differently.
* **ejected**: disk instances whose remove plan ran through ``eject`` before the host
  detached them; their later removal must not run it again, and a restart must not mount
  them again while the very same disk is present.
* **outstanding**: add actions submitted and not yet reported, per plan key.

Everything is keyed by :class:`DiskKey` (subsystem NQN, nsid, DISKSEQ): a new DISKSEQ at the
same place is another disk.  :meth:`Bookkeeping.to_state` and :func:`from_state` are the
state-file layout (``runtime_dir/topology.json``)::

    {"topology": <TopologySnapshot.to_dict()>,
     "handled": [[nqn, nsid, diskseq, policy_digest], ...],
     "ejected": [[nqn, nsid, diskseq], ...],
     "policy_generation": n}
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import types
import typing
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvme_agent.actions.ledger import LedgerEntry
from nvme_agent.outputs.state import JsonFragments
from nvme_agent.policy.plan import ActionResult, Plan, UnmountSpec
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot
from nvme_agent.topology.snapshot_io import snapshot_from_dict
from nvme_agent.topology.tracker import diff_snapshots

#: The ``reason`` of the removal changes an eject submits.
EJECT_REASON = "eject"
WHILE_DOWN = "while the agent was down"

_ADD_VALUES = frozenset(k.value for k in ADD_KINDS)


@dataclass(frozen=True, slots=True)
class DiskKey:
    """One disk instance of one namespace: (subsystem NQN, nsid, DISKSEQ)."""

    subsysnqn: str
    nsid: int
    diskseq: int | None

    @classmethod
    def of(cls, ns: Namespace) -> DiskKey:
        return cls(ns.subsysnqn or "", ns.nsid, ns.diskseq)

    @property
    def slot(self) -> tuple[str, int]:
        """The topology key (NQN, nsid): the place, whatever disk is in it."""
        return (self.subsysnqn, self.nsid)

    def sort_key(self) -> tuple[str, int, int]:
        return (self.subsysnqn, self.nsid, -1 if self.diskseq is None else self.diskseq)


class StateError(ValueError):
    """The state file does not have the layout :meth:`Bookkeeping.to_state` writes."""


@dataclass(frozen=True, slots=True)
class SavedState:
    """What a previous run left in the state file."""

    topology: TopologySnapshot
    handled: tuple[tuple[DiskKey, str], ...] = ()
    ejected: tuple[DiskKey, ...] = ()
    policy_generation: int = 1
    #: The history records of the last batch whose state was written (each with its
    #: ``"rid"``): the history may lack them (see :mod:`~nvme_agent.service.persist`).
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Restored:
    """The changes to handle after a (re)start, in order."""

    changes: tuple[Change, ...]
    #: How many of them happened while the agent was down (the rest are re-runs).
    while_down: int = 0


def present_changes(snap: TopologySnapshot, coldplug: bool = False) -> list[Change]:
    """An added change for every namespace and partition present in ``snap``."""
    changes: list[Change] = []
    for ns in snap.namespaces:
        changes.append(Change(ChangeType.NAMESPACE_ADDED, namespace=ns, coldplug=coldplug))
        changes.extend(
            Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=p, coldplug=coldplug)
            for p in ns.partitions
        )
    return changes


def _while_down(change: Change) -> Change:
    reason = f"{change.reason} ({WHILE_DOWN})" if change.reason else WHILE_DOWN
    return dataclasses.replace(change, coldplug=True, reason=reason)


class Bookkeeping:
    """The handled, ejected and outstanding sets of one daemon (see the module docstring)."""

    def __init__(self) -> None:
        self.handled: dict[DiskKey, str] = {}  # changed only through _handle and _unhandle
        #: The keys of ``handled`` set or dropped since :meth:`take_handled_touched`: the
        #: state writer's line costs what a batch changed, not a look at every handled disk.
        self._handled_touched: set[DiskKey] = set()
        self._ejected: dict[tuple[str, int], DiskKey] = {}
        self._outstanding: Counter[str] = Counter()
        self._awaiting: dict[str, tuple[DiskKey, str]] = {}

    # ------------------------------------------------------------------ restart
    def restore(
        self, previous: SavedState | None, snapshot: TopologySnapshot, policy_digest: str
    ) -> Restored:
        """The changes that bring the previous run's world to ``snapshot``.

        Without a previous state everything present is new (controllers too).  Otherwise:
        what changed while the agent was down, then the add plans of present disks that
        were not handled under this very policy; an ejected disk stays ejected while it is
        still present, and is not planned again.
        """
        if previous is None:
            controllers = [
                Change(ChangeType.CONTROLLER_ADDED, controller=c, coldplug=True)
                for c in snapshot.controllers
            ]
            return Restored(tuple(controllers + present_changes(snapshot, coldplug=True)))
        down = [_while_down(c) for c in diff_snapshots(previous.topology, snapshot)]
        for key in previous.ejected:
            ns = snapshot.namespace(key.nsid, key.subsysnqn or None)
            if ns is not None and DiskKey.of(ns) == key:
                self._ejected[key.slot] = key
        handled = dict(previous.handled)
        touched = {c.namespace.key for c in down if c.namespace is not None}
        again: list[Change] = []
        for change in present_changes(snapshot, coldplug=True):
            ns = change.namespace
            assert ns is not None
            if ns.key in touched or ns.key in self._ejected:
                continue  # an ejected namespace stays unmounted until it is detached
            key = DiskKey.of(ns)
            digest = handled.get(key)
            if digest == policy_digest:
                self._handle(key, digest)
                continue
            why = "policy changed since" if digest else "add plan interrupted by"
            again.append(dataclasses.replace(change, reason=f"{why} the last run"))
        return Restored(tuple(down + again), while_down=len(down))

    # ------------------------------------------------------------------ plans and results
    def plan_submitted(self, plan: Plan, policy_digest: str) -> None:
        """Note a plan handed to the runner (or one with nothing to run)."""
        ns = plan.change.namespace
        if ns is None:
            return
        key = DiskKey.of(ns)
        if plan.change.type in REMOVE_KINDS:
            self._unhandle(key)
        elif plan.change.type in ADD_KINDS:
            if plan.actions:
                # A partition's plan shares its namespace's key: until it has run, the
                # namespace is not handled, even if the disk's own plan had nothing to do.
                self._unhandle(key)
                self._outstanding[plan.key] += len(plan.actions)
                self._awaiting[plan.key] = (key, policy_digest)
            elif not self._outstanding[plan.key]:
                self._handle(key, policy_digest)

    def result(self, result: ActionResult) -> bool:
        """Note an action's result; True when a disk became handled (persist the state)."""
        if result.change not in _ADD_VALUES or self._outstanding[result.plan_key] <= 0:
            return False
        self._outstanding[result.plan_key] -= 1
        if self._outstanding[result.plan_key]:
            return False
        del self._outstanding[result.plan_key]
        awaited = self._awaiting.pop(result.plan_key, None)
        if awaited is None:
            return False
        self._handle(*awaited)
        return True

    def _handle(self, key: DiskKey, digest: str) -> None:
        if self.handled.get(key) != digest:
            self.handled[key] = digest
            self._handled_touched.add(key)

    def _unhandle(self, key: DiskKey) -> None:
        if self.handled.pop(key, None) is not None:
            self._handled_touched.add(key)

    def take_handled_touched(self) -> set[DiskKey]:
        """The keys of ``handled`` set or dropped since the last call (then forgotten)."""
        touched, self._handled_touched = self._handled_touched, set()
        return touched

    # ------------------------------------------------------------------ eject
    def ejected(self, ns: Namespace) -> None:
        """``ns``'s remove plan ran through eject: it is safe to remove."""
        key = DiskKey.of(ns)
        self._ejected[key.slot] = key

    def ejected_keys(self) -> frozenset[DiskKey]:
        """Every ejected disk (a copy, for a worker thread)."""
        return frozenset(self._ejected.values())

    def is_ejected(self, ns: Namespace) -> bool:
        key = DiskKey.of(ns)
        return self._ejected.get(key.slot) == key

    def removal_already_ran(self, change: Change) -> bool:
        """True for a removal whose plan an eject already ran (forgets the eject once the
        namespace itself is gone)."""
        ns = change.namespace
        if ns is None or change.type not in REMOVE_KINDS or change.reason == EJECT_REASON:
            return False
        if not self.is_ejected(ns):
            return False
        if change.type is ChangeType.NAMESPACE_REMOVED:
            del self._ejected[ns.key]
        return True

    # ------------------------------------------------------------------ state file
    def to_state(self, snapshot: TopologySnapshot, generation: int) -> dict[str, Any]:
        """The state file's content (see the module docstring)."""
        return {
            "topology": snapshot.to_dict(),
            "handled": self._handled_rows(),
            "ejected": self.ejected_rows(),
            "policy_generation": generation,
        }

    def state_text(
        self, snapshot: TopologySnapshot, generation: int, fragments: JsonFragments[Namespace]
    ) -> str:
        """:meth:`to_state` as JSON text, each namespace's text taken from ``fragments``
        (rendered once per namespace object): the same document, at a fraction of the cost
        of encoding every namespace before every batch."""
        controllers = json.dumps([c.to_dict() for c in snapshot.controllers], sort_keys=True)
        namespaces = ", ".join(fragments.texts(snapshot.namespaces))
        rest = json.dumps(
            {
                "handled": self._handled_rows(),
                "ejected": self.ejected_rows(),
                "policy_generation": generation,
            },
            sort_keys=True,
        )
        topology = f'{{"controllers": {controllers}, "namespaces": [{namespaces}]}}'
        return f'{rest[:-1]}, "topology": {topology}}}\n'

    def _handled_rows(self) -> list[list[Any]]:
        handled = sorted(self.handled.items(), key=lambda item: item[0].sort_key())
        return [[k.subsysnqn, k.nsid, k.diskseq, digest] for k, digest in handled]

    def ejected_rows(self) -> list[list[Any]]:
        """The ejected disks as the state file lists them."""
        ejected = sorted(self._ejected.values(), key=DiskKey.sort_key)
        return [[k.subsysnqn, k.nsid, k.diskseq] for k in ejected]


def namespace_json(ns: Namespace) -> str:
    """One namespace as the state file holds it (the renderer of the daemon's fragments)."""
    return json.dumps(ns.to_dict(), sort_keys=True, default=str)


def unmount_plan(entry: LedgerEntry, reason: str, key: str, *, device_gone: bool) -> Plan:
    """A plan that unmounts one of our mounts outside any namespace's plans: a mount whose
    device vanished while we were down (lazily), or every mount on stop."""
    first = entry.created_dirs[0] if entry.created_dirs else entry.target
    spec = UnmountSpec(
        source=entry.source,
        target=entry.target,
        mount_root=os.path.dirname(first.rstrip("/")) or "/",  # where we made the mountpoint
        device_gone=device_gone,
        on_busy="lazy" if device_gone else "signal",  # "signal": the policy default
    )
    change = Change(ChangeType.NAMESPACE_REMOVED, reason=reason)
    return Plan(change=change, key=f"{key}:{entry.target}", actions=(spec,))


def orphan_mounts(
    entries: Iterable[LedgerEntry], snapshot: TopologySnapshot, planned: Iterable[str]
) -> list[LedgerEntry]:
    """Mounts we made whose device is neither present nor about to be handled by a removal
    plan (``planned`` devnodes): they must be lazily detached."""
    present = {ns.devnode for ns in snapshot.namespaces}
    present |= {p.devnode for ns in snapshot.namespaces for p in ns.partitions}
    present |= set(planned)
    return [e for e in entries if e.mounted and e.source not in present]


# ---------------------------------------------------------------------- reading it back
def from_state(data: object) -> SavedState:
    """Read what :meth:`Bookkeeping.to_state` wrote; :class:`StateError` for any other shape."""
    if not isinstance(data, Mapping):
        raise StateError(f"the state is a {type(data).__name__}, not an object")
    topology = data.get("topology")
    if not isinstance(topology, Mapping):
        raise StateError('"topology" is missing or not an object')
    try:
        snapshot = snapshot_from_dict(dict(topology))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise StateError(f'"topology" is malformed: {type(exc).__name__}: {exc}') from exc
    _check_types(snapshot, "topology")
    _check_same(topology, snapshot.to_dict(), "topology")
    generation = data.get("policy_generation", 1)
    if type(generation) is not int:
        raise StateError('"policy_generation" is not an integer')
    return SavedState(
        topology=snapshot,
        handled=tuple(_handled(data.get("handled", []))),
        ejected=tuple(_disk_key(item, 3, "ejected")[0] for item in _list(data, "ejected")),
        policy_generation=generation,
        history=tuple(_history(_list(data, "history"))),
    )


def _history(items: list[Any]) -> Iterable[dict[str, Any]]:
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("rid"), str):
            raise StateError(f'"history": {item!r:.100} is not a record with a "rid"')
        yield item


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise StateError(f'"{name}" is not a list')
    return value


def _handled(items: object) -> Iterable[tuple[DiskKey, str]]:
    if not isinstance(items, list):
        raise StateError('"handled" is not a list')
    for item in items:
        key, rest = _disk_key(item, 4, "handled")
        if not isinstance(rest[0], str):
            raise StateError(f'"handled": the policy digest of {item!r} is not a string')
        yield key, rest[0]


def _disk_key(item: object, length: int, name: str) -> tuple[DiskKey, list[Any]]:
    if not isinstance(item, list) or len(item) != length:
        raise StateError(f'"{name}": {item!r} is not a list of {length} items')
    nqn, nsid, diskseq, *rest = item
    ok = isinstance(nqn, str) and type(nsid) is int and (diskseq is None or type(diskseq) is int)
    if not ok:
        raise StateError(f'"{name}": {item!r} is not [NQN, nsid, diskseq]')
    return DiskKey(nqn, nsid, diskseq), rest


def _check_same(given: object, rebuilt: object, where: str) -> None:
    """What was read is what the rebuilt snapshot says (keys it does not know aside), so
    that no value was coerced on the way (``"nvme0"`` into a tuple of letters, ``true``
    into the nsid 1)."""
    if isinstance(given, Mapping) and isinstance(rebuilt, Mapping):
        for key in given:
            if key in rebuilt:
                _check_same(given[key], rebuilt[key], f"{where}.{key}")
        return
    if isinstance(given, list | tuple) and isinstance(rebuilt, list | tuple):
        if len(given) != len(rebuilt):
            raise StateError(f"{where}: not a list of objects")
        for i, (a, b) in enumerate(zip(given, rebuilt, strict=True)):
            _check_same(a, b, f"{where}[{i}]")
        return
    if type(given) is not type(rebuilt) or given != rebuilt:
        raise StateError(f"{where}: {given!r} is not a valid value")


def _check_types(value: object, where: str) -> None:
    """Every field of the rebuilt value objects has the type its dataclass declares, so
    nothing downstream meets a number where a string belongs."""
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):  # type: ignore[arg-type]
        if not f.init:
            continue  # derived from the fields that are checked (a lookup table, a cache)
        item = getattr(value, f.name)
        if not _conforms(item, hints[f.name], f"{where}.{f.name}"):
            raise StateError(f"{where}.{f.name}: {item!r} is not {hints[f.name]}")


def _conforms(value: object, hint: Any, where: str) -> bool:
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return any(_conforms(value, arm, where) for arm in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        arms = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return len(arms) == len(value) and all(
            _conforms(v, arm, where) for v, arm in zip(value, arms, strict=True)
        )
    if hint is type(None):
        return value is None
    if hint in (int, float, str) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return type(value) is hint or (isinstance(value, hint) and not isinstance(value, bool))
    if hint is bool:
        return type(value) is bool
    if not isinstance(hint, type) or not isinstance(value, hint):
        return False
    if dataclasses.is_dataclass(hint):
        _check_types(value, where)
    return True
