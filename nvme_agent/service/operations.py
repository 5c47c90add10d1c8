"""What the control commands ask of the daemon (:class:`~nvme_agent.service.requests.Agent`),
and what follows a reload.

Work that grows with the topology or the policy (a status with every namespace's rule, the
comparison of a new policy with what ran) is done in a worker thread on immutable inputs
taken on the loop (the snapshot, the policy, copies of the bookkeeping), so that udev events,
other requests and watchdog pings go on meanwhile; what it finds is checked against the
daemon as it is when the answer comes back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

from nvme_agent.outputs.journal import (
    MSG_EJECTED,
    MSG_POLICY_RELOAD_FAILED,
    MSG_POLICY_RELOADED,
    MSG_RECONCILE,
    PRIORITY_ERR,
    PRIORITY_NOTICE,
)
from nvme_agent.outputs.times import timestamp
from nvme_agent.policy import decide
from nvme_agent.policy.plan import ActionResult, Plan, Status
from nvme_agent.service.answers import Answer, Reason, failure
from nvme_agent.service.control import Progress, no_progress
from nvme_agent.service.eject import (
    EjectTarget,
    SignalTap,
    eject_answer,
    eject_plans,
    find_namespace,
    holders_progress,
    plan_progress,
    unmounts_of,
)
from nvme_agent.service.reconcile import (
    CalledOff,
    Drift,
    Target,
    drift,
    drifted_namespaces,
    reconcile_plans,
)
from nvme_agent.service.recovery import DiskKey
from nvme_agent.service.reload import LoadOutcome
from nvme_agent.service.status import counts, mounts_by_source, topology_status
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot

if TYPE_CHECKING:
    from nvme_agent.service.daemon import Daemon

log = logging.getLogger("nvme_agent.service.daemon")
ACTIONS_LOG = logging.getLogger("nvme_agent.actions")


class Operations:
    """The control commands' side of the daemon (one per daemon)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        #: Present targets whose add plan the policy in force would change (last assessed).
        self._pending: set[Target] = set()
        self._assessment: asyncio.Task[None] | None = None
        #: Set to call off the running assessment's worker thread (see :meth:`_call_off`).
        self._assessment_off = threading.Event()
        #: What the assessment of the policy in force found.  Pending until one finishes (one
        #: called off is made again when the reload that called it off fails); None once a
        #: newer policy, or the stop, made it moot.  None before the first reload.
        self._verdict: asyncio.Future[list[Drift] | None] | None = None

    # ------------------------------------------------------------------ plain requests
    @property
    def events_socket(self) -> str:
        return self.d.config.events_socket

    def admin_group(self) -> str | None:
        return self.d.policy.defaults.admin_group

    def status_line(self) -> str:
        return self.d.status_line()

    async def history_records(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` history records (all with 0), read off the loop."""
        records = await asyncio.to_thread(lambda: list(self.d.keeper.history.read()))
        return records[-limit:] if limit > 0 else records

    async def settle(self, timeout: float) -> bool:
        """Like ``udevadm settle``: True once every submitted plan has finished (and what
        their results changed is on disk).

        The udev events already delivered are taken in first: the control socket and the
        udev socket may be readable in the same loop iteration, and an event udev finished
        before the request (``nvme attach-ns; udevadm settle; nvme-agent status --settle``)
        must not be left for after the answer."""
        self.d.take_pending()
        runner = self.d.runner
        settled = runner is None or await runner.drain(timeout)
        self.d.persist()
        return settled

    async def status(self) -> Answer:
        """The topology by subsystem with mountpoints, each target's rule and whether it is
        applied, the counters and a summary; built in a worker thread."""
        d = self.d
        snap, policy = d.topology.snapshot(), d.policy
        applied, ejected = d.applied.copy(), d.books.ejected_keys()
        mounts = mounts_by_source((e.source, e.target) for e in d.ledger.entries() if e.mounted)

        def build() -> dict[str, Any]:
            def is_ejected(ns: Namespace) -> bool:
                return DiskKey.of(ns) in ejected

            from nvme_agent.service.reconcile import assess

            found = assess(snap, policy, applied, is_ejected)
            return topology_status(snap, mounts, assessments=found, is_ejected=is_ejected)

        view = await asyncio.to_thread(build)
        d.update_gauges()
        return view | {
            "time": timestamp(),
            "policy": str(d.config.policy_path),
            "policy_generation": d.generation,
            "dry_run": d.config.dry_run,
            "counters": d.metrics.summary(),
            "status": d.status_line(),
            "counts": counts(view),
        }

    # ------------------------------------------------------------------ reload
    async def reload(self, assess: bool = False) -> Answer:
        """Re-read the policy (coalesced with reloads already under way); with ``assess``,
        also say which present namespaces the new policy would treat differently."""
        answer = await self.d.reloader.request()
        verdict = self._verdict
        if not (assess and answer.get("ok")) or answer.get("generation") != self.d.generation:
            return answer  # (a newer policy came in meanwhile: its reload says what it changes)
        assert verdict is not None  # made with the generation
        found = await asyncio.shield(verdict)
        if found is None:
            return answer
        nsids = drifted_namespaces(found)
        key = "reconciled" if self.d.policy.defaults.reconcile_on_reload else "pending"
        return answer | {key: nsids}

    def apply_reload(self, outcome: LoadOutcome) -> Answer:
        """Swap a parsed policy in (on the loop), or report why not; the old one stays."""
        d = self.d
        path = d.config.policy_path
        if outcome.policy is None:
            errors = list(outcome.errors)
            d.metrics.count("reloads", "failed")
            d.tlog.event(
                f"policy reload failed, keeping generation {d.generation}: " + "; ".join(errors),
                MSG_POLICY_RELOAD_FAILED,
                PRIORITY_ERR,
                {"NVME_POLICY": str(path)},
            )
            d.events.publish({"type": "reload-failed", "nsid": None, "errors": errors})
            if self._verdict is not None and not self._verdict.done():
                self._assess_soon()  # called off when this parse began; the policy stays
            d.metrics_changed()
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            error = f"policy {path} not reloaded: {errors[0] if errors else '?'}{more}"
            return failure(outcome.reason, error, errors=errors, generation=d.generation)
        d.policy = outcome.policy
        d.generation += 1
        d.metrics.count("reloads", "ok")
        d.tlog.event(
            f"policy {path} loaded (generation {d.generation})",
            MSG_POLICY_RELOADED,
            fields={"NVME_POLICY": str(path)},
        )
        for warning in d.policy.warnings:
            log.warning("policy: %s", warning)
        d.events.publish({"type": "reloaded", "nsid": None, "generation": d.generation})
        d.persist()  # the generation
        self._moot()
        self._verdict = d.loop.create_future()
        self._assess_soon()
        d.metrics_changed()
        return {"ok": True, "generation": d.generation}

    def _assess_soon(self) -> None:
        """Assess the policy in force (for :attr:`_verdict`) in a worker thread."""
        self._call_off()
        off = self._assessment_off = threading.Event()
        assert self._verdict is not None
        task = self._after_reload(self.d.generation, off, self._verdict)
        self._assessment = self.d.loop.create_task(task)

    def _moot(self) -> None:
        """Nobody needs the verdict on the policy in force any more: those who wait get None."""
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(None)

    def _call_off(self) -> None:
        """Stop the running assessment, its worker thread included.

        Cancelling the task alone would leave the thread deciding to the end (up to a second
        of CPU with a thousand namespaces and rules, holding the GIL against the loop and
        against the next parse) for an answer nobody takes.  A thread that has just finished
        has its answer dropped all the same: a failed reload then assesses once more.
        """
        self._assessment_off.set()
        if self._assessment is not None:
            self._assessment.cancel()

    def reload_starting(self) -> None:
        """A parse begins: the assessment of the policy in force is called off.  A reload
        that succeeds makes its answer moot; one that fails assesses that policy again."""
        self._call_off()

    async def _after_reload(
        self,
        generation: int,
        off: threading.Event,
        verdict: asyncio.Future[list[Drift] | None],
    ) -> None:
        """Which present targets the new policy would treat differently: logged, counted,
        and applied at once with ``reconcile_on_reload``; the ``verdict`` says it."""
        d = self.d
        try:
            found = self._valid(await self._drift(off))
        except CalledOff:  # in case: calling off cancels this task too, which ends it first
            return
        except Exception as exc:  # nobody awaits this task: the verdict carries it
            log.exception("assessing policy generation %d failed", generation)
            if not verdict.done():
                verdict.set_exception(exc)
            return
        if verdict is not self._verdict or verdict.done():
            return  # in case: a newer policy calls this assessment off first
        self._pending = {t for item in found if (t := Target.of(item.change)) is not None}
        nsids = drifted_namespaces(found)
        if found and d.policy.defaults.reconcile_on_reload:
            self._log_reconcile(f"reconciling {_count(nsids)} (reconcile_on_reload)", nsids)
            self._run(found)
        elif found:
            self._log_reconcile(
                f"policy generation {generation} would treat {_count(nsids)} present "
                "differently; `nvme-agent reconcile` applies it",
                nsids,
            )
        d.events.publish(
            {"type": "reconcile-pending", "nsid": None, "generation": generation, "nsids": nsids}
        )
        d.metrics_changed()
        verdict.set_result(found)

    def _log_reconcile(self, message: str, nsids: list[int]) -> None:
        shown = ", ".join(str(n) for n in nsids[:20]) + (" ..." if len(nsids) > 20 else "")
        self.d.tlog.event(
            f"{message}: nsid {shown}",
            MSG_RECONCILE,
            PRIORITY_NOTICE,
            {"NVME_POLICY": str(self.d.config.policy_path)},
        )

    async def _drift(self, off: threading.Event | None = None) -> list[Drift]:
        """:func:`drift` in a worker thread; called off once ``off`` is set (never without)."""
        d = self.d
        snap, policy = d.topology.snapshot(), d.policy
        applied, ejected = d.applied.copy(), d.books.ejected_keys()
        off = off if off is not None else threading.Event()
        return await asyncio.to_thread(
            drift, snap, policy, applied, lambda ns: DiskKey.of(ns) in ejected, off.is_set
        )

    def _valid(self, found: list[Drift]) -> list[Drift]:
        """``found`` (computed off the loop) as the daemon is now: targets still present as
        the same disk and still applied under an older policy, decided anew on the current
        snapshot."""
        d = self.d
        snap, policy = d.topology.snapshot(), d.policy
        out: list[Drift] = []
        for item in found:
            change = _current(item.change, snap)
            if change is None or change.namespace is None or d.books.is_ejected(change.namespace):
                continue
            target = Target.of(change)
            if target is None:
                continue
            record = d.applied.get(target)
            if (
                record is None
                or record.policy is policy
                or record.policy is not item.applied.policy
            ):
                continue
            now = decide(change, snap, policy)
            if now.actions != item.applied.actions:
                out.append(Drift(change, now, item.applied))
        return out

    def noted(self, plan: Plan) -> None:
        """Keep the pending targets current as plans are submitted."""
        change = plan.change
        target = Target.of(change)
        if target is None or not self._pending:
            return
        if change.type in ADD_KINDS or change.type is ChangeType.NAMESPACE_CHANGED:
            self._pending.discard(target)
        elif change.type in REMOVE_KINDS:
            self._pending = {t for t in self._pending if t.disk != target.disk}

    def pending_count(self) -> int:
        """Namespaces (not targets) the policy in force would treat differently."""
        return len({t.disk for t in self._pending})

    def cancel(self) -> None:
        """The daemon stops: the running assessment is called off, its thread ended, and
        whoever waits for it answered."""
        self._call_off()
        self._moot()

    # ------------------------------------------------------------------ reconcile
    async def reconcile(
        self, target: EjectTarget | None, dry_run: bool, timeout: float, progress: Progress
    ) -> Answer:
        """Apply the policy in force to the present namespaces (or the one ``target``
        names) that an older policy handled differently; ``dry_run``: only say what."""
        d = self.d
        only = find_namespace(d.topology.snapshot(), target) if target is not None else None
        found = self._valid(await self._drift())
        if only is not None:
            found = [
                i
                for i in found
                if i.change.namespace is not None
                and DiskKey.of(i.change.namespace) == DiskKey.of(only)
            ]
        items = [_describe(i) for i in found]
        facts = {"generation": d.generation, "dry_run": dry_run, "targets": items}
        if dry_run or not found:
            return {"ok": True, **facts, "results": []}
        plans = self._run(found)
        progress({"stage": "plan", "nsid": None, "targets": items})
        results = await self._wait(plans, timeout, progress)
        if results is None:
            return failure(
                Reason.TIMEOUT, f"reconcile did not finish within {timeout:.0f}s", **facts
            )
        bad = [r for r in results if r.status in (Status.FAILED, Status.CANCELLED)]
        answer = {**facts, "results": [r.to_dict() for r in results]}
        if bad:
            error = "; ".join(f"{r.action} (nsid {r.nsid}): {r.error or r.message}" for r in bad)
            return failure(Reason.FAILED, error, **answer)
        return {"ok": True, **answer}

    def _run(self, found: list[Drift]) -> list[Plan]:
        d = self.d
        snap = d.topology.snapshot()
        plans = [p for item in found for p in reconcile_plans(item, snap, d.policy)]
        for plan in plans:
            d.submit(plan)
        d.commit()
        return plans

    async def _wait(
        self, plans: list[Plan], timeout: float, progress: Progress
    ) -> list[ActionResult] | None:
        """The results of ``plans`` (submitted already), or None after ``timeout``."""
        waiter = self.d.waiters.expect(plans)
        if progress is not no_progress:
            waiter.listener = lambda r: progress({"stage": "result", **r.to_dict()})
            for r in waiter.results:  # arrived before the listener was set
                progress({"stage": "result", **r.to_dict()})
        try:
            if not await waiter.wait(timeout):
                return None
        finally:
            self.d.waiters.discard(waiter)
        return list(waiter.results)

    # ------------------------------------------------------------------ eject
    async def eject(self, target: EjectTarget, timeout: float, progress: Progress) -> Answer:
        """Run a present namespace's remove plan gracefully; report whether it is safe."""
        d = self.d
        snap = d.topology.snapshot()
        ns = find_namespace(snap, target)
        plans = eject_plans(ns, snap, d.policy)
        mounts = unmounts_of(plans, d.ledger.entries())
        tap: SignalTap | None = None
        if progress is not no_progress:
            progress(plan_progress(ns, plans))
            for line in await asyncio.to_thread(holders_progress, mounts):
                progress(line)
            tap = SignalTap(d.loop, [e.target for e in mounts], progress)
            ACTIONS_LOG.addHandler(tap)
        waiter = d.waiters.expect(plans)
        if progress is not no_progress:
            waiter.listener = lambda r: progress({"stage": "result", **r.to_dict()})
        try:
            for plan in plans:
                d.submit(plan)
            d.commit()
            if not await waiter.wait(timeout):
                error = f"eject plan did not finish within {timeout:.0f}s"
                return failure(Reason.TIMEOUT, error, nsid=ns.nsid)
        finally:
            d.waiters.discard(waiter)
            if tap is not None:
                ACTIONS_LOG.removeHandler(tap)
        answer = eject_answer(ns, waiter.results)
        if answer["ok"]:
            d.books.ejected(ns)
            d.tlog.event(
                f"nsid {ns.nsid} ({ns.devnode}) ejected: safe to remove",
                MSG_EJECTED,
                fields={"NVME_NSID": str(ns.nsid), "DEVNAME": ns.devnode or ""},
            )
            d.events.publish({"type": "ejected", "nsid": ns.nsid, "device": ns.devnode})
            d.persist()
        return answer


def _count(nsids: list[int]) -> str:
    return f"{len(nsids)} namespace{'' if len(nsids) == 1 else 's'}"


def _current(change: Change, snap: TopologySnapshot) -> Change | None:
    """``change`` (an add) for the same disk as ``snap`` shows it now, or None if gone."""
    old = change.namespace
    if old is None:
        return None
    ns = snap.namespace(old.nsid, old.subsysnqn)
    if ns is None or DiskKey.of(ns) != DiskKey.of(old):
        return None
    if change.partition is None:
        return dataclasses.replace(change, namespace=ns)
    part = next((p for p in ns.partitions if p.name == change.partition.name), None)
    if part is None:
        return None
    return dataclasses.replace(change, namespace=ns, partition=part)


def _describe(item: Drift) -> dict[str, Any]:
    from nvme_agent.actions.runner import describe

    change = item.change
    return {
        "nsid": change.nsid,
        "device": change.devnode,
        "partition": change.partition.name if change.partition is not None else None,
        "rule": item.plan.rule,
        "applied_rule": item.applied.rule,
        "actions": [describe(a) for a in item.plan.actions],
    }
