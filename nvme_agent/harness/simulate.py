"""Run a scenario: the real daemon against a fake guest, step by step, with expectations.

:class:`Simulation` builds the bed (controllers and coldplug namespaces), starts the daemon
(``--dry-run`` unless real mode) and waits for ``READY=1``, subscribes to its event stream,
then executes the steps.  After every injection it waits for the daemon's visible reaction
instead of sleeping: the topology changes the step must cause (computed purely with the same
:class:`~nvme_agent.topology.tracker.Topology` on the same device records), the plan published for
each, and one action result per planned action.

Output goes to a callback as records (``type`` + ``nsid`` plus readable ``text``), so the
command can print a timeline or JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nvme_agent.harness.agent import AgentError, AgentProcess, EventFeed, environ_without_bed
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.expect import Expectations, mounted_targets
from nvme_agent.harness.layout import Event, Layout
from nvme_agent.harness.real import RealBacking
from nvme_agent.harness.scenario import Scenario, Step
from nvme_agent.policy.units import format_size
from nvme_agent.topology.changes import ChangeType
from nvme_agent.topology.tracker import Topology

log = logging.getLogger(__name__)

Record = dict[str, Any]
Emit = Callable[[Record, str | None], None]
CHANGE_TYPES = frozenset(t.value for t in ChangeType)
DEFAULT_POLICY = "version: 1\nrules: []\n"


@dataclass
class Outcome:
    """What a simulation ended with."""

    passed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors


def describe_record(rec: Record, specs: list[dict[str, Any]] | None = None) -> str:
    """One timeline line for an event-stream record."""
    kind = rec.get("type")
    if kind in CHANGE_TYPES:
        ns = rec.get("namespace") or {}
        part = rec.get("partition") or {}
        ctrl = rec.get("controller") or {}
        bits = [str(kind)]
        if ns:
            bits.append(f"nsid={ns.get('nsid')} {ns.get('name')}")
            if part:
                bits.append(f"partition={part.get('name')}")
            bits.append(f"id={ns.get('identity')}" + (" (weak)" if ns.get("identity_weak") else ""))
            fs = (part or ns).get("fs")
            if fs:
                bits.append(
                    f"fs={fs.get('type')}" + (f" label={fs['label']!r}" if fs.get("label") else "")
                )
            if ns.get("size_bytes") is not None:
                bits.append(f"size={format_size(ns['size_bytes'])}")
            if ns.get("devnode"):
                bits.append(f"dev={ns['devnode']}")
        elif ctrl:
            bits.append(
                f"{ctrl.get('name')} serial={ctrl.get('serial')} nqn={ctrl.get('subsysnqn')}"
            )
        if rec.get("reason"):
            bits.append(f"({rec['reason']})")
        if rec.get("coldplug"):
            bits.append("[coldplug]")
        return " ".join(bits)
    if kind == "plan":
        actions = rec.get("actions") or []
        if rec.get("rule") is None and not actions:
            return "  no rule matched: logged only"
        what = ", ".join(_action_text(a) for a in actions) or "no actions"
        return f"  rule {rec.get('rule')}: {what}"
    if kind == "action-result":
        spec = specs.pop(0) if specs else None
        target = f" {spec.get('target')}" if spec and spec.get("target") else ""
        msg = rec.get("error") or rec.get("message") or ""
        return f"    {rec.get('action')}{target}: {rec.get('status')}" + (
            f" ({msg})" if msg else ""
        )
    if kind in ("reloaded", "reload-failed", "ejected", "ready"):
        extra = {k: v for k, v in rec.items() if k not in ("type", "nsid")}
        return f"{kind} " + " ".join(f"{k}={v}" for k, v in extra.items())
    return f"{kind} {rec}"


def _action_text(spec: dict[str, Any]) -> str:
    kind = spec.get("kind")
    if kind == "mount":
        return f"mount {spec.get('source')} -> {spec.get('target')}"
    if kind == "unmount":
        gone = " (device gone)" if spec.get("device_gone") else ""
        return f"unmount {spec.get('source')}{gone}"
    if kind == "exec":
        return "exec " + " ".join(spec.get("argv") or [])
    if kind == "systemd":
        return f"systemctl {spec.get('verb')} {spec.get('unit')}"
    if kind == "signal":
        return f"signal {spec.get('signal')}"
    if kind == "grow":
        return f"grow {spec.get('source')}"
    return str(kind)


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
            self._say(
                rec,
                f"{self._stamp()} {text}"
                if rec.get("type") in CHANGE_TYPES
                else f"{' ' * 10}{text}",
            )
        self._printed = len(records)

    # ----------------------------------------------------------------- main
    def run(self) -> Outcome:
        """Execute the scenario; never raises for scenario failures (see :attr:`outcome`)."""
        with contextlib.ExitStack() as stack:
            tmp = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="nvme-agent-simulate-"))
            )
            backing: RealBacking | None = None
            policy_text = self.policy_text
            if self.real:
                self._real_root = str(tmp / "mnt")
                os.makedirs(self._real_root)
                policy_text = relocate_policy(policy_text, self._mount_root, self._real_root)
                backing = stack.enter_context(RealBacking(tmp / "images", self._real_root))
            policy_file = tmp / "policy.yaml"
            policy_file.write_text(policy_text, encoding="utf-8")
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
            bed = stack.enter_context(Bed(multipath=self.scenario.multipath))
            shadow = Topology()
            for ctrl in self.scenario.controllers:
                self._inject(bed, bed.layout.add_controller(ctrl), shadow, quiet=True)
            for ns in self.scenario.namespaces:
                if backing is not None:
                    ns = backing.back(ns, self._say)
                self._inject(bed, bed.layout.attach(ns), shadow, quiet=True)
            agent = AgentProcess(
                policy_file, bed.env(environ_without_bed()), dry_run=not self.real, workdir=tmp
            )
            stack.callback(self._stop_agent, agent)
            try:
                agent.start()
            except AgentError as exc:
                self.outcome.errors.append(str(exc))
                self._say({"type": "error", "nsid": None, "error": str(exc)}, f"error: {exc}")
                return self.outcome
            feed = EventFeed(agent.events_socket)
            stack.callback(feed.close)
            self._coldplug(agent)
            expect = Expectations(
                feed,
                self._history,
                real=self.real,
                real_root=self._real_root,
                mount_root=self._mount_root,
            )
            for step in self.scenario.steps:
                try:
                    self._step(step, bed, agent, feed, shadow, expect, backing, policy_file)
                except (AgentError, TimeoutError) as exc:
                    self._flush(feed)
                    where = f"step {step.index + 1}" + (f" (line {step.line})" if step.line else "")
                    msg = f"{where} {step.describe()}: {exc}"
                    self.outcome.errors.append(msg)
                    self._say({"type": "error", "nsid": step.nsid, "error": msg}, f"error: {msg}")
                    log.debug("daemon log:%s", agent.tail(8000))
                    break
            self._flush(feed)
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
    def _inject(
        self, bed: Bed, events: list[Event], shadow: Topology, *, quiet: bool = False
    ) -> list[tuple[str, int | None]]:
        """Apply ``events`` in the bed; return the changes the daemon must report."""
        bed.apply(events, quiet=quiet)
        expected: list[tuple[str, int | None]] = []
        for ev in events:
            if ev.device.silent and not quiet:
                continue
            for change in shadow.apply(ev.device.record(ev.action, coldplug=quiet)):
                expected.append((change.type.value, change.nsid))
        return expected

    def _step(
        self,
        step: Step,
        bed: Bed,
        agent: AgentProcess,
        feed: EventFeed,
        shadow: Topology,
        expect: Expectations,
        backing: RealBacking | None,
        policy_file: Path,
    ) -> None:
        self._flush(feed)
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
        timeout = self.step_timeout or step.timeout
        layout: Layout = bed.layout
        if step.kind in ("add", "remove", "hot-swap", "resize", "change", "burst"):
            if (
                backing is not None
                and step.kind in ("add", "hot-swap")
                and step.namespace is not None
            ):
                step = _with_namespace(step, backing.back(step.namespace, self._say))
            if backing is not None and step.kind in ("resize", "change"):
                raise AgentError(f"{step.kind} is not supported with --real yet")
            start = len(feed.snapshot())
            if backing is not None and step.kind == "burst" and step.namespace is not None:
                events = []
                for cfg in step.burst_configs(step.namespace):
                    events += layout.attach(backing.back(cfg, self._say))
            else:
                events = self.scenario.step_events(layout, step)
            expected = self._inject(bed, events, shadow)
            self._cursor = start
            await_reaction(feed, expected, start, timeout)
            if backing is not None and step.kind in ("remove", "hot-swap"):
                backing.release_detached(layout)
        elif step.kind == "reload":
            text = step.policy_text or DEFAULT_POLICY
            if self.real and self._real_root:
                text = relocate_policy(text, policy_mount_root(text), self._real_root)
            self._mount_root = policy_mount_root(step.policy_text or DEFAULT_POLICY)
            expect.mount_root = self._mount_root
            policy_file.write_text(text, encoding="utf-8")
            start = len(feed.snapshot())
            reply = agent.request({"cmd": "reload"})
            feed.wait(lambda r: r.get("type") in ("reloaded", "reload-failed"), timeout, start)
            if not reply.get("ok"):
                raise AgentError("reload refused: " + "; ".join(reply.get("errors") or []))
        elif step.kind == "eject":
            start = len(feed.snapshot())
            req: dict[str, Any] = {"cmd": "eject", "nsid": step.nsid, "timeout": timeout}
            if step.ctrl:
                req["ctrl"] = step.ctrl
            reply = agent.request(req, timeout=timeout + 5)
            if reply.get("ok"):
                feed.wait(
                    lambda r: r.get("type") == "ejected" and r.get("nsid") == step.nsid,
                    timeout,
                    start,
                )
            else:
                self._say(
                    {"type": "eject-refused", "nsid": step.nsid, "error": reply.get("error")},
                    f"          eject refused: {reply.get('error')}",
                )
        elif step.kind == "wait-for":
            feed.wait(lambda r: _matches(r, step.match), timeout, self._cursor)
        elif step.kind == "expect":
            self._flush(feed)
            result = expect.check(step)
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
        self._flush(feed)


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


def _with_namespace(step: Step, ns: Any) -> Step:
    import dataclasses

    return dataclasses.replace(step, namespace=ns)


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


__all__ = ["Outcome", "Simulation", "describe_record", "mounted_targets", "relocate_policy"]
