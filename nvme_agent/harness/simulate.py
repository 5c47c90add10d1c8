"""Run a scenario: the real daemon against a fake guest, step by step, with expectations.

:class:`Simulation` builds the bed (controllers and coldplug namespaces), starts the daemon
(``--dry-run`` unless real mode) and waits for ``READY=1``, subscribes to its event stream,
then executes the steps.  After every injection it waits for the daemon's visible reaction
instead of sleeping: the topology changes the step must cause (computed purely with the same
:class:`~nvme_agent.topology.tracker.Topology` on the same device records), the plan published for
each, and one action result per planned action.  A step of several phases (a connecting
controller: ``(efault)`` add, then live, then its namespaces) waits after each phase.

Output goes to a callback as records (``type`` + ``nsid`` plus readable ``text``), so the
command can print a timeline or JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nvme_agent.harness.agent import AgentError, AgentProcess, EventFeed, environ_without_bed
from nvme_agent.harness.bed import Bed, BedError
from nvme_agent.harness.expect import Expectations, mounted_targets
from nvme_agent.harness.layout import Event, LayoutError
from nvme_agent.harness.real import RealBacking, RealModeError
from nvme_agent.harness.scenario import Scenario, Step, coldplug_order
from nvme_agent.harness.steps import DEVICE_STEPS, Prepare, coldplug, unchanged
from nvme_agent.harness.timeline import CHANGE_TYPES, describe_record
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

Record = dict[str, Any]
Emit = Callable[[Record, str | None], None]
DEFAULT_POLICY = "version: 1\nrules: []\n"
#: Real mode's mount roots live here: a policy may not put its mount root below /tmp.
REAL_ROOT_PARENT = "/run"


@dataclass
class Outcome:
    """What a simulation ended with."""

    passed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors


def relocate_policy(text: str, old_root: str, new_root: str) -> str:
    """The policy with ``defaults.mount_root`` and every mount path below it moved."""
    data = yaml.safe_load(text) or {}
    defaults = data.setdefault("defaults", {}) or {}
    data["defaults"] = defaults
    defaults["mount_root"] = new_root

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "mount" and isinstance(v, dict) and isinstance(v.get("path"), str):
                    v = dict(v)
                    v["path"] = relocate_path(v["path"], old_root, new_root)
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return yaml.safe_dump(walk(data), sort_keys=False)


def relocate_path(path: str, old_root: str, new_root: str) -> str:
    old = old_root.rstrip("/")
    if path == old or path.startswith(old + "/"):
        return new_root.rstrip("/") + path[len(old) :]
    return path


def policy_mount_root(text: str) -> str:
    data = yaml.safe_load(text) or {}
    root = ((data.get("defaults") or {}).get("mount_root")) if isinstance(data, dict) else None
    return str(root or "/run/media/nvme-agent")


@dataclass
class _Guest:
    """Everything a running simulation drives."""

    bed: Bed
    agent: AgentProcess
    feed: EventFeed
    shadow: Topology
    expect: Expectations
    policy_file: Path
    backing: RealBacking | None


class Simulation:
    """One run of a scenario.  ``emit(record, text)`` receives every timeline record."""

    def __init__(
        self,
        scenario: Scenario,
        emit: Emit,
        *,
        policy_text: str | None = None,
        real: bool = False,
        step_timeout: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.emit = emit
        self.real = real
        self.step_timeout = step_timeout
        self.policy_text = policy_text or scenario.policy_text or DEFAULT_POLICY
        self.outcome = Outcome()
        self.started = time.monotonic()
        self._cursor = 0
        self._printed = 0
        self._specs: dict[str, list[dict[str, Any]]] = {}
        self._mount_root = policy_mount_root(self.policy_text)
        self._real_root: str | None = None
        self._history: list[Record] = []

    # ----------------------------------------------------------------- output
    def _say(self, record: Record, text: str | None) -> None:
        self.emit(record, text)

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.3f}]"

    def _flush(self, feed: EventFeed) -> None:
        """Print the stream records received since the last flush."""
        records = feed.snapshot()
        for rec in records[self._printed :]:
            key = str(rec.get("key") or "")
            if rec.get("type") == "plan":
                self._specs.setdefault(key, []).extend(rec.get("actions") or [])
            text = describe_record(rec, self._specs.get(key))
            change = rec.get("type") in CHANGE_TYPES
            self._say(rec, f"{self._stamp()} {text}" if change else f"{' ' * 10}{text}")
        self._printed = len(records)

    # ----------------------------------------------------------------- main
    def run(self) -> Outcome:
        """Execute the scenario; never raises for scenario failures (see :attr:`outcome`)."""
        with contextlib.ExitStack() as stack:
            tmp = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="nvme-agent-simulate-"))
            )
            try:
                guest = self._start(stack, tmp)
            except (BedError, LayoutError) as exc:
                self.outcome.errors.append(f"cannot build the guest: {exc}")
                self._say({"type": "error", "nsid": None, "error": str(exc)}, f"error: {exc}")
                guest = None
            if guest is not None:
                self._steps(guest)
        verdict = "PASS" if self.outcome.ok else "FAIL"
        self._say(
            {
                "type": "summary",
                "nsid": None,
                "ok": self.outcome.ok,
                "passed": self.outcome.passed,
                "failed": self.outcome.failed,
                "errors": self.outcome.errors,
            },
            f"{verdict}: {self.outcome.passed} expectation(s) held, {self.outcome.failed} failed"
            + (f", {len(self.outcome.errors)} error(s)" if self.outcome.errors else ""),
        )
        return self.outcome

    def _start(self, stack: contextlib.ExitStack, tmp: Path) -> _Guest | None:
        """Bed, coldplug devices, policy and daemon; ``None`` (after saying why) on failure."""
        backing, policy_text = self._real_mode(stack, tmp)
        policy_file = tmp / "policy.yaml"
        policy_file.write_text(policy_text, encoding="utf-8")
        self._announce()
        bed = stack.enter_context(Bed(multipath=self.scenario.multipath))
        shadow = Topology()
        prepare = self._prepare(backing)
        events = coldplug(bed.layout, self.scenario.controllers, self.scenario.namespaces, prepare)
        bed.apply(events, quiet=True)
        for device in coldplug_order(bed.layout):
            shadow.apply(device.record("add", coldplug=True))
        agent = AgentProcess(
            policy_file, bed.env(environ_without_bed()), dry_run=not self.real, workdir=tmp
        )
        stack.callback(self._stop_agent, agent)
        try:
            agent.start()
        except AgentError as exc:
            self.outcome.errors.append(str(exc))
            self._say({"type": "error", "nsid": None, "error": str(exc)}, f"error: {exc}")
            return None
        feed = EventFeed(agent.events_socket)
        stack.callback(feed.close)
        self._coldplug(agent)
        expect = Expectations(
            feed,
            self._history,
            real=self.real,
            real_root=self._real_root,
            mount_root=self._mount_root,
            status=lambda: agent.request({"cmd": "status"}),
        )
        return _Guest(bed, agent, feed, shadow, expect, policy_file, backing)

    def _real_mode(self, stack: contextlib.ExitStack, tmp: Path) -> tuple[RealBacking | None, str]:
        """Real mode: a mount root of our own and loop devices; the policy moved there."""
        if not self.real:
            return None, self.policy_text
        root = tempfile.mkdtemp(prefix="nvme-agent-simulate.", dir=REAL_ROOT_PARENT)
        stack.callback(shutil.rmtree, root, True)
        self._real_root = os.path.join(root, "mnt")
        os.makedirs(self._real_root)
        text = relocate_policy(self.policy_text, self._mount_root, self._real_root)
        return stack.enter_context(RealBacking(tmp / "images", self._real_root)), text

    def _prepare(self, backing: RealBacking | None) -> Prepare:
        if backing is None:
            return unchanged
        return lambda ns: backing.back(ns, self._say)

    def _announce(self) -> None:
        mode = "real" if self.real else "dry-run"
        layout = "native multipath" if self.scenario.multipath else "no multipath"
        self._say(
            {
                "type": "simulation",
                "nsid": None,
                "scenario": self.scenario.name,
                "mode": mode,
                "multipath": self.scenario.multipath,
            },
            f"nvme-agent simulate: {self.scenario.name} ({mode}, {layout})"
            + (f"\n  {self.scenario.description}" if self.scenario.description else ""),
        )

    def _steps(self, guest: _Guest) -> None:
        for step in self.scenario.steps:
            try:
                self._step(step, guest)
            except (AgentError, BedError, TimeoutError, LayoutError, RealModeError) as exc:
                self._flush(guest.feed)
                where = f"step {step.index + 1}" + (f" (line {step.line})" if step.line else "")
                msg = f"{where} {step.describe()}: {exc}"
                self.outcome.errors.append(msg)
                self._say({"type": "error", "nsid": step.nsid, "error": msg}, f"error: {msg}")
                log.debug("daemon log:%s", guest.agent.tail(8000))
                break
        self._flush(guest.feed)

    def _stop_agent(self, agent: AgentProcess) -> None:
        code = agent.stop()
        if code not in (0, None):
            self.outcome.errors.append(f"daemon exited with status {code}")

    def _coldplug(self, agent: AgentProcess) -> None:
        """Show what the daemon found at start.  The stream opens after coldplug, so the
        coldplug changes come from the daemon's history (control socket)."""
        records = agent.request({"cmd": "history", "limit": 0}).get("records", [])
        self._history = [r for r in records if r.get("coldplug")]
        for rec in self._history:
            self._say(rec, f"{self._stamp()} {describe_record(rec)}")

    # ----------------------------------------------------------------- steps
    def _inject(self, guest: _Guest, events: list[Event]) -> list[tuple[str, int | None]]:
        """Apply ``events`` in the bed; return the changes the daemon must report."""
        guest.bed.apply(events)
        expected: list[tuple[str, int | None]] = []
        for ev in events:
            if ev.device.silent:
                continue
            for change in guest.shadow.apply(ev.device.record(ev.action)):
                expected.append((change.type.value, change.nsid))
        return expected

    def _timeout(self, step: Step) -> float:
        return self.step_timeout or step.timeout

    def _step(self, step: Step, guest: _Guest) -> None:
        self._flush(guest.feed)
        where = f"line {step.line}" if step.line else f"step {step.index + 1}"
        self._say(
            {
                "type": "step",
                "nsid": step.nsid,
                "step": step.kind,
                "line": step.line,
                "index": step.index,
            },
            f"{self._stamp()} --- {step.describe()} ({where})",
        )
        handler = _HANDLERS["device" if step.kind in DEVICE_STEPS else step.kind]
        handler(self, step, guest)
        self._flush(guest.feed)

    def _device_step(self, step: Step, guest: _Guest) -> None:
        if guest.backing is not None and step.kind in ("resize", "change"):
            raise AgentError(f"{step.kind} is not supported with --real yet")
        self._cursor = len(guest.feed.snapshot())
        for events in step.phases(guest.bed.layout, self._prepare(guest.backing)):
            start = len(guest.feed.snapshot())
            expected = self._inject(guest, events)
            await_reaction(guest.feed, expected, start, self._timeout(step))
        if guest.backing is not None:
            guest.backing.release_detached(guest.bed.layout)

    def _reload(self, step: Step, guest: _Guest) -> None:
        text = step.policy_text or DEFAULT_POLICY
        if self.real and self._real_root:
            text = relocate_policy(text, policy_mount_root(text), self._real_root)
        self._mount_root = policy_mount_root(step.policy_text or DEFAULT_POLICY)
        guest.expect.mount_root = self._mount_root
        guest.policy_file.write_text(text, encoding="utf-8")
        start = len(guest.feed.snapshot())
        reply = guest.agent.request({"cmd": "reload"})
        guest.feed.wait(
            lambda r: r.get("type") in ("reloaded", "reload-failed"), self._timeout(step), start
        )
        if not reply.get("ok"):
            raise AgentError("reload refused: " + "; ".join(reply.get("errors") or []))

    def _eject(self, step: Step, guest: _Guest) -> None:
        timeout = self._timeout(step)
        start = len(guest.feed.snapshot())
        req: dict[str, Any] = {"cmd": "eject", "nsid": step.nsid, "timeout": timeout}
        if step.ctrl:
            req["ctrl"] = step.ctrl
        reply = guest.agent.request(req, timeout=timeout + 5)
        if reply.get("ok"):
            guest.feed.wait(_is(type="ejected", nsid=step.nsid), timeout, start)
            return
        self._say(
            {"type": "eject-refused", "nsid": step.nsid, "error": reply.get("error")},
            f"          eject refused: {reply.get('error')}",
        )

    def _wait_for(self, step: Step, guest: _Guest) -> None:
        guest.feed.wait(lambda r: _matches(r, step.match), self._timeout(step), self._cursor)

    def _expect(self, step: Step, guest: _Guest) -> None:
        self._flush(guest.feed)
        result = guest.expect.check(step)
        if result.ok:
            self.outcome.passed += 1
        else:
            self.outcome.failed += 1
        self._say(
            {
                "type": "expect",
                "nsid": step.nsid,
                "expect": step.expect,
                "args": dict(step.match),
                "ok": result.ok,
                "detail": result.detail,
                "line": step.line,
            },
            f"          expect {step.expect} {_args(step.match)}: "
            f"{'PASS' if result.ok else 'FAIL'} ({result.detail})",
        )


_HANDLERS: Mapping[str, Callable[[Simulation, Step, _Guest], None]] = {
    "device": Simulation._device_step,
    "reload": Simulation._reload,
    "eject": Simulation._eject,
    "wait-for": Simulation._wait_for,
    "expect": Simulation._expect,
}


def _is(**fields: Any) -> Callable[[Record], bool]:
    """A predicate: the record has every one of ``fields``."""

    def check(rec: Record) -> bool:
        return all(rec.get(k) == v for k, v in fields.items())

    return check


def await_reaction(
    feed: EventFeed, expected: list[tuple[str, int | None]], start: int, timeout: float
) -> None:
    """Wait for each expected change (in order), its plan and all its action results.

    ``expected`` lists (change type, nsid) in the order the daemon must report them.  Every
    change is followed by its plan (the daemon publishes one even when no rule matches), and
    a plan's actions each report one result under the plan's key.
    """
    index = start
    pending: dict[str, tuple[int, int]] = {}  # plan key -> (first plan index, actions)
    for ctype, nsid in expected:
        try:
            index, _rec = feed.wait(_is(type=ctype, nsid=nsid), timeout, index)
        except TimeoutError:
            raise TimeoutError(
                f"the daemon did not report {ctype} nsid={nsid} within {timeout:.0f}s"
            ) from None
        index, plan = feed.wait(_is(type="plan", change=ctype, nsid=nsid), timeout, index)
        key = str(plan.get("key"))
        first, count = pending.get(key, (index, 0))
        pending[key] = (first, count + len(plan.get("actions") or []))
        index += 1
    for key, (first, count) in pending.items():
        pos = first
        for _ in range(count):
            pos, _rec = feed.wait(_is(type="action-result", key=key), timeout, pos)
            pos += 1


def _matches(rec: Record, match: Any) -> bool:
    for key, want in match.items():
        got: Any = rec
        for part in str(key).split("."):
            got = got.get(part) if isinstance(got, dict) else None
        if got != want and str(got) != str(want):
            return False
    return True


def _args(match: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in match.items())


__all__ = [
    "CHANGE_TYPES",
    "Outcome",
    "Simulation",
    "await_reaction",
    "describe_record",
    "mounted_targets",
    "relocate_policy",
]
