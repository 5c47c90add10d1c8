"""In-process figures: the product's own ``Topology.apply``, ``load_policy_text`` and ``decide``.

Records come from the harness's :class:`~nvme_agent.harness.layout.Layout` (shaped on the
real-guest captures, native multipath), exactly as intake would build them.  Sizes are
measured interleaved (every repetition visits every size), so that a machine that slows down
during the run slows every size alike; each figure is the median over repetitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.report import Figure, Report, Table, summary
from nvme_agent.harness.layout import ControllerConfig, Event, Layout, NamespaceConfig
from nvme_agent.policy import Policy, decide, load_policy_text
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.records import SUBSYSTEMS, DeviceRecord
from nvme_agent.topology.tracker import Topology

MOUNT_ROOT = "/run/media/nvme-agent-bench"
#: Namespaces attached and detached on top of each size: the records that are timed.
PROBES = 20
#: "Flat" allows this much growth from the smallest size to the largest (noise).
FLAT = 1.5


def policy_text(rules: int, mount_root: str = MOUNT_ROOT, variant: int = 0) -> str:
    """``rules`` rules; only the last matches (every decision evaluates all of them).
    Each ``variant`` has other names and patterns: a policy no earlier load has seen."""
    lines = ["version: 1", "defaults:", f"  mount_root: {mount_root}", "rules:"]
    for i in range(rules - 1):
        name = f"v{variant}r{i}" if variant else f"r{i}"
        lines += [
            f"  - name: {name}",
            f'    match: {{fs_label: "nomatch-{variant}-{i}-*"}}',
            f'    on_add: [{{mount: {{path: "{mount_root}/{name}/{{label}}"}}}}]',
        ]
    lines += [
        "  - name: all-ext4",
        "    match: {fs_type: ext4}",
        f'    on_add: [{{mount: {{path: "{mount_root}/{{label}}"}}}}]',
    ]
    return "\n".join(lines) + "\n"


def _records(events: Sequence[Event]) -> list[DeviceRecord]:
    """What the agent's monitor would receive: no hidden paths, no ``bdi``."""
    return [
        e.device.record(e.action)
        for e in events
        if not e.device.silent and e.device.subsystem in SUBSYSTEMS
    ]


@dataclass
class Workload:
    """A topology of ``size`` namespaces and the probe records timed on top of it."""

    size: int
    topology: Topology
    probe: list[DeviceRecord]  # attach then detach of PROBES more namespaces


def workload(size: int) -> Workload:
    layout = Layout(multipath=True)
    base = _records(layout.add_controller(ControllerConfig("nvme0", serial="SNBENCH")))
    for i in range(size):
        cfg = NamespaceConfig("nvme0", nsid=1 + i, fs="ext4", label=f"n{i}")
        base += _records(layout.attach(cfg))
    topology = Topology()
    topology.apply_all(base)
    attach: list[DeviceRecord] = []
    detach: list[DeviceRecord] = []
    for j in range(PROBES):
        nsid = 100_000 + j
        attach += _records(layout.attach(NamespaceConfig("nvme0", nsid=nsid, fs="ext4")))
    for j in range(PROBES):
        detach += _records(layout.detach("nvme0", 100_000 + j))
    return Workload(size, topology, attach + detach)


def _interleaved(
    sizes: Sequence[int], reps: int, run: Callable[[int], float]
) -> dict[int, list[float]]:
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(reps):
        for n in sizes:
            samples[n].append(run(n))
    return samples


def topology_growth(report: Report, sizes: Sequence[int], reps: int) -> None:
    """Per-record cost of ``Topology.apply`` by size; and with the snapshot the policy then
    gets taken after every record (the daemon takes one per batch of records)."""
    loads = {n: workload(n) for n in sizes}

    def timed(n: int, snapshot: bool) -> float:
        load = loads[n]
        start = time.perf_counter()
        for record in load.probe:
            load.topology.apply(record)
            if snapshot:
                load.topology.snapshot()
        return (time.perf_counter() - start) / len(load.probe)

    # Both variants in the same repetitions, so that a busy moment of the machine hits both.
    runs = [(n, snap) for n in sizes for snap in (False, True)]
    samples = _interleaved(range(len(runs)), reps, lambda i: timed(*runs[i]))
    apply = {n: summary(samples[runs.index((n, False))]) for n in sizes}
    both = {n: summary(samples[runs.index((n, True))]) for n in sizes}
    first, last = sizes[0], sizes[-1]
    report.tables.append(
        Table(
            name="topology: Topology.apply per record, by namespaces known",
            rows=[str(n) for n in sizes],
            columns=["p50", "p99", "min", "x smallest", "+ snapshot p50"],
            cells={
                str(n): {
                    "p50": s["p50"] * 1e6,
                    "p99": s["p99"] * 1e6,
                    "min": s["min"] * 1e6,
                    "x smallest": s["p50"] / apply[first]["p50"],
                    "+ snapshot p50": both[n]["p50"] * 1e6,
                }
                for n, s in apply.items()
            },
            unit="us per record",
            note="target flat; '+ snapshot' takes a snapshot after every record (a copy of "
            "the namespace list: linear, once per batch in the daemon)",
        )
    )
    growth = apply[last]["p50"] / apply[first]["p50"]
    report.figures.append(
        Figure(
            name=f"topology apply per record at {last} namespaces",
            value=apply[last]["p50"] * 1e6,
            unit="us",
            baseline=f"the same records at {first} namespaces",
            baseline_value=apply[first]["p50"] * 1e6,
            target=f"flat (<= {FLAT}x)",
            met=growth <= FLAT,
            details={
                "apply": {str(n): s for n, s in apply.items()},
                "apply_and_snapshot": {str(n): s for n, s in both.items()},
            },
        )
    )


def _decide_inputs(load: Workload) -> list[Change]:
    snap = load.topology.snapshot()
    return [Change(ChangeType.NAMESPACE_ADDED, namespace=ns) for ns in snap.namespaces[:PROBES]]


def policy_growth(
    report: Report, sizes: Sequence[int], rule_counts: Sequence[int], reps: int
) -> None:
    """``decide`` per change by namespaces and rules; ``load_policy_text`` by rules."""
    compiled: dict[int, Policy] = {}
    compile_times: dict[int, list[float]] = {r: [] for r in rule_counts}
    for _ in range(max(1, reps // 5)):
        for r in rule_counts:
            text = policy_text(r)
            start = time.perf_counter()
            compiled[r] = load_policy_text(text, f"<bench {r} rules>")
            compile_times[r].append(time.perf_counter() - start)
    loads = {n: workload(n) for n in sizes}
    inputs = {n: (loads[n].topology.snapshot(), _decide_inputs(loads[n])) for n in sizes}
    cells: dict[str, dict[str, float]] = {}
    for r in rule_counts:
        policy = compiled[r]

        def run(n: int, policy: Policy = policy) -> float:
            snap, changes = inputs[n]
            start = time.perf_counter()
            for change in changes:
                decide(change, snap, policy)
            return (time.perf_counter() - start) / len(changes)

        samples = _interleaved(sizes, reps, run)
        for n, values in samples.items():
            cells.setdefault(str(n), {})[f"R={r}"] = summary(values)["p50"] * 1e6
    report.tables.append(
        Table(
            name="decide: one namespace-added, by namespaces known (rows) and rules (columns)",
            rows=[str(n) for n in sizes],
            columns=[f"R={r}" for r in rule_counts],
            cells=cells,
            unit="us p50",
            note="target linear or better (flat in namespaces)",
        )
    )
    compile_stats = {r: summary(v) for r, v in compile_times.items()}
    report.tables.append(
        Table(
            name="load_policy_text, by rules",
            rows=[str(r) for r in rule_counts],
            columns=["p50", "per rule"],
            cells={
                str(r): {"p50": s["p50"] * 1e3, "per rule": s["p50"] * 1e3 / r}
                for r, s in compile_stats.items()
            },
            unit="ms",
            note="target linear or better",
        )
    )
    first, last = rule_counts[0], rule_counts[-1]
    report.figures.append(
        Figure(
            name=f"load_policy_text of {last} rules",
            value=compile_stats[last]["p50"] * 1e3,
            unit="ms",
            baseline=f"{first} rule(s)",
            baseline_value=compile_stats[first]["p50"] * 1e3,
            target="<= 100 ms (the policy helper's)",
            met=compile_stats[last]["p50"] <= 0.1,
        )
    )
    small, big = str(sizes[0]), str(sizes[-1])
    worst = max(cells[big][f"R={r}"] / cells[small][f"R={r}"] for r in rule_counts)
    report.figures.append(
        Figure(
            name=f"decide at {sizes[-1]} namespaces, {last} rules",
            value=cells[big][f"R={last}"],
            unit="us",
            baseline=f"{sizes[0]} namespaces, {last} rules",
            baseline_value=cells[small][f"R={last}"],
            target=f"flat in namespaces (<= {FLAT}x for every R)",
            met=worst <= FLAT,
            details={"worst growth over R": worst},
        )
    )
