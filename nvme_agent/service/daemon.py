"""The daemon: one object that owns the loop, the topology, the policy and the runner.

Data flows one way: udev record -> :class:`Topology` change -> ``decide`` (pure) -> plan ->
:class:`ActionRunner` -> results -> journal, history and event stream.

Reloads are synchronous inside the event loop: while a new policy is read and validated no
udev record is taken off the netlink socket, so events wait in the (enlarged) kernel buffer
and none is lost.  Plans are fully rendered when decided, so actions already running finish
under the policy they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.outputs.events import EventStream
from nvme_agent.outputs.journal import (
    MSG_DAEMON_READY,
    MSG_EJECTED,
    MSG_EVENTS_OVERRUN,
    MSG_POLICY_RELOAD_FAILED,
    MSG_POLICY_RELOADED,
    MSG_RECOVERY,
    PRIORITY_ERR,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    LogTarget,
    TopologyLog,
)
from nvme_agent.outputs.notify import Notifier
from nvme_agent.outputs.state import History, read_json, write_json_atomic
from nvme_agent.policy import Policy, PolicyError, decide, load_policy, load_policy_text
from nvme_agent.policy.plan import ActionResult, Plan, Status, UnmountSpec
from nvme_agent.service.control import ControlServer
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, Change, ChangeType
from nvme_agent.topology.intake import Overrun, UdevIntake
from nvme_agent.topology.model import Namespace, TopologySnapshot
from nvme_agent.topology.records import DeviceRecord
from nvme_agent.topology.snapshot_io import snapshot_from_dict
from nvme_agent.topology.tracker import Topology, diff_snapshots

log = logging.getLogger(__name__)

#: (subsystem NQN, nsid, DISKSEQ): one disk instance of one namespace.
HandledKey = tuple[str, int, int | None]

_ADD_VALUES = frozenset(k.value for k in ADD_KINDS)

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


@dataclass
class _Waiter:
    """Collects the results of plans submitted by one control request (eject)."""

    keys: set[str]
    expected: int
    results: list[ActionResult] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Daemon:
    """The running agent.  Create, then ``await run()``; stop with SIGTERM or :meth:`stop`."""

    def __init__(self, config: DaemonConfig, intake: UdevIntake | None = None) -> None:
        self.config = config
        self.topology = Topology()
        self.tlog = TopologyLog(config.log_target)
        self.notifier = Notifier()
        self.history = History(config.history_file)
        self.policy: Policy = self._initial_policy()
        self.generation = 1
        self._intake = intake
        self.ledger = MountLedger.in_state_dir(str(config.state_dir))
        self.runner: ActionRunner | None = None
        self.events = EventStream(config.events_socket)
        self.control = ControlServer(config.control_socket, self._handle_request)
        self.counters: Counter[str] = Counter()
        self.ejected: dict[tuple[str, int], int | None] = {}  # key -> diskseq when ejected
        self._waiters: list[_Waiter] = []
        self._stop = asyncio.Event()
        self._status_pending = False
        self._status_sent = ""
        self._state_pending = False
        # Namespaces whose add plan finished (subsysnqn, nsid, diskseq), persisted so that a
        # restart after kill -9 re-runs exactly the add plans that were interrupted.
        self.handled: dict[HandledKey, str] = {}  # -> digest of the policy that handled it
        self._outstanding: Counter[str] = Counter()
        self._awaiting: dict[str, tuple[HandledKey, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ policy
    def _initial_policy(self) -> Policy:
        path = self.config.policy_path
        if not path.exists():
            log.warning("policy %s does not exist: logging changes only", path)
            return load_policy_text(FALLBACK_POLICY, f"{path} (built-in fallback)")
        return load_policy(path)  # a broken policy at start is fatal: there is no old one

    def reload(self) -> dict[str, Any]:
        """Validate the policy file and swap it in; on any error keep the old one."""
        self.notifier.reloading()
        try:
            new = load_policy(self.config.policy_path)
        except (PolicyError, OSError) as exc:
            errors = _error_lines(exc)
            self.counters["reload_failures"] += 1
            self.tlog.event(
                f"policy reload failed, keeping generation {self.generation}: " + "; ".join(errors),
                MSG_POLICY_RELOAD_FAILED,
                PRIORITY_ERR,
                {"NVME_POLICY": str(self.config.policy_path)},
            )
            self.events.publish({"type": "reload-failed", "nsid": None, "errors": errors})
            self.notifier.ready(self.status_line())
            return {"ok": False, "errors": errors, "generation": self.generation}
        old = self.policy
        self.policy = new
        self.generation += 1
        self.tlog.event(
            f"policy {self.config.policy_path} loaded (generation {self.generation})",
            MSG_POLICY_RELOADED,
            fields={"NVME_POLICY": str(self.config.policy_path)},
        )
        for warning in new.warnings:
            log.warning("policy: %s", warning)
        if new.defaults.reconcile_on_reload:
            self._reconcile_policy(old)
        self.events.publish({"type": "reloaded", "nsid": None, "generation": self.generation})
        self.notifier.ready(self.status_line())
        return {"ok": True, "generation": self.generation}

    def _reconcile_policy(self, old: Policy) -> None:
        """Re-run the add plan of present namespaces whose matching rule changed."""
        snap = self.topology.snapshot()
        for change in _present_changes(snap):
            before = decide(change, snap, old)
            after = decide(change, snap, self.policy)
            if before.rule != after.rule and after.actions:
                log.info("reconcile: nsid %s now matches %s", change.nsid, after.rule)
                self._submit(after)

    # ------------------------------------------------------------------ main
    async def run(self) -> int:
        """Serve until stopped; returns the exit status."""
        self._loop = asyncio.get_running_loop()
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
        coldplug = intake.start()
        self._coldplug(coldplug)
        # READY=1 means "what was present at start is handled": units ordered after us see the
        # mounts.  Udev events meanwhile wait in the (enlarged) netlink buffer.
        assert self.runner is not None
        if not await self.runner.drain(self.config.ready_timeout):
            log.warning(
                "coldplug actions still running after %.0fs; reporting ready anyway",
                self.config.ready_timeout,
            )
        self._loop.add_reader(intake.fileno(), self._on_readable)
        for signum, handler in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.reload),
        ):
            self._loop.add_signal_handler(signum, handler)
        self._start_watchdog()
        self.tlog.event(
            f"nvme-agent ready: {self.status_line()}"
            + (" (dry run: nothing is executed)" if self.config.dry_run else ""),
            MSG_DAEMON_READY,
        )
        self.events.publish({"type": "ready", "nsid": None, "status": self.status_line()})
        self.notifier.ready(self.status_line())
        await self._stop.wait()
        return await self._shutdown()

    def stop(self) -> None:
        """Ask the daemon to stop (signal-safe inside the loop)."""
        self._stop.set()

    async def _shutdown(self) -> int:
        self.notifier.stopping()
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

    # ------------------------------------------------------------------ intake
    def _coldplug(self, records: list[DeviceRecord]) -> None:
        """Build the initial view and reconcile it with the previous run's state file."""
        self.topology.apply_all(records)
        current = self.topology.snapshot()
        previous_data = read_json(self.config.state_file)
        if previous_data is None:
            changes = self._controller_changes(current) + _present_changes(current, True)
        else:
            previous = snapshot_from_dict(previous_data.get("topology", {}))
            changes = [_while_down(c) for c in diff_snapshots(previous, current)]
            if changes:
                self.tlog.event(
                    f"{len(changes)} topology changes happened while the agent was down",
                    MSG_RECOVERY,
                    PRIORITY_NOTICE,
                )
            # An eject survives a restart only while the very same disk is still present.
            for nqn, nsid, diskseq in previous_data.get("ejected", []):
                ns = current.namespace(int(nsid), str(nqn) or None)
                if ns is not None and ns.diskseq == diskseq:
                    self.ejected[ns.key] = diskseq
            handled = {
                (str(a), int(b), c): str(d) for a, b, c, d in previous_data.get("handled", [])
            }
            touched = {c.namespace.key for c in changes if c.namespace is not None}
            for change in _present_changes(current, coldplug=True):
                ns = change.namespace
                assert ns is not None
                if ns.key in touched or ns.key in self.ejected:
                    continue  # an ejected namespace stays unmounted until it is detached
                digest = handled.get(_handled_key(ns))
                if digest == self.policy.digest:
                    self.handled[_handled_key(ns)] = digest
                    continue
                why = "policy changed since" if digest else "add plan interrupted by"
                changes.append(dataclasses.replace(change, reason=f"{why} the last run"))
        for change in changes:
            self._handle_change(change)
        gone = {c.devnode for c in changes if c.type in REMOVE_KINDS and c.devnode is not None}
        self._recover_orphan_mounts(current, gone)
        self._save_state()

    @staticmethod
    def _controller_changes(snap: TopologySnapshot) -> list[Change]:
        return [
            Change(ChangeType.CONTROLLER_ADDED, controller=c, coldplug=True)
            for c in snap.controllers
        ]

    def _recover_orphan_mounts(self, snap: TopologySnapshot, planned: set[str]) -> None:
        """Lazily detach mounts we made for devices that no longer exist.

        ``planned`` are devices whose removal plan (with its implied unmount) already runs.
        """
        present = {ns.devnode for ns in snap.namespaces}
        present |= {p.devnode for ns in snap.namespaces for p in ns.partitions}
        present |= planned
        for entry in self.ledger.entries():
            if entry.source in present or not entry.mounted:
                continue
            self.tlog.event(
                f"{entry.source} vanished while the agent was down; lazily detaching "
                f"{entry.target} (unflushed data may have been lost)",
                MSG_RECOVERY,
                PRIORITY_WARNING,
                {"DEVNAME": entry.source, "MOUNTPOINT": entry.target},
            )
            spec = UnmountSpec(
                source=entry.source,
                target=entry.target,
                mount_root=_mount_root_of(entry),
                device_gone=True,
                on_busy="lazy",
            )
            change = Change(ChangeType.NAMESPACE_REMOVED, reason="vanished while down")
            self._submit(Plan(change=change, key=f"orphan:{entry.target}", actions=(spec,)))

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
        self.history.append(record)
        self.events.publish(record)
        ns = change.namespace
        is_removal = change.type in REMOVE_KINDS and change.reason != "eject"
        if is_removal and ns is not None and self.ejected.get(ns.key, -1) == ns.diskseq:
            if change.type is ChangeType.NAMESPACE_REMOVED:
                del self.ejected[ns.key]
            log.info("nsid %s was ejected before removal: its remove plan already ran", ns.nsid)
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
        ns = plan.change.namespace
        if ns is not None and plan.change.type in REMOVE_KINDS:
            self.handled.pop(_handled_key(ns), None)
        elif ns is not None and plan.change.type in ADD_KINDS:
            if plan.actions:
                # A partition's plan shares its namespace's key: until it has run, the
                # namespace is not handled, even if the disk's own plan had nothing to do.
                self.handled.pop(_handled_key(ns), None)
                self._outstanding[plan.key] += len(plan.actions)
                self._awaiting[plan.key] = (_handled_key(ns), self.policy.digest)
            elif not self._outstanding[plan.key]:
                self.handled[_handled_key(ns)] = self.policy.digest
        if plan.rule is not None or plan.actions:
            log.info(
                "%s: rule %s, %d action(s)", plan.change.summary(), plan.rule, len(plan.actions)
            )
        if plan.actions and self.runner is not None:
            self.runner.submit(plan)

    def _result_from_thread(self, result: ActionResult) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._on_result, result)

    def _on_result(self, result: ActionResult) -> None:
        if result.status is Status.FAILED:
            self.counters["failures"] += 1
        if result.change in _ADD_VALUES and self._outstanding[result.plan_key] > 0:
            self._outstanding[result.plan_key] -= 1
            if not self._outstanding[result.plan_key]:
                del self._outstanding[result.plan_key]
                awaited = self._awaiting.pop(result.plan_key, None)
                if awaited is not None:
                    self.handled[awaited[0]] = awaited[1]
                    self._state_changed()
        self.events.publish(result.to_dict())
        for waiter in list(self._waiters):
            if result.plan_key in waiter.keys:
                waiter.results.append(result)
                if len(waiter.results) >= waiter.expected:
                    waiter.done.set()
        self._status_changed()

    # ------------------------------------------------------------------ control requests
    async def _handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "reload":
            return self.reload()
        if cmd == "eject":
            return await self.eject(req)
        if cmd == "history":
            limit = int(req.get("limit", 100))
            records = list(self.history.read())
            return {"ok": True, "records": records[-limit:] if limit > 0 else records}
        if cmd == "settle":
            # Like `udevadm settle`: answer once every submitted plan has finished.
            timeout = float(req.get("timeout", 60))
            idle = self.runner is None or await self.runner.drain(timeout)
            return {"ok": idle, "status": self.status_line()} | (
                {} if idle else {"error": f"actions still running after {timeout:.0f}s"}
            )
        if cmd == "watch":
            return {"ok": True, "events": self.config.events_socket}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _find_for_eject(self, req: dict[str, Any]) -> Namespace | str:
        snap = self.topology.snapshot()
        device = req.get("device")
        if device:
            real = os.path.realpath(str(device))
            for ns in snap.namespaces:
                nodes = [ns.devnode] + [p.devnode for p in ns.partitions]
                if device in nodes or real in nodes:
                    return ns
            return f"no NVMe namespace has device {device}"
        try:
            nsid = int(req["nsid"])
        except (KeyError, TypeError, ValueError):
            return "eject needs a device or an integer nsid"
        ctrl = req.get("ctrl")
        found = [
            n for n in snap.namespaces if n.nsid == nsid and (not ctrl or ctrl in n.controllers)
        ]
        if not found:
            return f"no namespace with nsid {nsid}" + (f" on {ctrl}" if ctrl else "")
        if len(found) > 1:
            return f"nsid {nsid} exists on several subsystems; name the controller with --ctrl"
        return found[0]

    async def eject(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run a present namespace's remove plan gracefully; report whether it is safe."""
        found = self._find_for_eject(req)
        if isinstance(found, str):
            return {"ok": False, "error": found}
        ns = found
        snap = self.topology.snapshot()
        changes = [
            Change(ChangeType.PARTITION_REMOVED, namespace=ns, partition=p, reason="eject")
            for p in ns.partitions
        ]
        changes.append(Change(ChangeType.NAMESPACE_REMOVED, namespace=ns, reason="eject"))
        plans = [decide(c, snap, self.policy) for c in changes]
        expected = sum(len(p.actions) for p in plans)
        waiter = _Waiter(keys={p.key for p in plans}, expected=expected)
        if expected:
            self._waiters.append(waiter)
        try:
            for plan in plans:
                self._submit(plan)
            if expected:
                timeout = float(req.get("timeout", 300))
                try:
                    await asyncio.wait_for(waiter.done.wait(), timeout)
                except TimeoutError:
                    return {
                        "ok": False,
                        "nsid": ns.nsid,
                        "error": f"eject plan did not finish within {timeout:.0f}s",
                    }
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        failed = [r for r in waiter.results if r.status in (Status.FAILED, Status.CANCELLED)]
        answer: dict[str, Any] = {
            "ok": not failed,
            "nsid": ns.nsid,
            "device": ns.devnode,
            "results": [r.to_dict() for r in waiter.results],
        }
        if failed:
            answer["error"] = "; ".join(f"{r.action}: {r.error or r.message}" for r in failed)
            answer["holders"] = [r.details for r in failed if r.details]
            return answer
        self.ejected[ns.key] = ns.diskseq
        self.tlog.event(
            f"nsid {ns.nsid} ({ns.devnode}) ejected: safe to remove",
            MSG_EJECTED,
            fields={"NVME_NSID": str(ns.nsid), "DEVNAME": ns.devnode or ""},
        )
        self.events.publish({"type": "ejected", "nsid": ns.nsid, "device": ns.devnode})
        self._save_state()
        return answer

    def _unmount_all(self, reason: str) -> None:
        for entry in self.ledger.entries():
            if not entry.mounted:
                continue
            spec = UnmountSpec(
                source=entry.source,
                target=entry.target,
                mount_root=_mount_root_of(entry),
                device_gone=False,
            )
            change = Change(ChangeType.NAMESPACE_REMOVED, reason=reason)
            self._submit(Plan(change=change, key=f"stop:{entry.target}", actions=(spec,)))

    # ------------------------------------------------------------------ status and state
    def status(self) -> dict[str, Any]:
        """The topology with mountpoints, matched rules and counters."""
        snap = self.topology.snapshot()
        mounts: dict[str, list[str]] = {}
        for entry in self.ledger.entries():
            if entry.mounted:
                mounts.setdefault(entry.source, []).append(entry.target)
        namespaces = []
        for change in _present_changes(snap):
            ns = change.namespace
            assert ns is not None
            item = ns.to_dict()
            try:
                item["rule"] = decide(change, snap, self.policy).rule
            except PolicyError:
                item["rule"] = None
            item["mountpoints"] = mounts.get(ns.devnode or "", [])
            for part in item["partitions"]:
                part["mountpoints"] = mounts.get(part["devnode"] or "", [])
            item["ejected"] = ns.key in self.ejected
            namespaces.append(item)
        return {
            "controllers": [c.to_dict() for c in snap.controllers],
            "namespaces": namespaces,
            "policy": str(self.config.policy_path),
            "policy_generation": self.generation,
            "dry_run": self.config.dry_run,
            "counters": dict(self.counters),
            "status": self.status_line(),
        }

    def status_line(self) -> str:
        snap = self.topology.snapshot()
        mounted = sum(1 for e in self.ledger.entries() if e.mounted)
        return (
            f"{len(snap.namespaces)} namespaces, {mounted} mounted, "
            f"{self.counters['failures']} failures"
        )

    def _save_state(self) -> None:
        try:
            write_json_atomic(
                self.config.state_file,
                {
                    "topology": self.topology.snapshot().to_dict(),
                    "ejected": [[k[0], k[1], v] for k, v in self.ejected.items()],
                    "handled": sorted([*k, d] for k, d in self.handled.items()),
                    "policy_generation": self.generation,
                },
            )
        except OSError as exc:
            log.error("cannot write state file %s: %s", self.config.state_file, exc)

    def _state_changed(self) -> None:
        """Coalesce state-file writes to one per loop iteration."""
        if self._state_pending or self._loop is None:
            return
        self._state_pending = True

        def flush() -> None:
            self._state_pending = False
            self._save_state()

        self._loop.call_soon(flush)

    def _status_changed(self) -> None:
        """Coalesce STATUS= updates: at most one per loop iteration, and only when it differs.

        A burst of hundreds of events must not become hundreds of datagrams to the manager.
        """
        if self._status_pending or self._loop is None:
            return
        self._status_pending = True

        def flush() -> None:
            self._status_pending = False
            line = self.status_line()
            if line != self._status_sent:
                self._status_sent = line
                self.notifier.status(line)

        self._loop.call_soon(flush)

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


def _present_changes(snap: TopologySnapshot, coldplug: bool = False) -> list[Change]:
    """An added change for every namespace and partition present in ``snap``."""
    changes: list[Change] = []
    for ns in snap.namespaces:
        changes.append(Change(ChangeType.NAMESPACE_ADDED, namespace=ns, coldplug=coldplug))
        changes.extend(
            Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=p, coldplug=coldplug)
            for p in ns.partitions
        )
    return changes


def _handled_key(ns: Namespace) -> HandledKey:
    return (ns.subsysnqn or "", ns.nsid, ns.diskseq)


def _while_down(change: Change) -> Change:
    reason = "while the agent was down"
    if change.reason:
        reason = f"{change.reason} ({reason})"
    return dataclasses.replace(change, coldplug=True, reason=reason)


def _mount_root_of(entry: LedgerEntry) -> str:
    """The directory below which the agent made ``entry``'s mountpoint."""
    first = entry.created_dirs[0] if entry.created_dirs else entry.target
    return os.path.dirname(first.rstrip("/")) or "/"


def _error_lines(exc: BaseException) -> list[str]:
    if isinstance(exc, PolicyError):
        return [str(issue) for issue in exc.issues]
    return [str(exc)]


async def run_daemon(config: DaemonConfig) -> int:
    """Entry point for ``nvme-agent run``."""
    daemon = Daemon(config)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run()
    return 0
