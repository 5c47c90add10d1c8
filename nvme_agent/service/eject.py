"""``eject``: run a present namespace's remove plan before the host detaches it.

The pure parts (which namespace, which plans, what the answer says) are functions here; the
daemon submits the plans and :class:`ResultWaiters` collects their results for the request.

An eject can take minutes while the holders of a mount are signalled and waited for, so a
request that asks for progress (``nvme-agent eject`` does) is told, as it happens: the plan
(:func:`plan_progress`), who holds each mount before the unmount starts
(:func:`holders_progress`), each holder the unmount signals (:class:`SignalTap`, from the
action log) and each action's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.actions.holders import find_holders
from nvme_agent.actions.ledger import LedgerEntry
from nvme_agent.actions.runner import describe
from nvme_agent.policy import Policy, decide
from nvme_agent.policy.plan import ActionResult, Plan, Status, UnmountSpec
from nvme_agent.service.answers import Answer, Reason, RequestFailed, failure
from nvme_agent.service.recovery import EJECT_REASON
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot


@dataclass(frozen=True, slots=True)
class EjectTarget:
    """What the request names: a device node, or an nsid (with a controller if ambiguous)."""

    device: str | None = None
    nsid: int | None = None
    ctrl: str | None = None


def find_namespace(snap: TopologySnapshot, target: EjectTarget) -> Namespace:
    """The namespace ``target`` names; :class:`RequestFailed` (not-found) otherwise."""
    if target.device:
        real = os.path.realpath(target.device)
        for ns in snap.namespaces:
            nodes = [ns.devnode] + [p.devnode for p in ns.partitions]
            if target.device in nodes or real in nodes:
                return ns
        raise RequestFailed(Reason.NOT_FOUND, f"no NVMe namespace has device {target.device}")
    nsid, ctrl = target.nsid, target.ctrl
    found = [n for n in snap.namespaces if n.nsid == nsid and (not ctrl or ctrl in n.controllers)]
    if not found:
        where = f" on {ctrl}" if ctrl else ""
        raise RequestFailed(Reason.NOT_FOUND, f"no namespace with nsid {nsid}{where}")
    if len(found) > 1:
        raise RequestFailed(
            Reason.BAD_REQUEST,
            f"nsid {nsid} exists on several subsystems; name the controller with --ctrl",
        )
    return found[0]


def eject_plans(ns: Namespace, snap: TopologySnapshot, policy: Policy) -> list[Plan]:
    """The remove plans of ``ns``'s partitions, then of ``ns`` itself."""
    changes = [
        Change(ChangeType.PARTITION_REMOVED, namespace=ns, partition=p, reason=EJECT_REASON)
        for p in ns.partitions
    ]
    changes.append(Change(ChangeType.NAMESPACE_REMOVED, namespace=ns, reason=EJECT_REASON))
    return [decide(c, snap, policy) for c in changes]


def eject_answer(ns: Namespace, results: Iterable[ActionResult]) -> Answer:
    """Safe when no action failed or was cancelled; otherwise why, and who holds it."""
    done = list(results)
    facts = {"nsid": ns.nsid, "device": ns.devnode, "results": [r.to_dict() for r in done]}
    failed = [r for r in done if r.status in (Status.FAILED, Status.CANCELLED)]
    if not failed:
        return {"ok": True, **facts}
    holders = [r.details for r in failed if r.details]
    error = "; ".join(f"{r.action}: {r.error or r.message}" for r in failed)
    return failure(Reason.HELD if holders else Reason.FAILED, error, holders=holders, **facts)


@dataclass(eq=False)
class Waiter:
    """The results of the plans one request submitted."""

    keys: frozenset[str]
    expected: int
    results: list[ActionResult] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Called with each result as it arrives (progress for the requester).
    listener: Callable[[ActionResult], None] | None = None

    async def wait(self, timeout: float) -> bool:
        """True once every expected result arrived, False after ``timeout`` seconds."""
        if len(self.results) >= self.expected:
            return True
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            return False
        return True


class ResultWaiters:
    """Routes action results to the requests waiting for them."""

    def __init__(self) -> None:
        self._waiters: list[Waiter] = []

    def expect(self, plans: Iterable[Plan]) -> Waiter:
        plans = list(plans)
        waiter = Waiter(frozenset(p.key for p in plans), sum(len(p.actions) for p in plans))
        if waiter.expected:
            self._waiters.append(waiter)
        return waiter

    def discard(self, waiter: Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def feed(self, result: ActionResult) -> None:
        for waiter in self._waiters:
            if result.plan_key in waiter.keys:
                waiter.results.append(result)
                if waiter.listener is not None:
                    waiter.listener(result)
                if len(waiter.results) >= waiter.expected:
                    waiter.done.set()


# ---------------------------------------------------------------------- progress
def plan_progress(ns: Namespace, plans: Iterable[Plan]) -> dict[str, Any]:
    """The first progress line: what the eject will do, action by action."""
    actions = [describe(a) for plan in plans for a in plan.actions]
    return {"stage": "plan", "nsid": ns.nsid, "device": ns.devnode, "actions": actions}


def unmounts_of(plans: Iterable[Plan], entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """Our mounts the unmounts of ``plans`` are about."""
    specs = [a for p in plans for a in p.actions if isinstance(a, UnmountSpec)]
    return [
        e
        for e in entries
        if e.mounted and any(s.source == e.source and s.target in (None, e.target) for s in specs)
    ]


def holders_progress(entries: Iterable[LedgerEntry]) -> list[dict[str, Any]]:
    """Who holds each of ``entries`` now (blocking: reads /proc), one line per busy mount."""
    lines: list[dict[str, Any]] = []
    for entry in entries:
        try:
            major, minor = (int(x) for x in entry.dev.split(":"))
        except ValueError:
            continue
        holders = find_holders(major, minor)
        if holders:
            lines.append(
                {
                    "stage": "held",
                    "mountpoint": entry.target,
                    "holders": [h.to_dict() for h in holders],
                }
            )
    return lines


class SignalTap(logging.Handler):
    """Hands the action log's records of holders being signalled (``NVME_HOLDER_PID``) for
    the given mountpoints to ``send``, on the event loop.  Attach it to the
    ``nvme_agent.actions`` logger while an eject waits."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        targets: Iterable[str],
        send: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(logging.INFO)
        self.loop = loop
        self.targets = frozenset(targets)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        pid = getattr(record, "NVME_HOLDER_PID", None)
        target = getattr(record, "MOUNTPOINT", None)
        if pid is None or target not in self.targets:
            return
        line = {
            "stage": "signalled",
            "mountpoint": target,
            "pid": pid,
            "uid": getattr(record, "NVME_HOLDER_UID", None),
            "command": getattr(record, "NVME_HOLDER_COMMAND", None),
            "signal": getattr(record, "NVME_SIGNAL", None),
        }
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.send, line)
