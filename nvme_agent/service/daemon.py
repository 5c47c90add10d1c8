"""The daemon: life and wiring.

Data flows one way: udev record -> :class:`Topology` change -> ``decide`` (pure) -> plan ->
:class:`ActionRunner` -> results -> journal, history and event stream.  The jobs around that
flow live in modules of their own, which the daemon only wires together:

* :mod:`~nvme_agent.service.recovery`: handled/ejected/outstanding bookkeeping, the restart
  diff (pure); :mod:`~nvme_agent.service.persist`: the state on disk, a checkpoint plus a
  log of what changed (pure); :mod:`~nvme_agent.service.keeper`: the state and the history
  written in the order that survives a kill;
* :mod:`~nvme_agent.service.reload`: policy parsing in a worker thread, swapped in on the
  loop, so udev events, control answers and watchdog pings go on meanwhile;
* :mod:`~nvme_agent.service.reconcile`: which present namespaces a new policy would treat
  differently, and the plans that apply it (pure);
* :mod:`~nvme_agent.service.deadmounts`: mounts whose device went away without a plan that
  unmounts them (pure);
* :mod:`~nvme_agent.service.operations`: what the control commands ask of the daemon, with
  :mod:`~nvme_agent.service.requests` (the command table with rights),
  :mod:`~nvme_agent.service.eject` and :mod:`~nvme_agent.service.status`.

Plans are fully rendered when decided, so actions already running finish under the policy
they started with.  The plans of one batch are decided first, then what changed is
persisted, then the actions start: the state is on disk before any action of a batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.heap import paused_collector, release_free_memory, settle_after_start
from nvme_agent.outputs.events import EventStream
from nvme_agent.outputs.journal import (
    MSG_DAEMON_READY,
    MSG_DEAD_MOUNT,
    MSG_EVENTS_OVERRUN,
    MSG_PLAN_REFUSED,
    MSG_RECOVERY,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    LogTarget,
    TopologyLog,
    change_fields,
)
from nvme_agent.outputs.metrics import Metrics
from nvme_agent.outputs.notify import Notifier
from nvme_agent.outputs.state import (
    FailureLog,
    History,
    StateFile,
    write_text_atomic,
)
from nvme_agent.outputs.times import timestamp
from nvme_agent.policy import REFUSED, Policy, PolicyError, decide, load_policy, load_policy_text
from nvme_agent.policy.plan import ActionResult, Plan
from nvme_agent.service.access import GROUP
from nvme_agent.service.control import ControlServer
from nvme_agent.service.deadmounts import (
    detach_plan,
    device_changed,
    left_behind,
    lost_with_path,
    remount_changes,
)
from nvme_agent.service.eject import ResultWaiters
from nvme_agent.service.keeper import Keeper
from nvme_agent.service.operations import Operations
from nvme_agent.service.pacing import AtMostEvery, OncePerIteration
from nvme_agent.service.reconcile import AppliedPlans
from nvme_agent.service.recovery import (
    Bookkeeping,
    orphan_mounts,
    unmount_plan,
)
from nvme_agent.service.reload import Loader, Reloader, read_policy
from nvme_agent.service.requests import Dispatcher
from nvme_agent.topology.changes import REMOVE_KINDS, Change, ChangeType
from nvme_agent.topology.intake import Overrun, UdevIntake
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.text import escape
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

#: Built-in policy when the configured file does not exist: log and stream, act on nothing.
FALLBACK_POLICY = "version: 1\nrules: []\n"
#: The metrics file is rewritten at most this often (seconds), and only after a change.
METRICS_INTERVAL = 1.0
#: ``STATUS=`` is sent at most this often (seconds), and only after a change.
STATUS_INTERVAL = 0.25


@dataclass
class DaemonConfig:
    """Where the daemon reads and writes, and how it acts."""

    policy_path: Path
    runtime_dir: Path
    state_dir: Path
    dry_run: bool = False
    log_target: LogTarget = "auto"
    max_workers: int = 4
    drain_timeout: float = 30.0
    ready_timeout: float = 60.0
    #: A reload whose parse takes longer fails with ``timeout`` (the old policy stays).
    reload_timeout: float = 10.0
    #: The group of the sockets, whose members have the read right.
    group: str | None = GROUP
    #: A Prometheus textfile (node_exporter's textfile collector) to keep current, or None.
    metrics_file: Path | None = None
    #: The daemon is the process (``nvme-agent run``): once started it may settle the
    #: process's heap (:func:`~nvme_agent.heap.settle_after_start`: a collection, then
    #: ``gc.freeze``), which a caller that embeds it must decide for itself.
    owns_process: bool = False

    @property
    def events_socket(self) -> str:
        return str(self.runtime_dir / "events.sock")

    @property
    def control_socket(self) -> str:
        return str(self.runtime_dir / "control.sock")

    @property
    def state_file(self) -> Path:
        return self.runtime_dir / "topology.json"

    @property
    def state_log(self) -> Path:
        return self.runtime_dir / "topology.log"

    @property
    def history_file(self) -> Path:
        return self.state_dir / "history.jsonl"


class StartupError(Exception):
    """The daemon cannot start; ``lines`` say why (one screen at most)."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        super().__init__("\n".join([message, *lines]))
        self.lines = tuple(lines)


class Daemon:
    """The running agent.  Create, then ``await run()``; stop with SIGTERM or :meth:`stop`."""

    def __init__(
        self,
        config: DaemonConfig,
        intake: UdevIntake | None = None,
        load: Loader = load_policy,
    ) -> None:
        self.config = config
        self.topology = Topology()
        self.tlog = TopologyLog(config.log_target)
        self.notifier = Notifier()
        self.keeper = Keeper(
            StateFile(config.state_file, config.state_log), History(config.history_file)
        )
        #: Plans decided in this batch, submitted to the runner once the state is on disk.
        self._batch: list[Plan] = []
        self.books = Bookkeeping()
        self.applied = AppliedPlans()
        self.metrics = Metrics(time.time())
        self.policy: Policy = self._initial_policy(load)
        self.generation = 1
        self._intake = intake
        self.ledger = MountLedger.in_state_dir(str(config.state_dir))
        self.runner: ActionRunner | None = None
        self.events = EventStream(config.events_socket, group=config.group)
        self.ops = Operations(self)
        self.dispatcher = Dispatcher(self.ops, config.group, refuse=self._refused)
        self.control = ControlServer(config.control_socket, self.dispatcher, config.group)
        self.reloader = Reloader(
            config.policy_path,
            load,
            config.reload_timeout,
            reloading=self._reload_starting,
            apply=self.ops.apply_reload,
            ready=self._notify_reloaded,
        )
        self.waiters = ResultWaiters()
        self._stop = asyncio.Event()
        #: Set once the shutdown is complete: the watchdog pings go on until then.
        self._stopped = False
        self._ready = False
        self._status_sent = ""
        self._state_changed = OncePerIteration(self.persist)
        # STATUS= only when it differs, and at most every STATUS_INTERVAL seconds.
        self._status_changed = AtMostEvery(self._flush_status, STATUS_INTERVAL)
        self._metrics_due: asyncio.TimerHandle | None = None
        self._metrics_failures = FailureLog(f"writing metrics file {config.metrics_file}")
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def events_socket(self) -> str:
        return self.config.events_socket

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the daemon is not running"
        return self._loop

    # ------------------------------------------------------------------ life
    async def run(self, handle_signals: bool = True) -> int:
        """Serve until stopped; returns the exit status."""
        self._loop = asyncio.get_running_loop()
        self._state_changed.loop = self._status_changed.loop = self._loop
        self.config.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.runner = ActionRunner(
            max_workers=self.config.max_workers,
            dry_run=self.config.dry_run,
            ledger=self.ledger,
            on_result=self._result_from_thread,
        )
        await self.events.start()
        await self.control.start()
        intake = self._intake if self._intake is not None else UdevIntake()
        self._intake = intake
        with paused_collector():  # the topology it builds lives; nothing to collect meanwhile
            self._coldplug(intake.start())
        # READY=1 means "what was present at start is handled": units ordered after us see the
        # mounts.  Udev events meanwhile wait in the (enlarged) netlink buffer.
        if not await self.runner.drain(self.config.ready_timeout):
            log.warning(
                "coldplug actions still running after %.0fs; reporting ready anyway",
                self.config.ready_timeout,
            )
        self._loop.add_reader(intake.fileno(), self._on_readable)
        if handle_signals:
            for signum, handler in (
                (signal.SIGTERM, self.stop),
                (signal.SIGINT, self.stop),
                (signal.SIGHUP, self.reloader.request),
            ):
                self._loop.add_signal_handler(signum, handler)
        self._start_watchdog()
        self.tlog.event(
            f"nvme-agent ready: {self.status_line()}"
            + (" (dry run: nothing is executed)" if self.config.dry_run else ""),
            MSG_DAEMON_READY,
        )
        self.events.publish({"type": "ready", "nsid": None, "status": self.status_line()})
        self._ready = True
        self._write_metrics()  # before READY=1: a scraper started after us finds the file
        self.notifier.ready(self.status_line())
        # Housekeeping, not readiness (units ordered after us need not wait for it): what
        # coldplug built and dropped is not kept for the daemon's life.
        if self.config.owns_process:
            settle_after_start()
        else:
            release_free_memory()
        await self._stop.wait()
        return await self._shutdown()

    def stop(self) -> None:
        """Ask the daemon to stop (signal-safe inside the loop)."""
        self._stop.set()

    async def _shutdown(self) -> int:
        self.notifier.stopping()
        self.reloader.cancel()
        self.ops.cancel()
        assert self._loop is not None and self._intake is not None
        self._loop.remove_reader(self._intake.fileno())
        if self.policy.defaults.unmount_on_stop:
            self._unmount_all("agent stopping (unmount_on_stop)")
        if self.runner is not None:
            await self._drain_for_stop(self.runner)
        self.keeper.checkpoint(self.books, self.topology.snapshot(), self.generation)
        self.keeper.close()
        if self._metrics_due is not None:
            self._metrics_due.cancel()
        self._status_changed.cancel()
        self._write_metrics()
        await self.control.close()
        await self.events.close()
        self._stopped = True
        return 0

    async def _drain_for_stop(self, runner: ActionRunner) -> None:
        """Let running plans finish (the unit's KillMode=mixed leaves their processes alone
        until the daemon exits), saying so: a stop that waits is visible in the journal."""
        busy, timeout = runner.busy(), self.config.drain_timeout
        if busy:
            log.info(
                "stopping: waiting up to %.0fs for the actions of %d plan key%s to finish",
                timeout,
                busy,
                "" if busy == 1 else "s",
            )
        if not await runner.drain(timeout):
            log.warning("stopping with actions still running after %.0fs", timeout)
        elif busy:
            log.info("stopping: every action finished")
        runner.close()

    # ------------------------------------------------------------------ policy
    def _initial_policy(self, load: Loader) -> Policy:
        path = self.config.policy_path
        if not path.exists():
            log.warning("policy %s does not exist: logging changes only", path)
            return load_policy_text(FALLBACK_POLICY, f"{path} (built-in fallback)")
        outcome = read_policy(path, load)
        if outcome.policy is None:  # fatal: there is no old policy to keep
            raise StartupError(f"cannot start with the invalid policy {path}:", outcome.errors)
        return outcome.policy

    def _reload_starting(self) -> None:
        self.ops.reload_starting()
        if self._ready:  # before READY=1 the manager expects no reload protocol
            self.notifier.reloading()

    def _notify_reloaded(self) -> None:
        if self._ready:
            self.notifier.ready(self.status_line())

    # ------------------------------------------------------------------ intake
    def _coldplug(self, records: list[DeviceRecord]) -> None:
        """Build the initial view and reconcile it with the previous run's state."""
        self.metrics.count("udev_events", n=len(records))
        self.topology.apply_all(records)
        current = self.topology.snapshot()
        previous = self.keeper.previous()
        if previous is not None and (late := self.keeper.record_late(previous.history)):
            self.tlog.event(
                f"{late} history record(s) of the last batch before the agent stopped were "
                "missing: recorded now",
                MSG_RECOVERY,
                PRIORITY_NOTICE,
            )
        restored = self.books.restore(previous, current, self.policy.digest)
        if restored.while_down:
            self.tlog.event(
                f"{restored.while_down} topology changes happened while the agent was down",
                MSG_RECOVERY,
                PRIORITY_NOTICE,
            )
        for change in restored.changes:
            self._handle_change(change)
        # What the last run handled under this very policy is not planned again: it stands.
        self.applied.assume(current, self.policy)
        gone = {c.devnode for c in restored.changes if c.type in REMOVE_KINDS and c.devnode}
        for entry in orphan_mounts(self.ledger.entries(), current, gone):
            self._detach_orphan(entry)
        self.commit(checkpoint=True)

    def _detach_orphan(self, entry: LedgerEntry) -> None:
        """Lazily detach a mount we made for a device that no longer exists."""
        self.tlog.event(
            f"{escape(entry.source)} vanished while the agent was down; lazily detaching "
            f"{escape(entry.target)} (unflushed data may have been lost)",
            MSG_RECOVERY,
            PRIORITY_WARNING,
            {"DEVNAME": entry.source, "MOUNTPOINT": entry.target},
        )
        self.submit(unmount_plan(entry, "vanished while down", "orphan", device_gone=True))

    def take_pending(self) -> None:
        """Take in the udev events delivered so far (as if the socket had been readable).

        Only while serving: before READY=1 they wait for the coldplug actions to finish, and
        once stopping they are no longer read."""
        if self._ready and not self._stop.is_set():
            self._on_readable()

    def _on_readable(self) -> None:
        """Take every pending record, decide on the changes, persist what changed, then
        hand the plans to the runner.

        Persisting before any action runs means that whatever an action did, the state
        already knows the namespace it did it for: a kill -9 at any point loses no
        topology, only (at worst) the mark that an add plan finished, and that plan is
        idempotent and simply runs again after the restart.  Plans are decided (and
        streamed) first: deciding acts on nothing.
        """
        assert self._intake is not None
        changes: list[Change] = []
        received = 0
        try:
            for record in self._intake.drain():
                received += 1
                changes.extend(self.topology.apply(record))
        except Overrun:
            self.metrics.count("netlink_overruns")
            self.tlog.event(
                "udev events were lost (netlink overrun): re-enumerating and diffing",
                MSG_EVENTS_OVERRUN,
                PRIORITY_WARNING,
            )
            changes.extend(self.topology.reconcile(self._intake.enumerate()))
        self.metrics.count("udev_events", n=received)
        if changes:
            for change in changes:
                self._handle_change(change)
            self.commit()
            self._status_changed()
        self.metrics_changed()

    # ------------------------------------------------------------------ changes and plans
    def _handle_change(self, change: Change) -> None:
        self.metrics.count("changes", change.type.value)
        summary = change.summary()  # escaping every device string is not cheap: once
        self.tlog.change(change, summary)
        record = change.to_dict()
        record["time"] = timestamp()
        # The history: with the batch's state.  On the stream it goes out with the plan.
        self.events.publish(self.keeper.record(record), more=True)
        if self.books.removal_already_ran(change):
            log.info("nsid %s was ejected before removal: its remove plan already ran", change.nsid)
            return
        try:
            plan = decide(change, self.topology.snapshot(), self.policy)
        except PolicyError as exc:
            self.metrics.count("decide_errors")
            log.error("policy cannot decide on %s: %s", change.summary(), exc)
            return
        if change.type is ChangeType.PATH_LOST:
            self._path_lost(change, plan)
            return
        self.submit(plan, summary)
        self._detach_left_behind(plan)

    def _path_lost(self, change: Change, plan: Plan) -> None:
        """A path went: its hooks; and when it took the device a mount of ours was made
        through, that mount is dead: detach it lazily, then decide the namespace's add plans
        as it is now (see :mod:`~nvme_agent.service.deadmounts`)."""
        dead = lost_with_path(change, self.ledger.entries())
        ns = change.namespace
        if dead:
            device = change.path.devnode if change.path is not None else "?"
            self._log_dead_mounts(
                change, dead, f"{device} went with the path through {change.ctrl or '?'}"
            )
            why = f"mounted device {device} lost with its path"
            self.submit(detach_plan(change, plan.key, dead, why))
        self.submit(plan)
        if not device_changed(change) or ns is None:
            return
        if change.previous is not None and self.books.is_ejected(change.previous):
            self.books.ejected(ns)  # still ejected: the host is detaching it path by path
            return
        snap = self.topology.snapshot()
        for again in remount_changes(change):
            self.submit(decide(again, snap, self.policy))

    def _detach_left_behind(self, plan: Plan) -> None:
        """After a removal: lazily detach our mounts of the removed device that its plan
        (decided by a rule that did not mount them) does not unmount."""
        dead = left_behind(plan, self.ledger.entries())
        if not dead:
            return
        self._log_dead_mounts(plan.change, dead, f"{plan.change.devnode} was removed")
        why = "mount of the removed device left behind by the rule's plan"
        self.submit(detach_plan(plan.change, plan.key, dead, why))

    def _log_dead_mounts(self, change: Change, dead: list[LedgerEntry], what: str) -> None:
        for entry in dead:
            fields = change_fields(change) | {"DEVNAME": entry.source, "MOUNTPOINT": entry.target}
            self.tlog.event(
                f"nsid {change.nsid}: {escape(what)} while mounted at {escape(entry.target)}; "
                "lazily detaching it (unflushed data may have been lost)",
                MSG_DEAD_MOUNT,
                PRIORITY_WARNING,
                fields,
            )

    def submit(self, plan: Plan, summary: str | None = None) -> None:
        """Note, stream and log a plan; its actions start at the next :meth:`commit`.
        ``summary``: the change's, when the caller has it already."""
        self.metrics.count("plans")
        if self.events.listening:
            self.events.publish(plan.to_dict())
        self.books.plan_submitted(plan, self.policy.digest)
        self.applied.noted(plan, self.policy)
        self.ops.noted(plan)
        refused = [line for line in plan.explanation if line.startswith(REFUSED)]
        if refused:
            self._log_refused(plan, refused[0])
        elif plan.rule is not None or plan.actions:
            text = summary if summary is not None else plan.change.summary()
            log.info("%s: rule %s, %d action(s)", text, plan.rule, len(plan.actions))
        if plan.actions:
            self._batch.append(plan)

    def commit(self, *, checkpoint: bool = False) -> None:
        """Persist what changed (the whole state with ``checkpoint``) and the batch's history
        (:mod:`~nvme_agent.service.keeper`), then start the batch's actions: the state is on
        disk before any of them runs."""
        snap = self.topology.snapshot()
        self.keeper.commit(self.books, snap, self.generation, checkpoint=checkpoint)
        plans, self._batch = self._batch, []
        if self.runner is not None:
            for plan in plans:
                self.runner.submit(plan)

    def _log_refused(self, plan: Plan, line: str) -> None:
        """A plan the policy refused (e.g. a filesystem type it does not allow): once, as a
        warning naming the device and the cause."""
        change = plan.change
        self.metrics.count("plans_refused")
        fields = change_fields(change) | {"NVME_RULE": plan.rule or "", "NVME_PLAN_KEY": plan.key}
        self.tlog.event(
            # The journal makes the message one line (topology.text.one_line); the device
            # node is escaped here so that a backslash in it stays unambiguous.
            f"{change.summary()} on {escape(change.devnode or '?')}: nothing done, {line}",
            MSG_PLAN_REFUSED,
            PRIORITY_WARNING,
            fields,
        )

    def _result_from_thread(self, result: ActionResult) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._on_result, result)

    def _on_result(self, result: ActionResult) -> None:
        self.metrics.count("actions", result.action, result.status.value)
        if self.books.result(result):
            self._state_changed()
        if self.events.listening:
            self.events.publish(result.to_dict())
        self.waiters.feed(result)
        self._status_changed()
        self.metrics_changed()

    def _unmount_all(self, reason: str) -> None:
        for entry in self.ledger.entries():
            if entry.mounted:
                self.submit(unmount_plan(entry, reason, "stop", device_gone=False))
        self.commit()

    def _refused(self, kind: str, message: str) -> None:
        self.control.refuse(kind, message)

    # ------------------------------------------------------------------ status and state
    def failures(self) -> int:
        """Actions that failed and changes the policy could not decide on, so far."""
        failed = sum(
            n
            for (_action, status), n in self.metrics.split("actions").items()
            if status == "failed"
        )
        return failed + int(self.metrics.value("decide_errors"))

    def status_line(self) -> str:
        snap = self.topology.snapshot()
        mounted = sum(1 for e in self.ledger.entries() if e.mounted)
        return f"{len(snap.namespaces)} namespaces, {mounted} mounted, {self.failures()} failures"

    def persist(self) -> None:
        """Write what changed since the last write (a result, a reload) to the state."""
        self.keeper.persist(self.books, self.topology.snapshot(), self.generation)

    def _flush_status(self) -> None:
        line = self.status_line()
        if line != self._status_sent:
            self._status_sent = line
            self.notifier.status(line)

    def update_gauges(self) -> None:
        snap = self.topology.snapshot()
        self.metrics.set("namespaces", len(snap.namespaces))
        self.metrics.set("controllers", len(snap.controllers))
        self.metrics.set("mounts", sum(1 for e in self.ledger.entries() if e.mounted))
        self.metrics.set("policy_generation", self.generation)
        self.metrics.set("reconcile_pending", self.ops.pending_count())

    def metrics_changed(self) -> None:
        """Rewrite the metrics file soon: at most once per :data:`METRICS_INTERVAL`, and
        only after something changed (an idle daemon never wakes up for it)."""
        if self.config.metrics_file is None or self._metrics_due is not None:
            return
        if self._loop is None or not self._ready:
            return
        self._metrics_due = self._loop.call_later(METRICS_INTERVAL, self._write_metrics)

    def _write_metrics(self) -> None:
        self._metrics_due = None
        path = self.config.metrics_file
        if path is None:
            return
        self.update_gauges()
        try:
            # 0644: node_exporter runs as a user of its own; nothing in it is secret.
            write_text_atomic(path, self.metrics.prometheus(), mode=0o644, fsync=False)
        except OSError as exc:
            self._metrics_failures.failed(exc)
        else:
            self._metrics_failures.succeeded()

    def _start_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        loop = self._loop
        if interval is None or loop is None:
            return

        def ping() -> None:
            # Until the shutdown is complete, not only until a stop is asked for: the drain
            # of running hooks may take as long as WatchdogSec=, and a watchdog timeout would
            # abort the daemon and SIGKILL the very hooks it waits for.
            if self._stopped:
                return
            self.notifier.watchdog()
            loop.call_later(interval, ping)

        ping()


async def run_daemon(config: DaemonConfig) -> int:
    """Entry point for ``nvme-agent run``."""
    daemon = Daemon(config)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run()
    return 0
