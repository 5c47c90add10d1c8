"""The daemon: life and wiring.

Data flows one way: udev record -> :class:`Topology` change -> ``decide`` (pure) -> plan ->
:class:`ActionRunner` -> results -> journal, history and event stream.  The jobs around that
flow live in modules of their own, which the daemon only wires together:

* :mod:`~nvme_agent.service.recovery`: handled/ejected/outstanding bookkeeping, the restart
  diff and the state-file layout (pure);
* :mod:`~nvme_agent.service.reload`: policy parsing in a worker thread, swapped in on the
  loop, so udev events, control answers and watchdog pings go on meanwhile;
* :mod:`~nvme_agent.service.requests`: the control commands, their rights and handlers;
* :mod:`~nvme_agent.service.eject` and :mod:`~nvme_agent.service.status`.

Plans are fully rendered when decided, so actions already running finish under the policy
they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.outputs.events import EventStream
from nvme_agent.outputs.journal import (
    MSG_DAEMON_READY,
    MSG_EJECTED,
    MSG_EVENTS_OVERRUN,
    MSG_PLAN_REFUSED,
    MSG_POLICY_RELOAD_FAILED,
    MSG_POLICY_RELOADED,
    MSG_RECOVERY,
    PRIORITY_ERR,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    LogTarget,
    TopologyLog,
    change_fields,
)
from nvme_agent.outputs.notify import Notifier
from nvme_agent.outputs.state import History, StateFile
from nvme_agent.policy import REFUSED, Policy, PolicyError, decide, load_policy, load_policy_text
from nvme_agent.policy.plan import ActionResult, Plan, Status
from nvme_agent.service.access import GROUP
from nvme_agent.service.answers import Answer, Reason, failure
from nvme_agent.service.control import ControlServer
from nvme_agent.service.eject import (
    EjectTarget,
    ResultWaiters,
    eject_answer,
    eject_plans,
    find_namespace,
)
from nvme_agent.service.recovery import (
    Bookkeeping,
    SavedState,
    StateError,
    from_state,
    orphan_mounts,
    present_changes,
    unmount_plan,
)
from nvme_agent.service.reload import Loader, LoadOutcome, Reloader, read_policy
from nvme_agent.service.requests import Dispatcher
from nvme_agent.service.status import mounts_by_source, topology_status
from nvme_agent.topology.changes import REMOVE_KINDS, Change
from nvme_agent.topology.intake import Overrun, UdevIntake
from nvme_agent.topology.model import TopologySnapshot
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

#: Built-in policy when the configured file does not exist: log and stream, act on nothing.
FALLBACK_POLICY = "version: 1\nrules: []\n"


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
        self.history = History(config.history_file)
        self.state_file = StateFile(config.state_file)
        self.books = Bookkeeping()
        self.policy: Policy = self._initial_policy(load)
        self.generation = 1
        self._intake = intake
        self.ledger = MountLedger.in_state_dir(str(config.state_dir))
        self.runner: ActionRunner | None = None
        self.events = EventStream(config.events_socket, group=config.group)
        self.dispatcher = Dispatcher(self, config.group, refuse=self._refused)
        self.control = ControlServer(config.control_socket, self.dispatcher, config.group)
        self.reloader = Reloader(
            config.policy_path,
            load,
            config.reload_timeout,
            reloading=self._notify_reloading,
            apply=self._apply_reload,
            ready=self._notify_reloaded,
        )
        self.waiters = ResultWaiters()
        self.counters: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._ready = False
        self._status_sent = ""
        self._state_changed = OncePerIteration(self._save_state)
        self._status_changed = OncePerIteration(self._flush_status)  # only when it differs
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def events_socket(self) -> str:
        return self.config.events_socket

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
        self.notifier.ready(self.status_line())
        await self._stop.wait()
        return await self._shutdown()

    def stop(self) -> None:
        """Ask the daemon to stop (signal-safe inside the loop)."""
        self._stop.set()

    async def _shutdown(self) -> int:
        self.notifier.stopping()
        self.reloader.cancel()
        assert self._loop is not None and self._intake is not None
        self._loop.remove_reader(self._intake.fileno())
        if self.policy.defaults.unmount_on_stop:
            self._unmount_all("agent stopping (unmount_on_stop)")
        if self.runner is not None:
            if not await self.runner.drain(self.config.drain_timeout):
                log.warning(
                    "stopping with actions still running after %.0fs", self.config.drain_timeout
                )
            self.runner.close()
        self._save_state()
        await self.control.close()
        await self.events.close()
        return 0

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

    def _notify_reloading(self) -> None:
        if self._ready:  # before READY=1 the manager expects no reload protocol
            self.notifier.reloading()

    def _notify_reloaded(self) -> None:
        if self._ready:
            self.notifier.ready(self.status_line())

    def _apply_reload(self, outcome: LoadOutcome) -> Answer:
        """Swap a parsed policy in (on the loop), or report why not; the old one stays."""
        path = self.config.policy_path
        if outcome.policy is None:
            errors = list(outcome.errors)
            self.counters["reload_failures"] += 1
            self.tlog.event(
                f"policy reload failed, keeping generation {self.generation}: " + "; ".join(errors),
                MSG_POLICY_RELOAD_FAILED,
                PRIORITY_ERR,
                {"NVME_POLICY": str(path)},
            )
            self.events.publish({"type": "reload-failed", "nsid": None, "errors": errors})
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            error = f"policy {path} not reloaded: {errors[0] if errors else '?'}{more}"
            return failure(outcome.reason, error, errors=errors, generation=self.generation)
        old, self.policy = self.policy, outcome.policy
        self.generation += 1
        self.tlog.event(
            f"policy {path} loaded (generation {self.generation})",
            MSG_POLICY_RELOADED,
            fields={"NVME_POLICY": str(path)},
        )
        for warning in self.policy.warnings:
            log.warning("policy: %s", warning)
        if self.policy.defaults.reconcile_on_reload:
            self._reconcile_policy(old)
        self.events.publish({"type": "reloaded", "nsid": None, "generation": self.generation})
        return {"ok": True, "generation": self.generation}

    def _reconcile_policy(self, old: Policy) -> None:
        """Re-run the add plan of present namespaces whose matching rule changed."""
        snap = self.topology.snapshot()
        for change in present_changes(snap):
            before = decide(change, snap, old)
            after = decide(change, snap, self.policy)
            if before.rule != after.rule and after.actions:
                log.info("reconcile: nsid %s now matches %s", change.nsid, after.rule)
                self._submit(after)

    # ------------------------------------------------------------------ intake
    def _coldplug(self, records: list[DeviceRecord]) -> None:
        """Build the initial view and reconcile it with the previous run's state file."""
        self.topology.apply_all(records)
        current = self.topology.snapshot()
        restored = self.books.restore(self._previous_state(), current, self.policy.digest)
        if restored.while_down:
            self.tlog.event(
                f"{restored.while_down} topology changes happened while the agent was down",
                MSG_RECOVERY,
                PRIORITY_NOTICE,
            )
        for change in restored.changes:
            self._handle_change(change)
        gone = {c.devnode for c in restored.changes if c.type in REMOVE_KINDS and c.devnode}
        for entry in orphan_mounts(self.ledger.entries(), current, gone):
            self._detach_orphan(entry)
        self._save_state()

    def _previous_state(self) -> SavedState | None:
        data = self.state_file.load()
        if data is None:
            return None
        try:
            return from_state(data)
        except StateError as exc:
            self.state_file.move_aside(str(exc))
            return None

    def _detach_orphan(self, entry: LedgerEntry) -> None:
        """Lazily detach a mount we made for a device that no longer exists."""
        self.tlog.event(
            f"{entry.source} vanished while the agent was down; lazily detaching "
            f"{entry.target} (unflushed data may have been lost)",
            MSG_RECOVERY,
            PRIORITY_WARNING,
            {"DEVNAME": entry.source, "MOUNTPOINT": entry.target},
        )
        self._submit(unmount_plan(entry, "vanished while down", "orphan", device_gone=True))

    def _on_readable(self) -> None:
        """Take every pending record, persist the new topology, then act on the changes.

        Persisting before any plan is submitted means that whatever an action did, the state
        file already knows the namespace it did it for: a kill -9 at any point loses no
        topology, only (at worst) the mark that an add plan finished, and that plan is
        idempotent and simply runs again after the restart.
        """
        assert self._intake is not None
        changes: list[Change] = []
        try:
            for record in self._intake.drain():
                changes.extend(self.topology.apply(record))
        except Overrun:
            self.counters["overruns"] += 1
            self.tlog.event(
                "udev events were lost (netlink overrun): re-enumerating and diffing",
                MSG_EVENTS_OVERRUN,
                PRIORITY_WARNING,
            )
            changes.extend(self.topology.reconcile(self._intake.enumerate()))
        if not changes:
            return
        self._save_state()
        for change in changes:
            self._handle_change(change)
        self._status_changed()

    # ------------------------------------------------------------------ changes and plans
    def _handle_change(self, change: Change) -> None:
        self.counters[change.type.value] += 1
        self.tlog.change(change)
        record = change.to_dict()
        self.history.append(record)  # a failing history is logged there, and we go on
        self.events.publish(record)
        if self.books.removal_already_ran(change):
            log.info("nsid %s was ejected before removal: its remove plan already ran", change.nsid)
            return
        try:
            plan = decide(change, self.topology.snapshot(), self.policy)
        except PolicyError as exc:
            self.counters["failures"] += 1
            log.error("policy cannot decide on %s: %s", change.summary(), exc)
            return
        self._submit(plan)

    def _submit(self, plan: Plan) -> None:
        self.events.publish(plan.to_dict())
        self.books.plan_submitted(plan, self.policy.digest)
        refused = [line for line in plan.explanation if line.startswith(REFUSED)]
        if refused:
            self._log_refused(plan, refused[0])
        elif plan.rule is not None or plan.actions:
            log.info(
                "%s: rule %s, %d action(s)", plan.change.summary(), plan.rule, len(plan.actions)
            )
        if plan.actions and self.runner is not None:
            self.runner.submit(plan)

    def _log_refused(self, plan: Plan, line: str) -> None:
        """A plan the policy refused (e.g. a filesystem type it does not allow): once, as a
        warning naming the device and the cause."""
        change = plan.change
        self.counters["refused"] += 1
        fields = change_fields(change) | {"NVME_RULE": plan.rule or "", "NVME_PLAN_KEY": plan.key}
        self.tlog.event(
            _printable(f"{change.summary()} on {change.devnode or '?'}: nothing done, {line}"),
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
        if result.status is Status.FAILED:
            self.counters["failures"] += 1
        if self.books.result(result):
            self._state_changed()
        self.events.publish(result.to_dict())
        self.waiters.feed(result)
        self._status_changed()

    def _unmount_all(self, reason: str) -> None:
        for entry in self.ledger.entries():
            if entry.mounted:
                self._submit(unmount_plan(entry, reason, "stop", device_gone=False))

    # ------------------------------------------------------------------ control requests
    # (what nvme_agent.service.requests.Agent asks of us; the dispatcher checks the rights)
    def admin_group(self) -> str | None:
        return self.policy.defaults.admin_group

    def _refused(self, kind: str, message: str) -> None:
        self.control.refuse(kind, message)

    async def reload(self) -> Answer:
        """Re-read the policy (coalesced with reloads already under way)."""
        return await self.reloader.request()

    async def history_records(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` history records (all with 0), read off the loop."""
        records = await asyncio.to_thread(lambda: list(self.history.read()))
        return records[-limit:] if limit > 0 else records

    async def settle(self, timeout: float) -> bool:
        """Like ``udevadm settle``: True once every submitted plan has finished."""
        return self.runner is None or await self.runner.drain(timeout)

    async def eject(self, target: EjectTarget, timeout: float) -> Answer:
        """Run a present namespace's remove plan gracefully; report whether it is safe."""
        snap = self.topology.snapshot()
        ns = find_namespace(snap, target)
        plans = eject_plans(ns, snap, self.policy)
        waiter = self.waiters.expect(plans)
        try:
            for plan in plans:
                self._submit(plan)
            if not await waiter.wait(timeout):
                error = f"eject plan did not finish within {timeout:.0f}s"
                return failure(Reason.TIMEOUT, error, nsid=ns.nsid)
        finally:
            self.waiters.discard(waiter)
        answer = eject_answer(ns, waiter.results)
        if answer["ok"]:
            self.books.ejected(ns)
            self.tlog.event(
                f"nsid {ns.nsid} ({ns.devnode}) ejected: safe to remove",
                MSG_EJECTED,
                fields={"NVME_NSID": str(ns.nsid), "DEVNAME": ns.devnode or ""},
            )
            self.events.publish({"type": "ejected", "nsid": ns.nsid, "device": ns.devnode})
            self._save_state()
        return answer

    # ------------------------------------------------------------------ status and state
    def status(self) -> dict[str, Any]:
        """The topology with mountpoints, matched rules and counters."""
        snap = self.topology.snapshot()
        mounts = mounts_by_source((e.source, e.target) for e in self.ledger.entries() if e.mounted)
        view = topology_status(
            snap,
            mounts,
            rule_of=lambda change: self._rule_of(change, snap),
            is_ejected=self.books.is_ejected,
        )
        return view | {
            "policy": str(self.config.policy_path),
            "policy_generation": self.generation,
            "dry_run": self.config.dry_run,
            "counters": dict(self.counters),
            "status": self.status_line(),
        }

    def _rule_of(self, change: Change, snap: TopologySnapshot) -> str | None:
        try:
            return decide(change, snap, self.policy).rule
        except PolicyError:
            return None

    def status_line(self) -> str:
        snap = self.topology.snapshot()
        mounted = sum(1 for e in self.ledger.entries() if e.mounted)
        return (
            f"{len(snap.namespaces)} namespaces, {mounted} mounted, "
            f"{self.counters['failures']} failures"
        )

    def _save_state(self) -> None:
        self.state_file.save(self.books.to_state(self.topology.snapshot(), self.generation))

    def _flush_status(self) -> None:
        line = self.status_line()
        if line != self._status_sent:
            self._status_sent = line
            self.notifier.status(line)

    def _start_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        loop = self._loop
        if interval is None or loop is None:
            return

        def ping() -> None:
            self.notifier.watchdog()
            if not self._stop.is_set():
                loop.call_later(interval, ping)

        ping()


def _printable(text: str) -> str:
    """``text`` with control characters escaped: what a disk names (a label, a serial) must
    not start a log line of its own on stderr."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class OncePerIteration:
    """Runs ``action`` at most once per loop iteration, however often it is asked for: a
    burst of hundreds of events must not become hundreds of state-file writes or datagrams
    to the service manager."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending = False

    def __call__(self) -> None:
        if self._pending or self.loop is None:
            return
        self._pending = True
        self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._pending = False
        self.action()


async def run_daemon(config: DaemonConfig) -> int:
    """Entry point for ``nvme-agent run``."""
    daemon = Daemon(config)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run()
    return 0
