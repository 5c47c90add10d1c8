"""The action runner: executes plans on a bounded thread pool, in order per namespace.

Rules:

* The actions of one plan run in order.  Plans with the same :attr:`Plan.key` run strictly in
  submission order; plans with different keys run concurrently on at most ``max_workers``
  threads (actions are blocking subprocess calls, so threads are the right tool).
* A removal plan (change type ``*-removed``) cancels every plan of its key that has not
  started yet (except other removals): each of their actions is reported ``cancelled``.  If a
  plan of that key is running, its current action finishes, its remaining actions are
  cancelled, and the removal runs right after it.
* If an action fails, the rest of the plan is reported ``skipped`` with the cause, except an
  ``unmount`` in a removal plan, which still runs (a dead mount must not linger).
* Every action has a timeout (its spec's ``timeout``; 10 s for ``signal``).
* ``on_result`` is called exactly once per action, from a worker thread (from the caller's
  thread for actions cancelled in :meth:`ActionRunner.submit` or :meth:`ActionRunner.close`).
  It must be thread-safe and quick: an asyncio daemon should hand the result over with
  ``loop.call_soon_threadsafe``.
* Every outcome is logged on ``nvme_agent.actions`` with journal fields ``MESSAGE_ID`` (see
  :mod:`nvme_agent.actions.messages`), ``NVME_ACTION``, ``NVME_STATUS``, ``NVME_NSID``,
  ``DEVNAME``, ...  The action modules compose their messages from raw values (device paths,
  labels, process names, tool output); they are escaped once, here, where they become log
  lines and results (:func:`~nvme_agent.topology.text.escape`): no newline, control character
  or leading ``<N>`` reaches the journal, the event stream or a terminal.
* ``dry_run``: nothing is executed; every action is logged and reported ``dry-run``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nvme_agent.actions import messages
from nvme_agent.actions.grow import run_grow
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.hooks import KILL_GRACE, run_exec
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.signals import run_signal
from nvme_agent.actions.units import run_systemctl
from nvme_agent.actions.unmount import do_unmount
from nvme_agent.policy.plan import (
    ActionResult,
    ActionSpec,
    ExecSpec,
    GrowSpec,
    MountSpec,
    Plan,
    SignalSpec,
    Status,
    SystemdSpec,
    UnmountSpec,
)
from nvme_agent.topology.changes import REMOVE_KINDS
from nvme_agent.topology.text import escape

log = logging.getLogger("nvme_agent.actions")

SIGNAL_TIMEOUT = 10.0

_MESSAGE_IDS = {
    Status.OK: messages.ACTION_OK,
    Status.FAILED: messages.ACTION_FAILED,
    Status.SKIPPED: messages.ACTION_SKIPPED,
    Status.CANCELLED: messages.ACTION_SKIPPED,
    Status.DRY_RUN: messages.DRY_RUN,
}
_LEVELS = {
    Status.OK: logging.INFO,
    Status.FAILED: logging.ERROR,
    Status.SKIPPED: logging.WARNING,
    Status.CANCELLED: logging.WARNING,
    Status.DRY_RUN: logging.INFO,
}


def is_removal(plan: Plan) -> bool:
    """True for plans reacting to a removal (namespace, partition or controller)."""
    return plan.change.type in REMOVE_KINDS


def describe(spec: ActionSpec) -> str:
    """One line saying what an action would do (dry-run and log text)."""
    if isinstance(spec, MountSpec):
        opts = ",".join(spec.options) + (",ro" if spec.read_only else "")
        return (
            f"mount {spec.source} at {spec.target} (type {spec.fstype or 'auto'}, -o {opts}"
            f"{', fsck first' if spec.fsck else ''})"
        )
    if isinstance(spec, UnmountSpec):
        where = f" at {spec.target}" if spec.target else ""
        if spec.device_gone:
            return f"lazily detach {spec.source}{where} (device gone)"
        return (
            f"unmount {spec.source}{where} (on busy: {spec.on_busy}"
            f"{' ' + spec.signal if spec.on_busy == 'signal' else ''}, timeout {spec.timeout:g}s)"
        )
    if isinstance(spec, ExecSpec):
        return f"run {shlex.join(spec.argv)}" + (f" as {spec.user}" if spec.user else "")
    if isinstance(spec, SystemdSpec):
        return f"systemctl {spec.verb} {spec.unit}"
    if isinstance(spec, SignalSpec):
        whom = spec.pidfile or spec.process or (f"unit {spec.unit}" if spec.unit else "?")
        return f"send {spec.signal} to {whom}"
    return f"grow {spec.fstype} on {spec.source}"


@dataclass(slots=True)
class _Job:
    plan: Plan
    cancel_reason: str | None = None


class ActionRunner:
    """Runs plans; see the module docstring for ordering, cancellation and reporting rules."""

    def __init__(
        self,
        *,
        max_workers: int = 4,
        dry_run: bool = False,
        ledger: MountLedger,
        on_result: Callable[[ActionResult], None],
        guard: Guard | None = None,
        kill_grace: float = KILL_GRACE,
        strict_hooks: bool = True,
    ) -> None:
        """``strict_hooks=False`` runs hook programs that fail the ownership checks
        (for tests that cannot make root-owned programs; never in production)."""
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.dry_run = dry_run
        self.ledger = ledger
        self.guard = guard if guard is not None else Guard()
        self.kill_grace = kill_grace
        self.strict_hooks = strict_hooks
        self._on_result = on_result
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[str, deque[_Job]] = {}
        self._running: dict[str, _Job] = {}
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="nvme-action")

    # -- public API ------------------------------------------------------------------------

    def submit(self, plan: Plan) -> None:
        """Queue a plan; returns at once (safe to call from the asyncio thread)."""
        cancelled: list[_Job] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("ActionRunner is closed")
            queue = self._queues.get(plan.key)
            schedule = queue is None
            if queue is None:
                queue = self._queues[plan.key] = deque()
            if is_removal(plan):
                reason = f"cancelled: {plan.change.type.value} arrived first"
                for job in list(queue):
                    if not is_removal(job.plan):
                        queue.remove(job)
                        job.cancel_reason = reason
                        cancelled.append(job)
                running = self._running.get(plan.key)
                if running is not None and not is_removal(running.plan):
                    running.cancel_reason = reason
            queue.append(_Job(plan))
        for job in cancelled:
            for index, spec in enumerate(job.plan.actions):
                self._report(job.plan, index, spec, self._cancelled(job), 0.0)
        if schedule:
            self._pool.submit(self._run_next, plan.key)

    def pending(self, key: str) -> int:
        """Plans of ``key`` queued or running."""
        with self._lock:
            return len(self._queues.get(key, ())) + (1 if key in self._running else 0)

    def busy(self) -> int:
        """How many plan keys have a plan queued or running."""
        with self._lock:
            return len(self._queues)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no plan is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queues, timeout=timeout)

    async def drain(self, timeout: float) -> bool:
        """Await until every submitted plan has finished (without blocking the loop)."""
        return await asyncio.to_thread(self.wait_idle, timeout)

    def close(self, *, cancel_pending: bool = True, timeout: float = 0.0) -> bool:
        """Stop accepting plans; cancel the queued ones (by default); wait up to ``timeout``.

        With the default ``timeout=0`` it does not block: await :meth:`drain` first to let
        running plans finish (their threads finish their current action in any case, each
        bounded by its timeout).  Returns True if nothing is left running.
        """
        cancelled: list[_Job] = []
        with self._lock:
            self._closed = True
            if cancel_pending:
                for queue in self._queues.values():
                    while queue:
                        job = queue.pop()
                        job.cancel_reason = "cancelled: the agent is shutting down"
                        cancelled.append(job)
        for job in reversed(cancelled):
            for index, spec in enumerate(job.plan.actions):
                self._report(job.plan, index, spec, self._cancelled(job), 0.0)
        done = self.wait_idle(timeout)
        self._pool.shutdown(wait=done)
        return done

    # -- workers ---------------------------------------------------------------------------

    def _run_next(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(key)
                if not queue:
                    self._queues.pop(key, None)
                    self._idle.notify_all()
                    return
                job = queue.popleft()
                self._running[key] = job
            try:
                self._execute(job)
            except Exception:  # a bug must not wedge the key
                log.exception("action runner crashed on plan %s", key)
            finally:
                with self._lock:
                    del self._running[key]
                    queue = self._queues.get(key)
                    again = bool(queue)
                    if not again:
                        self._queues.pop(key, None)
                        self._idle.notify_all()
            if not again:
                return
            try:
                # Resubmit rather than loop so that other keys get a turn on the pool.
                self._pool.submit(self._run_next, key)
                return
            except RuntimeError:  # pool shut down by close(): finish the key here
                continue

    def _cancelled(self, job: _Job) -> Outcome:
        return Outcome(Status.CANCELLED, job.cancel_reason or "cancelled")

    def _execute(self, job: _Job) -> None:
        plan = job.plan
        removal = is_removal(plan)
        cause: str | None = None
        for index, spec in enumerate(plan.actions):
            if job.cancel_reason is not None:
                self._report(plan, index, spec, self._cancelled(job), 0.0)
                continue
            if cause is not None and not (removal and isinstance(spec, UnmountSpec)):
                self._report(plan, index, spec, Outcome.skipped(f"skipped: {cause}"), 0.0)
                continue
            start = time.monotonic()
            outcome = self._run_action(plan, spec)
            self._report(plan, index, spec, outcome, time.monotonic() - start)
            if outcome.status is Status.FAILED and cause is None:
                cause = f"{spec.kind} (action {index + 1}) failed: {outcome.error}"

    def _run_action(self, plan: Plan, spec: ActionSpec) -> Outcome:
        text = describe(spec)
        if self.dry_run:
            return Outcome(Status.DRY_RUN, f"would {text}", message_id=messages.DRY_RUN)
        log.debug("plan %s: %s", escape(plan.key), escape(text))
        try:
            if isinstance(spec, MountSpec):
                return do_mount(
                    spec, ledger=self.ledger, guard=self.guard, deadline=Deadline(spec.timeout)
                )
            if isinstance(spec, UnmountSpec):
                return do_unmount(
                    spec, ledger=self.ledger, guard=self.guard, deadline=Deadline(spec.timeout)
                )
            if isinstance(spec, ExecSpec):
                return run_exec(
                    spec,
                    plan.env,
                    Deadline(spec.timeout),
                    kill_grace=self.kill_grace,
                    strict=self.strict_hooks,
                )
            if isinstance(spec, SystemdSpec):
                return run_systemctl(spec, Deadline(spec.timeout))
            if isinstance(spec, SignalSpec):
                return run_signal(spec, Deadline(SIGNAL_TIMEOUT))
            if isinstance(spec, GrowSpec):
                return run_grow(spec, Deadline(spec.timeout))
            return Outcome.failed(f"unknown action {spec!r}")
        except ActionError as exc:
            return Outcome.failed(f"{text}: refused or failed", str(exc))
        except OSError as exc:
            return Outcome.failed(f"{text}: failed", f"{exc.strerror or exc} ({exc.filename})")
        except Exception as exc:
            log.exception("unexpected error in %s", escape(text))
            return Outcome.failed(f"{text}: internal error", repr(exc))

    def _report(
        self, plan: Plan, index: int, spec: ActionSpec, outcome: Outcome, duration: float
    ) -> None:
        message = escape(outcome.message)
        error = None if outcome.error is None else escape(outcome.error)
        result = ActionResult(
            plan_key=plan.key,
            action=spec.kind,
            status=outcome.status,
            nsid=plan.change.nsid,
            ctrl=plan.change.ctrl,
            rule=plan.rule,
            change=plan.change.type.value,
            message=message,
            error=error,
            duration=duration,
            details=(("index", str(index)), *outcome.details),
        )
        message_id = outcome.message_id or _MESSAGE_IDS[outcome.status]
        level = logging.WARNING if message_id == messages.LAZY_DETACH else _LEVELS[outcome.status]
        text = f"{spec.kind} {outcome.status.value}: {message}"
        if error and error not in message:
            text += f": {error}"
        log.log(
            level,
            "%s [nsid=%s key=%s rule=%s]",
            text,
            plan.change.nsid,
            escape(plan.key),
            escape(plan.rule),
            extra={
                "MESSAGE_ID": message_id,
                "NVME_ACTION": spec.kind,
                "NVME_STATUS": outcome.status.value,
                "NVME_PLAN_KEY": plan.key,
                "NVME_NSID": "" if plan.change.nsid is None else str(plan.change.nsid),
                "NVME_CTRL": plan.change.ctrl or "",
                "DEVNAME": plan.change.devnode or "",
                "NVME_RULE": plan.rule or "",
                "NVME_CHANGE": plan.change.type.value,
                "NVME_ERROR": outcome.error or "",
            },
        )
        try:
            self._on_result(result)
        except Exception:
            log.exception("on_result callback failed for %s", spec.kind)
