"""``nvme-agent explain``: what the policy would do for a device or a scenario; runs nothing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import pyudev

from nvme_agent.cli.main import DEFAULT_POLICY, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from nvme_agent.cli.output import Reporter
from nvme_agent.harness.scenario import load_scenario
from nvme_agent.policy import Policy, PolicyError, decide, explain, load_policy
from nvme_agent.policy.explain import describe_action
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.intake import enumerate_records
from nvme_agent.topology.model import Namespace, Partition, TopologySnapshot
from nvme_agent.topology.tracker import Topology

#: ``--change`` choices: what synthetic change to decide on for a DEVICE.
CHANGE_KINDS = ("add", "remove", "eject", "resize")


class _Usage(Exception):
    """A problem with the command line or the environment: exit status 2."""


class DeviceFinder(Protocol):
    """What :func:`device_change` needs from a topology (a ``Topology``)."""

    def find_device(self, devnode: str) -> tuple[Namespace, Partition | None] | None: ...

    def snapshot(self) -> TopologySnapshot: ...


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="show which rule matches a device and the plan, executing nothing",
        description=(
            "Show, for a device present on this machine or for every change of a harness "
            "scenario, which policy rule matches, why each earlier rule does not, and the "
            "actions the agent would take.  Nothing is mounted or run."
        ),
    )
    p.add_argument(
        "device",
        nargs="?",
        metavar="DEVICE",
        help="block device of an NVMe namespace or partition (e.g. /dev/nvme0n1, a by-label link)",
    )
    p.add_argument(
        "--scenario", metavar="S", help="explain every change of this harness scenario file instead"
    )
    p.add_argument(
        "--policy",
        metavar="P",
        help=f"policy file (default: the scenario's inline policy, else {DEFAULT_POLICY})",
    )
    p.add_argument(
        "--change",
        choices=CHANGE_KINDS,
        default="add",
        help="for DEVICE: decide as if it was added (default), removed, ejected or resized",
    )
    p.add_argument("--json", action="store_true", help="JSON lines: one 'plan' object per change")
    p.set_defaults(func=run)


def device_change(finder: DeviceFinder, device: str, kind: str) -> tuple[Change, TopologySnapshot]:
    """The synthetic change of ``kind`` for ``device`` in ``finder``'s topology."""
    devnode = os.path.realpath(device)
    found = finder.find_device(devnode)
    if found is None:
        raise _Usage(f"{device} is not an NVMe namespace or partition known to udev")
    ns, part = found
    if kind == "resize":
        if part is not None:
            raise _Usage("--change resize applies to a whole namespace, not a partition")
        return Change(ChangeType.NAMESPACE_RESIZED, namespace=ns, previous=ns), finder.snapshot()
    if kind == "add":
        ctype = ChangeType.PARTITION_ADDED if part else ChangeType.NAMESPACE_ADDED
        return Change(ctype, namespace=ns, partition=part, coldplug=True), finder.snapshot()
    ctype = ChangeType.PARTITION_REMOVED if part else ChangeType.NAMESPACE_REMOVED
    reason = "eject" if kind == "eject" else None
    return Change(ctype, namespace=ns, partition=part, reason=reason), finder.snapshot()


def _machine_topology() -> DeviceFinder:
    topology = Topology()
    for record in enumerate_records(pyudev.Context()):
        topology.apply(record)
    return topology


def _scenario(path: str) -> tuple[Policy | None, list[tuple[Change, TopologySnapshot]]]:
    try:
        scenario = load_scenario(path)
    except OSError as exc:
        raise _Usage(f"cannot read scenario {path}: {exc.strerror or exc}") from exc
    policy: Policy | None = scenario.policy
    return policy, list(scenario.planned_changes())


def report(out: Reporter, policy: Policy, items: Sequence[tuple[Change, TopologySnapshot]]) -> None:
    """Decide and print each change (readable text, or JSON lines with ``--json``)."""
    for change, topology in items:
        plan = decide(change, topology, policy, explain=True)
        verdicts = explain(change, topology, policy)
        record = plan.to_dict()
        record["env"] = dict(plan.env)
        record["verdicts"] = [v.to_dict() for v in verdicts]
        lines = [change.summary()]
        lines.extend(f"  {line}" for line in plan.explanation)
        if plan.actions:
            lines.append(f"  plan (rule {plan.rule}, key {plan.key}):")
            lines.extend(f"    {i}. {describe_action(a)}" for i, a in enumerate(plan.actions, 1))
        else:
            lines.append("  plan: nothing to do")
        out.emit(record, "\n".join(lines))


def run(args: argparse.Namespace) -> int:
    if bool(args.device) == bool(args.scenario):
        print("nvme-agent explain: give either DEVICE or --scenario S", file=sys.stderr)
        return EXIT_USAGE
    out = Reporter(args.json)
    try:
        # An explicit policy is read first: its errors matter more than the device's.
        policy: Policy | None = load_policy(args.policy) if args.policy else None
        scenario_policy: Policy | None = None
        if args.scenario:
            scenario_policy, items = _scenario(args.scenario)
        else:
            items = [device_change(_machine_topology(), args.device, args.change)]
        if policy is None:
            policy = scenario_policy or load_policy(DEFAULT_POLICY)
    except _Usage as exc:
        print(f"nvme-agent explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"nvme-agent explain: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    report(out, policy, items)
    return EXIT_OK
