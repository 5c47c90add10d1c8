"""A seeded storm against the real daemon in the umockdev bed (issue 16).

:func:`schedule` turns a :class:`StormSpec` (seed and counts) into a fixed list of operations:
batches of namespace steps (add, remove, hot-swap, resize, change, adds with partitions) on up
to 64 namespaces across two controllers of two subsystems, policy reloads (some broken),
``kill -9`` with a batch sent while the daemon is down and a restart, and overruns (the next
batch's events are all lost, then ``ENOBUFS``).  The same seed always gives the same
operations, so a failure reproduces with its seed.

:class:`Storm` plays them against the daemon acting for real: a subset of namespaces is backed
by loop devices with real ext4 filesystems (the policy mounts those), the others are fake and
only run a hook.  At every checkpoint it checks, from outside the daemon:

* the mounts below the mount root are exactly those of present real namespaces, each once,
  and no directory is left there but theirs;
* every injected change is in the history exactly once (re-runs after a restart, which the
  daemon marks with their reason, aside);
* every add plan ran at most once per disk instance (a hook appends one line per run), more
  often only as a re-run after a restart;
* the daemon's fd count, thread count and RSS did not grow since the incarnation's first
  checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nvme_agent.actions import mountinfo
from nvme_agent.harness.agent import AgentProcess
from nvme_agent.harness.bed import Bed
from nvme_agent.harness.layout import ControllerConfig, Event, NamespaceConfig, PartitionConfig
from nvme_agent.harness.real import RealBacking
from nvme_agent.outputs.state import History
from nvme_agent.topology.records import SUBSYSTEMS
from support.daemon import Agent

Record = dict[str, Any]
Key = tuple[str, str, int, int]  # (change type, subsystem NQN, nsid, partition number or 0)

CONTROLLERS = (
    ControllerConfig("nvme0", serial="SNSTORM0", subsysnqn="nqn.2024-01.io.example:storm-a"),
    ControllerConfig("nvme1", serial="SNSTORM1", subsysnqn="nqn.2024-01.io.example:storm-b"),
)
NQN = {c.name: c.subsysnqn for c in CONTROLLERS}
NSIDS = 32  # per controller: 64 namespaces in all
REAL_MAX = 6  # namespaces backed by a loop device at once
MIB = 1 << 20

#: Labels a disk may carry that must never lead anywhere (the fake ones are never mounted;
#: the real one must be mounted at its one safe component).
HOSTILE_FAKE = ("f/../../etc", "f$(reboot)", "f\n<0>forged", "f\x1b[2J", "f..")
HOSTILE_REAL = "r/../x"  # + a tag: the directory of its mount must be r_.._x<tag>

#: One line per hook run: which plan ran for which disk instance, and why.
HOOK = (
    "[/bin/sh, -c, 'echo \"$NVME_AGENT_EVENT|$NVME_SUBSYSNQN|$NVME_NSID|$NVME_PARTN|"
    '$ID_FS_UUID|$NVME_AGENT_REASON" >> "$0"\', "@LOG@"]'
)
POLICY = """\
version: 1
defaults:
  mount_root: @ROOT@
@DEFAULTS@rules:
  - name: @REAL@
    match: {fs_type: ext4, fs_label: "r*", partition: false}
    on_add:
      - mount: {path: "@ROOT@/{label}"}
      - exec: {argv: @HOOK@}
  - name: parts
    match: {partition: true}
    on_add:
      - exec: {argv: @HOOK@}
  - name: fake
    match: {fs_label: "f*"}
@FAKE@
"""
FAKE_HOOK = "    on_add:\n      - exec: {argv: @HOOK@}"
VALID = {
    "a": {"@REAL@": "real", "@DEFAULTS@": "", "@FAKE@": FAKE_HOOK},
    "b": {
        "@REAL@": "real-b",
        "@DEFAULTS@": "  mount_options: [nodev, nosuid]\n",
        "@FAKE@": FAKE_HOOK,
    },
    "c": {"@REAL@": "real", "@DEFAULTS@": "", "@FAKE@": "    ignore: true"},
}
#: Broken policies and what breaks them (a reload keeps the old policy).
BROKEN = {
    "unknown-key": ("fs_type: ext4, fs_label", "fs_typo: ext4, fs_label"),
    "yaml-syntax": ("rules:\n", "rules: [\n"),
    "path-outside-root": ('path: "@ROOT@/{label}"', 'path: "/etc/{label}"'),
}
RERUN_REASONS = ("interrupted by the last run", "policy changed since the last run")


def policy_text(variant: str, root: Path, log: Path) -> str:
    text = POLICY
    if variant in BROKEN:
        old, new = BROKEN[variant]
        text = text.replace(old, new)
        variant = "a"
    for key, value in VALID[variant].items():
        text = text.replace(key, value)
    return text.replace("@HOOK@", HOOK).replace("@ROOT@", str(root)).replace("@LOG@", str(log))


# --------------------------------------------------------------------------- the schedule
@dataclass(frozen=True)
class StormSpec:
    """What a storm tries; the same spec always gives the same operations."""

    seed: int
    steps: int
    reloads: int
    broken: int
    kills: int
    overruns: int
    checkpoints: int
    real_max: int = REAL_MAX

    def describe(self) -> str:
        return (
            f"seed {self.seed}: {self.steps} steps, {self.reloads} reloads ({self.broken} "
            f"broken), {self.kills} kill -9, {self.overruns} overruns, "
            f"{self.checkpoints} checkpoints"
        )


#: The storm of ``make test``: a few minutes on a 2-core machine.
SHORT = StormSpec(seed=1616, steps=240, reloads=4, broken=2, kills=1, overruns=1, checkpoints=4)
#: The storm of ``make soak`` (issue 16's numbers).
SOAK = StormSpec(seed=16, steps=10_000, reloads=20, broken=6, kills=5, overruns=2, checkpoints=25)


@dataclass(frozen=True)
class Step:
    kind: str  # add, remove, hot-swap, resize, change
    ctrl: str
    nsid: int
    config: NamespaceConfig | None = None  # the new contents (add, hot-swap, change)
    old: NamespaceConfig | None = None  # the contents before (remove, hot-swap, change)
    size: int = 0
    real: bool = False


@dataclass(frozen=True)
class Op:
    kind: str  # batch, overrun, kill, reload, checkpoint
    steps: tuple[Step, ...] = ()
    down: tuple[Step, ...] = ()  # kill: the batch sent while the daemon is down
    variant: str = ""


@dataclass
class _Model:
    rng: random.Random
    real_max: int
    present: dict[tuple[str, int], NamespaceConfig] = field(default_factory=dict)
    real: set[tuple[str, int]] = field(default_factory=set)
    generation: Counter[tuple[str, int]] = field(default_factory=Counter)

    def _config(self, ctrl: str, nsid: int, real: bool) -> NamespaceConfig:
        slot = (ctrl, nsid)
        self.generation[slot] += 1
        gen = self.generation[slot]
        tag = f"{ctrl[-1]}n{nsid}g{gen}"
        rng = self.rng
        if real:
            label = f"{HOSTILE_REAL}{tag}" if rng.random() < 0.05 else f"r{tag}"
            return NamespaceConfig(
                ctrl, nsid=nsid, size_bytes=64 * MIB, fs="ext4", label=label, generation=gen
            )
        parts: tuple[PartitionConfig, ...] = ()
        if rng.random() < 0.2:
            parts = tuple(
                PartitionConfig(n, 32 * MIB, fs="ext4", label=f"p{n}")
                for n in range(1, rng.randint(1, 3) + 1)
            )
        fs = rng.choice(("ext4", "xfs", "ext4", None))
        label = rng.choice(HOSTILE_FAKE) if rng.random() < 0.05 else f"f{tag}"
        return NamespaceConfig(
            ctrl,
            nsid=nsid,
            size_bytes=rng.choice((1, 2, 4)) << 30,
            fs=fs,
            label=label if fs else None,
            partitions=parts,
            generation=gen,
        )

    def step(self, ctrl: str, nsid: int) -> Step:
        slot = (ctrl, nsid)
        rng = self.rng
        old = self.present.get(slot)
        if old is None:
            real = len(self.real) < self.real_max and rng.random() < 0.3
            new = self._config(ctrl, nsid, real)
            self.present[slot] = new
            if real:
                self.real.add(slot)
            return Step("add", ctrl, nsid, config=new, real=real)
        real = slot in self.real
        kind = rng.choice(("remove", "remove", "hot-swap", "resize", "change"))
        if kind == "change" and (real or old.partitions):
            kind = "resize"
        if kind == "remove":
            del self.present[slot]
            self.real.discard(slot)
            return Step("remove", ctrl, nsid, old=old, real=real)
        if kind == "hot-swap":
            new = self._config(ctrl, nsid, real)
            self.present[slot] = new
            return Step("hot-swap", ctrl, nsid, config=new, old=old, real=real)
        if kind == "resize":
            size = old.size_bytes + rng.choice((1, 2)) * (64 * MIB)
            self.present[slot] = replace(old, size_bytes=size)
            return Step("resize", ctrl, nsid, old=old, size=size, real=real)
        self.generation[slot] += 1
        fs = rng.choice(("ext4", "xfs"))
        new = replace(old, fs=fs, label=f"f{ctrl[-1]}n{nsid}g{self.generation[slot]}c")
        self.present[slot] = new
        return Step("change", ctrl, nsid, config=new, old=old)

    def batch(self, size: int) -> tuple[Step, ...]:
        slots = self.rng.sample(
            [(c.name, n) for c in CONTROLLERS for n in range(1, NSIDS + 1)], size
        )
        return tuple(self.step(c, n) for c, n in slots)


def schedule(spec: StormSpec) -> list[Op]:
    """The storm's operations, from the seed alone."""
    rng = random.Random(spec.seed)
    model = _Model(rng, spec.real_max)
    sizes: list[int] = []
    total = 0
    while total < spec.steps:
        size = min(rng.randint(1, 6), spec.steps - total)
        sizes.append(size)
        total += size
    n = len(sizes)
    faults: dict[int, str] = {}
    kinds = ["kill"] * spec.kills + ["overrun"] * spec.overruns + ["reload"] * spec.reloads
    for kind, index in zip(kinds, rng.sample(range(2, n), len(kinds)), strict=True):
        faults[index] = kind
    broken = set(rng.sample([i for i, k in faults.items() if k == "reload"], spec.broken))
    checkpoints = {round(n * (i + 1) / spec.checkpoints) - 1 for i in range(spec.checkpoints)}
    ops: list[Op] = []
    for index, size in enumerate(sizes):
        kind = faults.get(index, "batch")
        if kind == "reload":
            variant = rng.choice(sorted(BROKEN) if index in broken else sorted(VALID))
            ops.append(Op("reload", variant=variant))
            kind = "batch"
        steps = model.batch(size)
        if kind == "kill":
            ops.append(Op("kill", steps=steps, down=model.batch(rng.randint(1, 6))))
        else:
            ops.append(Op(kind, steps=steps))
        if index in checkpoints:
            ops.append(Op("checkpoint"))
    return ops


def counts(ops: list[Op]) -> Counter[str]:
    """What a schedule tries: steps by kind, faults, checkpoints."""
    tally: Counter[str] = Counter()
    for op in ops:
        if op.kind == "reload":
            tally["reload (broken)" if op.variant in BROKEN else "reload"] += 1
        elif op.kind in ("kill", "overrun", "checkpoint"):
            tally[op.kind] += 1
        for step in (*op.steps, *op.down):
            tally["steps"] += 1
            tally[step.kind] += 1
            if step.config is not None and step.config.partitions and step.kind != "change":
                tally["with partitions"] += 1
            if step.real and step.kind in ("add", "hot-swap"):
                tally["real mounts"] += 1
            label = step.config.label if step.config is not None else None
            if label in HOSTILE_FAKE or (label or "").startswith(HOSTILE_REAL):
                tally["hostile labels"] += 1
    return tally


# --------------------------------------------------------------------------- expectations
def expected_changes(step: Step) -> list[Key]:
    nqn = NQN[step.ctrl]

    def added(cfg: NamespaceConfig) -> list[Key]:
        return [("namespace-added", nqn, step.nsid, 0)] + [
            ("partition-added", nqn, step.nsid, p.number) for p in cfg.partitions
        ]

    def removed(cfg: NamespaceConfig) -> list[Key]:
        return [("partition-removed", nqn, step.nsid, p.number) for p in cfg.partitions] + [
            ("namespace-removed", nqn, step.nsid, 0)
        ]

    if step.kind == "add":
        assert step.config is not None
        return added(step.config)
    if step.kind == "remove":
        assert step.old is not None
        return removed(step.old)
    if step.kind == "hot-swap":
        assert step.config is not None and step.old is not None
        return removed(step.old) + added(step.config)
    if step.kind == "resize":
        return [("namespace-resized", nqn, step.nsid, 0)]
    return [("namespace-changed", nqn, step.nsid, 0)]


def change_key(record: Record) -> Key | None:
    """The key of a change record (history or event stream), None for other records."""
    ns = record.get("namespace")
    if not isinstance(ns, dict) or not str(record.get("type", "")).startswith(
        ("namespace-", "partition-")
    ):
        return None
    part = record.get("partition") or {}
    return (str(record["type"]), str(ns.get("subsysnqn")), int(ns["nsid"]), part.get("number") or 0)


def is_rerun(record: Record) -> bool:
    return any(r in str(record.get("reason") or "") for r in RERUN_REASONS)


def mount_name(label: str) -> str:
    """The one path component a label renders to (what the README promises for ``/``)."""
    return label.replace("/", "_")


def resources(pid: int) -> dict[str, int]:
    """The daemon's open fds, threads and resident memory (KiB)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"].strip()),
        "rss_kib": int(fields["VmRSS"].split()[0]),
    }


def fd_targets(pid: int) -> Counter[str]:
    """What the daemon's fds point at (sockets and pipes by kind: their inodes differ)."""
    out: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        out[target.split(":[", 1)[0] if ":[" in target else target] += 1
    return out


# --------------------------------------------------------------------------- the driver
class StormAgent(AgentProcess):
    """The real daemon through ``storm_agent.py`` (the monitor can be made to overrun)."""

    def command(self) -> list[str]:
        script = Path(__file__).with_name("storm_agent.py")
        return [sys.executable, str(script), *super().command()[3:]]


class StormError(AssertionError):
    pass


@dataclass
class Figures:
    """What a storm measured (written to JSON by the soak)."""

    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    history_records: int = 0
    reruns: int = 0
    hook_runs: int = 0
    mounts_max: int = 0
    seconds: float = 0.0
    #: Checkpoints whose fd count was above the incarnation's first and back at it after a
    #: second settle (an action or answer in flight at the sample, not a leak).
    fd_rechecks: int = 0


class Storm:
    """Plays a schedule against the daemon in ``bed``; see the module docstring."""

    WAIT = 120.0

    def __init__(
        self, spec: StormSpec, bed: Bed, backing: RealBacking, root: Path, work: Path
    ) -> None:
        self.spec = spec
        self.bed = bed
        self.backing = backing
        self.root = root
        self.work = work
        self.hook_log = work / "hooks.log"
        self.hook_log.touch()
        self.policy = work / "policy.yaml"
        self.policy_variant = "a"
        self.policy.write_text(policy_text("a", root, self.hook_log))
        self.agent_dir = work / "agent"
        self.agent_dir.mkdir()
        self.trigger = work / "overrun"
        self.env = bed.env(os.environ) | {"NVME_AGENT_TEST_OVERRUN": str(self.trigger)}
        self.agent: Agent | None = None
        self.incarnation = 0
        self._fds_first: Counter[str] = Counter()  # the incarnation's first checkpoint's
        self.window: list[Key] = []  # injected changes since the last checkpoint
        self.history_mark: list[Record] = []  # the history's last records at that checkpoint
        self.present: dict[tuple[str, int], NamespaceConfig] = {}
        self.real: set[tuple[str, int]] = set()
        self.restarts = 0
        self.figures = Figures()
        self.op_index = 0
        self.started = time.monotonic()

    # -------------------------------------------------------------- life of the daemon
    def start(self) -> None:
        agent = Agent(self.policy, self.agent_dir, self.env, dry_run=False)
        agent.process = StormAgent(self.policy, self.env, dry_run=False, workdir=self.agent_dir)
        self.agent = agent.start()
        self.incarnation += 1

    def stop(self) -> int | None:
        agent, self.agent = self.agent, None
        return agent.stop() if agent is not None else None

    def fail(self, message: str) -> StormError:
        tail = self.agent.process.tail() if self.agent is not None else ""
        return StormError(
            f"storm {self.spec.describe()}, operation #{self.op_index}: {message}{tail}"
        )

    # -------------------------------------------------------------- operations
    def run(self, ops: list[Op]) -> Figures:
        self.started = started = time.monotonic()
        self.start()
        self.history_mark = self._history()[-3:]
        for self.op_index, op in enumerate(ops):
            try:
                getattr(self, "_" + op.kind)(op)
            except StormError:
                raise
            except Exception as exc:  # the bed, a timeout...: still named by seed and op
                raise self.fail(f"{op.kind}: {type(exc).__name__}: {exc}") from exc
        self._checkpoint(Op("checkpoint"))
        self.figures.seconds = round(time.monotonic() - started, 1)
        return self.figures

    def _events(self, steps: tuple[Step, ...]) -> list[Event]:
        layout = self.bed.layout
        events: list[Event] = []
        for step in steps:
            slot = (step.ctrl, step.nsid)
            if step.kind in ("remove", "hot-swap"):
                events += layout.detach(step.ctrl, step.nsid)
            if step.kind in ("add", "hot-swap"):
                cfg = step.config
                assert cfg is not None
                if step.real:
                    cfg = self.backing.back(cfg, lambda record, text: None)
                events += layout.attach(cfg)
                self.present[slot] = cfg
                if step.real:
                    self.real.add(slot)
            elif step.kind == "remove":
                del self.present[slot]
                self.real.discard(slot)
            elif step.kind == "resize":
                events += layout.resize(step.ctrl, step.nsid, step.size)
            elif step.kind == "change":
                assert step.config is not None
                events += layout.change(
                    step.ctrl, step.nsid, fs=step.config.fs, label=step.config.label
                )
                self.present[slot] = layout.config(step.ctrl, step.nsid)
        return events

    def _send(self, steps: tuple[Step, ...]) -> list[Event]:
        events = self._events(steps)
        self.bed.apply(events)
        self.backing.release_detached(self.bed.layout)  # the disk is gone: so is its loop
        for step in steps:
            self.window += expected_changes(step)
        return events

    def _wait_changes(self, keys: list[Key]) -> None:
        assert self.agent is not None
        left = Counter(keys)

        def wanted(record: Record) -> bool:
            key = change_key(record)
            return key is not None and left[key] > 0

        while +left:
            try:
                record = self.agent.wait_for(wanted, self.WAIT)
            except TimeoutError:
                raise self.fail(f"changes not seen on the event stream: {sorted(+left)}") from None
            key = change_key(record)
            assert key is not None
            left[key] -= 1

    def _batch(self, op: Op) -> None:
        self._send(op.steps)
        self._wait_changes([k for s in op.steps for k in expected_changes(s)])

    def _overrun(self, op: Op) -> None:
        layout_events = self._events(op.steps)
        lost = sum(
            1 for e in layout_events if not e.device.silent and e.device.subsystem in SUBSYSTEMS
        )
        self.trigger.write_text(str(lost))
        self.bed.apply(layout_events)
        self.backing.release_detached(self.bed.layout)
        keys = [k for s in op.steps for k in expected_changes(s)]
        self.window += keys
        self._wait_changes(keys)  # found again by the re-enumeration
        done = self.trigger.with_name(self.trigger.name + ".done")
        if not done.exists():
            raise self.fail("the overrun was not injected")
        done.unlink()

    def _kill(self, op: Op) -> None:
        assert self.agent is not None and self.agent.proc is not None
        keys = [k for s in op.steps for k in expected_changes(s)]
        self._send(op.steps)
        self._wait_changes(keys[:1])  # mid-burst: the daemon is handling the batch
        self.agent.proc.send_signal(signal.SIGKILL)
        self.agent.kill()
        self.agent = None
        self._send(op.down)  # while the agent is down
        self.restarts += 1
        self.start()

    def _reload(self, op: Op) -> None:
        assert self.agent is not None
        self.policy.write_text(policy_text(op.variant, self.root, self.hook_log))
        answer = self.agent.control({"cmd": "reload"})
        if op.variant in BROKEN:
            if answer.get("ok") or answer.get("reason") != "invalid-policy":
                raise self.fail(f"broken policy {op.variant} was not refused: {answer}")
            # the operator puts the file in force back: a restart must find a valid policy
            self.policy.write_text(policy_text(self.policy_variant, self.root, self.hook_log))
        elif not answer.get("ok"):
            raise self.fail(f"valid policy {op.variant} was refused: {answer}")
        else:
            self.policy_variant = op.variant

    # -------------------------------------------------------------- checks
    def _checkpoint(self, op: Op) -> None:
        assert self.agent is not None and self.agent.proc is not None
        settled = self.agent.control({"cmd": "settle", "timeout": self.WAIT}, self.WAIT + 10)
        if not settled.get("ok"):
            raise self.fail(f"the daemon did not settle: {settled}")
        self._check_mounts()
        self._check_history()
        self._check_hooks()
        self._quiet_control()
        sample = resources(self.agent.proc.pid) | {
            "incarnation": self.incarnation,
            "op": self.op_index,
            "namespaces": len(self.present),
            "mounted": len(self.real),
            "seconds": round(time.monotonic() - self.started, 1),
        }
        self.figures.checkpoints.append(sample)
        self.figures.mounts_max = max(self.figures.mounts_max, len(self.real))
        if not any(c["incarnation"] == self.incarnation for c in self.figures.checkpoints[:-1]):
            self._fds_first = fd_targets(self.agent.proc.pid)
        self._check_resources()

    def _quiet_control(self) -> None:
        """One last request, read until the daemon closed its end: the connections of the
        checks above are then gone from its fd table too (the daemon closes a connection
        after its answer, a moment after the client has read the answer line)."""
        assert self.agent is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.WAIT)
            sock.connect(self.agent.process.control_socket)
            sock.sendall(b'{"cmd": "status"}\n')
            while sock.recv(1 << 16):
                pass

    def _check_mounts(self) -> None:
        expected = {}
        for slot in self.real:
            cfg = self.present[slot]
            assert cfg.label is not None
            expected[str(self.root / mount_name(cfg.label))] = cfg.devname
        below = [
            (m.mountpoint, m.source)
            for m in mountinfo.read()
            if m.mountpoint.startswith(str(self.root) + "/")
        ]
        targets = [t for t, _ in below]
        doubled = sorted({t for t in targets if targets.count(t) > 1})
        if doubled:
            raise self.fail(f"mounted more than once: {doubled}")
        if dict(below) != expected:
            raise self.fail(
                f"mounts {sorted(below)} are not the expected {sorted(expected.items())}"
            )
        left = sorted(set(os.listdir(self.root)) - {Path(t).name for t in expected})
        if left:
            raise self.fail(f"directories left behind in the mount root: {left}")

    def _history(self) -> list[Record]:
        return list(History(self.agent_dir / "state" / "history.jsonl").read())

    def _check_history(self) -> None:
        records = self._history()
        start = _after(records, self.history_mark)
        if start is None:
            raise self.fail("the history lost the records of the last checkpoint")
        window = records[start:]
        self.history_mark = records[-3:]
        reruns = [r for r in window if is_rerun(r)]
        got = Counter(k for r in window if not is_rerun(r) and (k := change_key(r)) is not None)
        want = Counter(self.window)
        self.window = []
        self.figures.history_records += sum(got.values())
        self.figures.reruns += len(reruns)
        if got != want:
            missing, extra = sorted((want - got).items()), sorted((got - want).items())
            raise self.fail(
                f"history is not the injected changes: missing {missing}, extra {extra}"
            )
        for record in reruns:
            key = change_key(record)
            if key is None or key[0] not in ("namespace-added", "partition-added"):
                raise self.fail(f"a re-run that is not an add: {record}")

    def _check_hooks(self) -> None:
        runs: dict[str, list[str]] = {}
        for line in self.hook_log.read_text().splitlines():
            event, nqn, ns, partn, uuid, reason = line.split("|", 5)
            runs.setdefault(f"{event}|{nqn}|{ns}|{partn}|{uuid}", []).append(reason)
        self.figures.hook_runs = sum(len(v) for v in runs.values())
        for what, reasons in runs.items():
            again = [r for r in reasons[1:] if not any(x in r for x in RERUN_REASONS)]
            if len(reasons) > 1 + self.restarts or again:
                raise self.fail(f"the plan for {what} ran {len(reasons)} times: {reasons}")
        for ctrl, nsid in self.real:
            uuid = self.bed.layout.disk(ctrl, nsid).properties.get("ID_FS_UUID", "")
            if f"namespace-added|{NQN[ctrl]}|{nsid}||{uuid}" not in runs:
                raise self.fail(f"the add plan of nsid {nsid} on {ctrl} never ran")

    def _check_resources(self) -> None:
        mine = [c for c in self.figures.checkpoints if c["incarnation"] == self.incarnation]
        if len(mine) < 2:
            return
        first, last = mine[0], mine[-1]
        if last["fds"] > first["fds"]:
            self._fds_grew(first["fds"], last["fds"], mine)
        if last["threads"] > max(first["threads"], THREADS_MAX):
            raise self.fail(f"threads grew past the pools: {[c['threads'] for c in mine]}")
        if last["rss_kib"] > first["rss_kib"] + RSS_SLACK_KIB:
            raise self.fail(f"RSS grew: {[c['rss_kib'] for c in mine]} KiB")

    def _fds_grew(self, first: int, last: int, mine: list[dict[str, Any]]) -> None:
        """Measured again after a second settle: an fd of an action or answer still in
        flight at the sample is gone then; one that stays is a leak, named by its kind."""
        assert self.agent is not None and self.agent.proc is not None
        self.agent.control({"cmd": "settle", "timeout": self.WAIT}, self.WAIT + 10)
        self._quiet_control()
        now = fd_targets(self.agent.proc.pid)
        if sum(now.values()) <= first:
            self.figures.fd_rechecks += 1
            mine[-1]["fds"] = sum(now.values())
            return
        grown = dict(now - self._fds_first)
        raise self.fail(f"fds grew: {first} -> {last}, then {sum(now.values())}: {grown} ({mine})")


#: The loop, the runner's pool (4), asyncio's default executor (6 on 2 cores), the reload
#: worker and a hook's two output readers: threads beyond these would be a leak.
THREADS_MAX = 1 + 4 + 6 + 1 + 2
#: RSS noise between two quiescent checkpoints of one daemon (allocator, caches).
RSS_SLACK_KIB = 4096


def _after(records: list[Record], mark: list[Record]) -> int | None:
    """The index right after the last occurrence of ``mark`` (the last records the previous
    checkpoint saw) in ``records``; 0 when there was no mark."""
    if not mark:
        return 0
    n = len(mark)
    for end in range(len(records), n - 1, -1):
        if records[end - n : end] == mark:
            return end
    return None


@contextlib.contextmanager
def storm_rig(tmp_path: Path, spec: StormSpec) -> Iterator[Callable[[], Storm]]:
    """A bed with two controllers, loop backing and a mount root; yields a Storm factory."""
    from support.daemon import real_mount_root

    with (
        real_mount_root() as root,
        Bed(multipath=True) as bed,
        RealBacking(tmp_path / "images", str(root)) as backing,
    ):
        for ctrl in CONTROLLERS:
            bed.add_controller(ctrl, quiet=True)
        storm: list[Storm] = []

        def make() -> Storm:
            storm.append(Storm(spec, bed, backing, root, tmp_path))
            return storm[0]

        try:
            yield make
        finally:
            for s in storm:
                s.stop()


def machine() -> dict[str, Any]:
    """What the figures were measured on (they mean little without it)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "cpus": os.cpu_count() or 0,
        "cpu": cpu,
        "mem_mib": int(mem) // 1024,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_figures(path: Path, spec: StormSpec, ops: list[Op], figures: Figures) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "spec": spec.__dict__,
        "tried": dict(counts(ops)),
        "figures": figures.__dict__,
        "machine": machine(),
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
