"""Daemon figures: the real ``nvme-agent run`` (dry run) in a umockdev bed.

What is measured is the daemon's own part, from a uevent datagram leaving the load generator
(:mod:`benchmarks.wire`: the bed's datagrams, recorded once, replayed at full speed into the
daemon's monitor socket) to the plan line on its event stream.  Each baseline is a bare
``pyudev`` monitor (:mod:`benchmarks.baremonitor`) receiving the very same datagrams through
the same kind of socket, its acknowledgement read the same way.

Phases, on one bed with the sysfs tree written beforehand without events ("quietly"):

1. record: the bed attaches every namespace once (the burst's datagrams) and detaches a few
   (the remove datagrams of the latency cycles);
2. baseline: the bare monitor gets the burst;
3. daemon: the same burst (every plan decided, none lost), its memory after it, then the
   remove/add cycles one at a time, each sent to the bare monitor (still running) just before
   the daemon, the daemon settled first, so a slow moment of the machine hits both; then
   reloads of fresh large policies with no events, alternated with others of the same size
   while cycles keep flowing;
4. coldplug: every namespace present, daemon start until ``READY=1``, against a bare
   enumeration in a fresh process, alternated three times (medians);
5. idle: a daemon that knows ``idle_namespaces`` namespaces, watched doing nothing.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.inprocess import MOUNT_ROOT, policy_text
from benchmarks.report import Figure, Report, summary
from benchmarks.wire import PLAN, RECORDER_NAME, EventTap, LineTap, Recorder, Sender, describe
from nvme_agent.harness.agent import AgentProcess, environ_without_bed
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, Event, NamespaceConfig
from nvme_agent.topology.records import SUBSYSTEMS

REPO = Path(__file__).resolve().parents[1]
#: Namespaces whose disk is removed and re-added, one event at a time, for the latencies.
CYCLE_NAMESPACES = 20
MiB = 1 << 20
TIMEOUT = 120.0
#: A bed request writes the sysfs tree of every namespace in it: minutes for a thousand.
BED_TIMEOUT = 900.0
#: Seconds between the last request to an idle daemon and the start of its idle window.
GRACE = 1.0


def plan_for(change: str, nsid: int | None = None) -> Callable[[Any], bool]:
    def match(record: Any) -> bool:
        return (
            isinstance(record, dict)
            and record.get("type") == "plan"
            and record.get("change") == change
            and (nsid is None or record.get("nsid") == nsid)
        )

    return match


@dataclass
class Cycle:
    """The disk datagrams of one namespace: its removal, then its addition."""

    nsid: int
    remove: bytes
    add: bytes


@dataclass
class Run:
    """Latencies (ns) of one receiver, and the burst's times."""

    remove: list[int] = field(default_factory=list)
    add: list[int] = field(default_factory=list)
    burst_total: float | None = None  # first datagram sent -> last one handled (s)
    burst_after_last: float | None = None  # last datagram sent -> last one handled (s)
    burst_handled: int = 0

    @property
    def all(self) -> list[float]:
        return [x / 1e6 for x in self.remove + self.add]  # ms


class ProfiledAgent(AgentProcess):
    """The daemon, under ``cProfile`` when ``profile`` names an output file."""

    def __init__(self, *args: Any, profile: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile

    def command(self) -> list[str]:
        cmd = super().command()
        if self.profile is None:
            return cmd
        return [cmd[0], "-m", "cProfile", "-o", str(self.profile), *cmd[1:]]


class Rig:
    """One bed with ``count`` namespaces' worth of recorded datagrams."""

    def __init__(
        self,
        bed: Bed,
        tmp: Path,
        count: int,
        profile: Path | None = None,
        state_root: Path | None = None,
    ) -> None:
        self.bed = bed
        self.tmp = tmp
        self.state_root = state_root
        self.profile = profile
        self.env = bed.env(environ_without_bed())
        bed.add_controller(ControllerConfig("nvme0", serial="SNBENCH"))
        self.configs = [
            NamespaceConfig("nvme0", nsid=1 + i, fs="ext4", label=f"b{i}") for i in range(count)
        ]
        self.burst: list[bytes] = []
        self.cycles: list[Cycle] = []
        self.teardown: list[bytes] = []  # every namespace's removal (record(teardown=True))
        # A dry run's: never created, nothing is mounted (the mount figures set their own).
        self.mount_root = MOUNT_ROOT

    # ------------------------------------------------------------------ sysfs without events
    def quiet_attach(self, configs: list[NamespaceConfig]) -> None:
        events: list[Event] = []
        for cfg in configs:
            events += self.bed.layout.attach(cfg)
        self.bed.apply(events, quiet=True)

    def quiet_detach(self, configs: list[NamespaceConfig]) -> None:
        events: list[Event] = []
        for cfg in configs:
            events += self.bed.layout.detach(cfg.ctrl, cfg.nsid)
        self.bed.apply(events, quiet=True)

    # ------------------------------------------------------------------ recording
    def record(self, *, teardown: bool = False) -> None:
        """The burst's datagrams and the cycles'; leaves no namespace in sysfs.

        ``teardown``: also every namespace's removal (all its datagrams, not only the
        disk's), for figures that take the burst back and send it again."""
        subset = self.configs[:CYCLE_NAMESPACES]
        removals: list[bytes] = []
        with Recorder(str(self.bed.root)) as rec:
            events: list[Event] = []
            for cfg in self.configs:
                events += self.bed.layout.attach(cfg)
            self.burst = rec.take(len(self.bed.apply(events)))
            adds = {_nsid(d): d for d in self.burst if _is_disk(d, "add")}
            for cfg in subset:
                detach = self.bed.layout.detach(cfg.ctrl, cfg.nsid)
                sent = rec.take(len(self.bed.apply(detach)))
                remove = next(d for d in sent if _is_disk(d, "remove"))
                self.cycles.append(Cycle(cfg.nsid, remove, adds[cfg.nsid]))
                removals += sent
            if teardown:
                events = []
                for cfg in self.configs[CYCLE_NAMESPACES:]:
                    events += self.bed.layout.detach(cfg.ctrl, cfg.nsid)
                if events:
                    removals += rec.take(len(self.bed.apply(events)))
                self.teardown = removals
        if not teardown:
            self.quiet_attach(subset)
            self.quiet_detach(self.configs)

    def listener(self, before: set[str]) -> str:
        new = set(self.bed.listeners()) - before - {RECORDER_NAME}
        if len(new) != 1:
            raise RuntimeError(f"expected one new monitor socket in the bed, found {sorted(new)}")
        return os.path.join(str(self.bed.root), new.pop())

    # ------------------------------------------------------------------ receivers
    @contextlib.contextmanager
    def bare_monitor(self) -> Iterator[BareMonitor]:
        """The baseline's receiver, running until the end of the ``with``."""
        before = set(self.bed.listeners())
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.baremonitor"],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            tap = LineTap(proc.stdout)
            tap.wait(lambda line: line == "ready", 0, 30)
            sender = Sender(self.listener(before))
            try:
                yield BareMonitor(self, sender, tap)
            finally:
                sender.close()
        finally:
            proc.terminate()
            proc.wait()

    def write_policy(self, name: str, rules: int, variant: int = 0) -> Path:
        path = self.tmp / name
        path.write_text(policy_text(rules, self.mount_root, variant))
        path.chmod(0o644)
        return path

    def start_agent(self, name: str, policy: Path, *, dry_run: bool = True) -> AgentProcess:
        """A daemon in ``tmp/name``, its state directory below ``state_root`` if given."""
        workdir = self.tmp / name
        workdir.mkdir()
        profile = None
        if self.profile is not None:
            self.profile.mkdir(parents=True, exist_ok=True)
            profile = self.profile / f"daemon-{name}.prof"
        agent = ProfiledAgent(
            policy,
            self.env,
            dry_run=dry_run,
            workdir=workdir,
            state_dir=self.state_root / name if self.state_root is not None else None,
            profile=profile,
        )
        return agent.start(TIMEOUT)


@dataclass
class BareMonitor:
    """A bare ``pyudev`` monitor in its own process (:mod:`benchmarks.baremonitor`)."""

    rig: Rig
    sender: Sender
    tap: LineTap

    def burst(self) -> Run:
        """The whole burst, with every namespace in sysfs for it, and none after it."""
        self.rig.quiet_attach(self.rig.configs)
        try:
            wanted = sum(1 for d in self.rig.burst if describe(d).get("SUBSYSTEM") in SUBSYSTEMS)
            run = Run()
            _burst(self.sender, self.rig.burst, self.tap, lambda _line: True, wanted, run)
            return run
        finally:
            self.rig.quiet_detach(self.rig.configs)

    def cycle(self, cycle: Cycle, run: Run) -> None:
        """One removal and addition (their namespace must be in sysfs)."""
        for datagram, kind, out in (
            (cycle.remove, "remove block ", run.remove),
            (cycle.add, "add block ", run.add),
        ):
            start = len(self.tap)
            sent = self.sender.send(datagram)
            _, stamp, _ = self.tap.wait(_starts(kind), start, 10)
            out.append(stamp - sent)


def _starts(prefix: str) -> Callable[[Any], bool]:
    return lambda line: isinstance(line, str) and line.startswith(prefix)


def _is_disk(datagram: bytes, action: str) -> bool:
    props = describe(datagram)
    return (
        props.get("ACTION") == action
        and props.get("SUBSYSTEM") == "block"
        and props.get("DEVTYPE") == "disk"
    )


def _nsid(datagram: bytes) -> int:
    return int(describe(datagram).get("ID_NSID", "0") or 0)


def _burst(
    sender: Sender,
    datagrams: list[bytes],
    tap: LineTap | EventTap,
    match: Callable[[Any], bool],
    wanted: int,
    run: Run,
    needle: bytes | None = None,
) -> None:
    start = len(tap)
    first = last = 0
    for datagram in datagrams:
        last = sender.send(datagram)
        first = first or last
    handled, done = tap.wait_count(match, start, wanted, TIMEOUT, needle)
    run.burst_handled = handled
    if done is not None:
        run.burst_total = (done - first) / 1e9
        run.burst_after_last = (done - last) / 1e9


def settle(agent: AgentProcess) -> None:
    """Wait until the agent is done with what it did last (its state written and its records
    sent too: that is done on the loop before the next request is read), so a baseline does
    not share the machine with it."""
    answer = agent.request({"cmd": "settle", "timeout": TIMEOUT}, timeout=TIMEOUT + 5)
    if not answer.get("ok"):
        raise RuntimeError(f"the agent did not settle: {answer}")


@dataclass
class Beside:
    """A baseline taken next to each measured cycle: ``settle`` the daemon, then the same
    cycle through ``bare`` into ``run``."""

    bare: BareMonitor
    run: Run
    settle: Callable[[], None]


def _cycles(
    sender: Sender,
    tap: EventTap,
    cycles: list[Cycle],
    count: int,
    run: Run,
    beside: Beside | None = None,
) -> None:
    """``count`` cycles through the daemon; each after the same cycle through the baseline
    when given, so that both see the machine at the same moments."""
    for i in range(count):
        cycle = cycles[i % len(cycles)]
        if beside is not None:
            beside.settle()
            beside.bare.cycle(cycle, beside.run)
        for datagram, kind, out in (
            (cycle.remove, "namespace-removed", run.remove),
            (cycle.add, "namespace-added", run.add),
        ):
            start = len(tap)
            sent = sender.send(datagram)
            _, stamp, _ = tap.wait(plan_for(kind, cycle.nsid), start, 10, PLAN)
            out.append(stamp - sent)


@dataclass
class ReloadResult:
    seconds: float
    ok: bool
    during: list[float]  # latencies (s) of events sent while the reload or its assessment ran
    lost: int
    events: int
    assessed: float  # seconds from the request to the end of the assessment after it


def _reconcile_pending(generation: Any) -> Callable[[Any], bool]:
    def match(record: Any) -> bool:
        return (
            isinstance(record, dict)
            and record.get("type") == "reconcile-pending"
            and record.get("generation") == generation
        )

    return match


def _reload(agent: AgentProcess, tap: EventTap) -> tuple[int, int, int, dict[str, Any]]:
    """One reload request: (began, answered, assessed) in ns, and the answer.

    After the swap the daemon decides every present namespace under the new policy in a
    worker thread (:func:`nvme_agent.service.reconcile.drift`; its ``reconcile-pending``
    record says when that is done): with a thousand of them and a thousand rules it is the
    longer part of a reload's cost to the events, so it counts as part of the reload.
    """
    start = len(tap)
    began = time.monotonic_ns()
    answer = agent.request({"cmd": "reload"}, timeout=TIMEOUT)
    ended = time.monotonic_ns()
    if not answer.get("ok"):
        return began, ended, ended, answer  # nothing new to assess; the caller reports it
    match = _reconcile_pending(answer.get("generation"))
    _, assessed, _ = tap.wait(match, start, TIMEOUT, b'"reconcile-pending"')
    return began, ended, assessed, answer


def _quiet_reload(agent: AgentProcess, tap: EventTap) -> float:
    """Seconds a reload takes with no event flowing (the baseline)."""
    began, ended, _, answer = _reload(agent, tap)
    if not answer.get("ok"):
        raise RuntimeError(f"the quiet reload failed: {answer}")
    return (ended - began) / 1e9


def _reload_under_load(
    agent: AgentProcess, sender: Sender, tap: EventTap, cycles: list[Cycle]
) -> ReloadResult:
    """Reload a large policy while the load generator keeps sending remove/add cycles."""
    results: list[tuple[int, int | None]] = []
    cond = threading.Condition()
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            cycle = cycles[i % len(cycles)]
            i += 1
            for datagram, kind in (
                (cycle.remove, "namespace-removed"),
                (cycle.add, "namespace-added"),
            ):
                start = len(tap)
                sent = sender.send(datagram)
                try:
                    _, stamp, _ = tap.wait(plan_for(kind, cycle.nsid), start, 10, PLAN)
                except TimeoutError:
                    stamp = None
                with cond:
                    results.append((sent, stamp))
                    cond.notify_all()

    def wait_results(count: int) -> None:
        with cond:
            cond.wait_for(lambda: len(results) >= count, timeout=TIMEOUT)

    thread = threading.Thread(target=load, name="reload-load", daemon=True)
    thread.start()
    wait_results(4)
    began, ended, assessed, answer = _reload(agent, tap)
    with cond:
        seen = len(results)
    wait_results(seen + 4)
    stop.set()
    thread.join(timeout=TIMEOUT)
    during = [
        (stamp - sent) / 1e9
        for sent, stamp in results
        if stamp is not None and sent < max(ended, assessed) and stamp > began
    ]
    return ReloadResult(
        seconds=(ended - began) / 1e9,
        ok=bool(answer.get("ok")),
        during=during,
        lost=sum(1 for _, stamp in results if stamp is None),
        events=len(results),
        assessed=(assessed - began) / 1e9,
    )


def fs_type(path: str) -> str:
    """The filesystem type under ``path`` (from the mount table)."""
    best, kind = "", "?"
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[1]
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, fields[2]
    return kind


def scratch_parent() -> str | None:
    """Where the daemons' runtime directories go: a tmpfs like the ``/run`` of a real system
    (the state file is written, with fsync, before each batch's plans), if there is one."""
    for candidate in ("/run", "/dev/shm"):
        if os.path.isdir(candidate) and fs_type(candidate) == "tmpfs":
            return candidate
    return None


def durable_parent() -> str | None:
    """Where the daemons' state directories go (the ledger and the history, fsynced): a disk
    like the ``/var/lib`` of a real system.  ``/var/tmp`` is kept across reboots, so it is
    not a tmpfs on a usual system; None (the runtime directory's parent) when it is."""
    candidate = "/var/tmp"
    if os.path.isdir(candidate) and fs_type(candidate) != "tmpfs":
        return candidate
    return None


@contextlib.contextmanager
def state_root(report: Report) -> Iterator[Path | None]:
    """A directory for the daemons' state directories on :func:`durable_parent`, noted in the
    report and removed afterwards."""
    parent = durable_parent()
    report.notes["daemon state directory"] = (
        f"{parent} ({fs_type(parent)})" if parent else "the runtime directory's parent"
    )
    if parent is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="nvme-agent-bench-state-", dir=parent) as root:
        yield Path(root)


def _rss(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MiB


def _context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread: wakeups."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split(":", 1)[1])
        except OSError:
            continue  # a thread that just ended
    return total


def run(
    report: Report,
    *,
    burst: int,
    cycles: int,
    idle_seconds: float,
    idle_namespaces: int,
    reload_rules: int,
    reloads: int = 5,
    profile: Path | None = None,
) -> None:
    reason = unavailable_reason()
    if reason is not None:
        report.skipped["daemon"] = reason
        return
    parent = scratch_parent()
    report.notes["daemon runtime directory"] = (
        f"{parent or tempfile.gettempdir()} ({fs_type(parent or tempfile.gettempdir())})"
    )
    with (
        tempfile.TemporaryDirectory(prefix="nvme-agent-bench-", dir=parent) as tmp,
        state_root(report) as states,
        Bed(multipath=True, timeout=BED_TIMEOUT) as bed,
    ):
        rig = Rig(bed, Path(tmp), burst, profile, states)
        rig.record()
        with rig.bare_monitor() as bare:
            base = bare.burst()
            _daemon_phase(report, rig, bare, base, cycles, reload_rules, reloads)
        _coldplug_phase(report, rig)
        _idle_phase(report, rig, idle_seconds, idle_namespaces)


def _daemon_phase(
    report: Report,
    rig: Rig,
    bare: BareMonitor,
    base: Run,
    cycles: int,
    reload_rules: int,
    reloads_count: int,
) -> None:
    before = set(rig.bed.listeners())
    agent = rig.start_agent("agent", rig.write_policy("policy.yaml", 1))
    try:
        assert agent.proc is not None
        tap = EventTap(agent.events_socket)
        sender = Sender(rig.listener(before))
        rig.quiet_attach(rig.configs)
        measured = Run()
        count = len(rig.configs)
        _burst(sender, rig.burst, tap, plan_for("namespace-added"), count, measured, PLAN)
        settle(agent)
        rss_burst = _rss(agent.proc.pid)
        beside = Beside(bare, base, lambda: settle(agent))
        _cycles(sender, tap, rig.cycles, cycles, measured, beside)
        quiet, reloads = [], []
        for variant in range(1, reloads_count + 1):
            # Each reload reads a policy no earlier load has seen: none of its parse is cached.
            # The baseline's and the measured ones alternate, so a slow moment hits both.
            rig.write_policy("policy.yaml", reload_rules, 2 * variant - 1)
            quiet.append(_quiet_reload(agent, tap))
            rig.write_policy("policy.yaml", reload_rules, 2 * variant)
            reloads.append(_reload_under_load(agent, sender, tap, rig.cycles))
        sender.close()
        tap.close()
    except BaseException:
        sys.stderr.write(agent.tail())  # what the daemon said, before its log goes
        raise
    finally:
        agent.stop()
    _latency_figures(report, base, measured)
    _burst_figures(report, base, measured, count, rss_burst)
    _reload_figures(report, quiet, reloads, reload_rules)


def _reload_figures(
    report: Report, quiet: list[float], reloads: list[ReloadResult], rules: int
) -> None:
    """The median reload (one sample moved by half between runs) against the median quiet
    one; the worst event delay and the losses over all of them and their assessments."""
    median = statistics.median(r.seconds for r in reloads)
    worst = max((d for r in reloads for d in r.during), default=0.0)
    ok = all(r.ok for r in reloads)
    lost = sum(r.lost for r in reloads)
    n = len(reloads)
    report.figures.append(
        Figure(
            name=f"reload of a {rules}-rule policy while events flow, median of {n}",
            value=median * 1e3,
            unit="ms",
            baseline=f"the same reload, no events flowing, median of {len(quiet)}",
            baseline_value=statistics.median(quiet) * 1e3,
            target="<= 100 ms",
            met=ok and median <= 0.1,
            details={
                "reload_ok": ok,
                "reloads_ms": [r.seconds * 1e3 for r in reloads],
                "quiet_reloads_ms": [q * 1e3 for q in quiet],
                "assessed_ms": [r.assessed * 1e3 for r in reloads],
                "lost": lost,
            },
        )
    )
    report.figures.append(
        Figure(
            name=f"events during those {n} reloads and the assessments after them: "
            "worst uevent -> plan",
            value=worst * 1e3,
            unit="ms",
            target="none lost or delayed past 100 ms",
            met=lost == 0 and worst <= 0.1,
            details={"events": sum(r.events for r in reloads), "lost": lost},
        )
    )


def _latency_figures(report: Report, base: Run, measured: Run) -> None:
    b, m = summary(base.all), summary(measured.all)
    report.figures.append(
        Figure(
            name="uevent -> change -> plan decided, p50",
            value=m.get("p50"),
            unit="ms",
            baseline="bare pyudev.Monitor, same uevents, p50",
            baseline_value=b.get("p50"),
            target="<= baseline + 1 ms",
            met=m["n"] > 0 and b["n"] > 0 and m["p50"] <= b["p50"] + 1.0,
            details={"daemon": m, "bare_monitor": b},
        )
    )
    report.figures.append(
        Figure(
            name="uevent -> change -> plan decided, p99",
            value=m.get("p99"),
            unit="ms",
            baseline="bare pyudev.Monitor, same uevents, p99",
            baseline_value=b.get("p99"),
            target="<= 10 ms",
            met=m["n"] > 0 and m["p99"] <= 10.0,
        )
    )


def _burst_figures(report: Report, base: Run, measured: Run, count: int, rss: float) -> None:
    lost = count - measured.burst_handled
    report.figures.append(
        Figure(
            name=f"{count} namespaces in one rescan: last plan after the last uevent",
            value=measured.burst_after_last,
            unit="s",
            baseline="bare monitor: last uevent received after the last sent",
            baseline_value=base.burst_after_last,
            target="<= 1 s after the last uevent, none lost",
            met=measured.burst_after_last is not None
            and measured.burst_after_last <= 1.0
            and lost == 0,
            details={
                "plans": measured.burst_handled,
                "lost": lost,
                "daemon_first_to_last_s": measured.burst_total,
                "bare_first_to_last_s": base.burst_total,
            },
        )
    )
    report.figures.append(
        Figure(
            name=f"{count} namespaces in one rescan: first uevent to last plan",
            value=measured.burst_total,
            unit="s",
            baseline="bare monitor: first uevent to last received",
            baseline_value=base.burst_total,
            target="-",
        )
    )
    report.figures.append(
        Figure(
            name=f"daemon RSS after a {count}-namespace burst",
            value=rss,
            unit="MiB",
            target="-",
        )
    )


#: Coldplug starts are alternated with bare enumerations this many times; the figure is
#: the median of each.  One start of each moved by half a second between runs.
COLDPLUG_RUNS = 3


def _coldplug_phase(report: Report, rig: Rig) -> None:
    """Every namespace is present in sysfs (the daemon phase leaves them so)."""
    policy = rig.write_policy("coldplug.yaml", 1)
    enumerations: list[float] = []
    readies: list[float] = []
    rss = 0.0
    for run in range(COLDPLUG_RUNS):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "benchmarks.baremonitor", "--enumerate"],
            env=rig.env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        enumerations.append(time.monotonic() - started)
        started = time.monotonic()
        agent = rig.start_agent(f"coldplug-{run}", policy)
        readies.append(time.monotonic() - started)
        try:
            assert agent.proc is not None
            rss = max(rss, _rss(agent.proc.pid))
        finally:
            agent.stop()
    enumeration, ready = statistics.median(enumerations), statistics.median(readies)
    count = len(rig.configs)
    report.figures.append(
        Figure(
            name=f"coldplug: {count} namespaces present, start until READY=1 (dry run), "
            f"median of {COLDPLUG_RUNS}",
            value=ready,
            unit="s",
            baseline=f"pyudev enumeration alone (fresh process), median of {COLDPLUG_RUNS}",
            baseline_value=enumeration,
            target="<= baseline + 1 s",
            met=ready <= enumeration + 1.0,
            details={
                "rss_mib_after_coldplug": rss,
                "ready_s": readies,
                "enumeration_s": enumerations,
            },
        )
    )


def _idle_phase(report: Report, rig: Rig, seconds: float, namespaces: int) -> None:
    rig.quiet_detach(rig.configs[namespaces:])
    agent = rig.start_agent("idle", rig.write_policy("idle.yaml", 1))
    try:
        assert agent.proc is not None
        settle(agent)
        proc = psutil.Process(agent.proc.pid)
        rss = _rss(proc.pid)
        # The control connection's close still wakes the daemon once after the answer.
        time.sleep(min(GRACE, seconds))
        cpu_before = sum(proc.cpu_times()[:2])
        switches_before = _context_switches(proc.pid)
        time.sleep(seconds)  # the measurement window itself: nothing waits on it
        cpu = sum(proc.cpu_times()[:2]) - cpu_before
        wakeups = _context_switches(proc.pid) - switches_before
    finally:
        agent.stop()
    known = min(namespaces, len(rig.configs))
    report.figures.append(
        Figure(
            name=f"idle: RSS with {known} namespaces known",
            value=rss,
            unit="MiB",
            target="<= 30 MiB",
            met=rss <= 30.0,
        )
    )
    report.figures.append(
        Figure(
            name=f"idle: CPU and wakeups over {seconds:g} s (no watchdog configured)",
            value=cpu,
            unit="s CPU",
            target="no wakeups but the watchdog",
            met=wakeups == 0,
            details={"wakeups": wakeups, "window_s": seconds},
        )
    )
