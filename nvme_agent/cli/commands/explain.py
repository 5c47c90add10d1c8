"""``nvme-agent explain``: what the policy would do for a device or a scenario; runs nothing."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any, Protocol

from nvme_agent.cli import scenarios
from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import with_exits
from nvme_agent.cli.exits import CliError, Exit, NotFoundError, UsageError, error_for_os
from nvme_agent.cli.main import DEFAULT_POLICY
from nvme_agent.cli.output import Reporter
from nvme_agent.policy import Policy, PolicyError, decide, explain, load_policy
from nvme_agent.policy.explain import describe_action
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, Partition, TopologySnapshot
from nvme_agent.topology.tracker import Topology

# The harness (scenarios) and pyudev are imported where they are used: every command,
# ``nvme-agent run`` included, builds the whole parser and so imports this module.

#: ``--change`` choices: what synthetic change to decide on for a DEVICE.
CHANGE_KINDS = ("add", "remove", "eject", "resize")

EXITS = {
    Exit.OK: "explained",
    Exit.FAILED: "the policy is invalid",
    Exit.USAGE: "usage error, or a file that cannot be read",
    Exit.NOT_FOUND: "DEVICE is not an NVMe namespace or partition known to udev",
    Exit.DENIED: "a file is not readable by you",
}


class DeviceFinder(Protocol):
    """What :func:`device_change` needs from a topology (a ``Topology``)."""

    def find_device(self, devnode: str) -> tuple[Namespace, Partition | None] | None: ...

    def snapshot(self) -> TopologySnapshot: ...


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="show which rule matches a device and the plan, executing nothing",
        description=with_exits(
            "Show, for a device present on this machine or for every change of a harness "
            "scenario, which policy rule matches, why each earlier rule does not, and the "
            "actions the agent would take.  Nothing is mounted or run.",
            EXITS,
        ),
    )
    device = p.add_argument(
        "device",
        nargs="?",
        metavar="DEVICE",
        help="block device of an NVMe namespace or partition (e.g. /dev/nvme0n1, a by-label link)",
    )
    hint(device, Completion.DEVICE)
    scenario = p.add_argument(
        "--scenario",
        metavar="S",
        help="explain every change of this scenario instead: a file, or the name of a bundled "
        "one (simulate --list)",
    )
    hint(scenario, Completion.SCENARIO)
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
        raise NotFoundError(f"{device} is not an NVMe namespace or partition known to udev")
    ns, part = found
    if kind == "resize":
        if part is not None:
            raise UsageError("--change resize applies to a whole namespace, not a partition")
        return Change(ChangeType.NAMESPACE_RESIZED, namespace=ns, previous=ns), finder.snapshot()
    if kind == "add":
        ctype = ChangeType.PARTITION_ADDED if part else ChangeType.NAMESPACE_ADDED
        return Change(ctype, namespace=ns, partition=part, coldplug=True), finder.snapshot()
    ctype = ChangeType.PARTITION_REMOVED if part else ChangeType.NAMESPACE_REMOVED
    reason = "eject" if kind == "eject" else None
    return Change(ctype, namespace=ns, partition=part, reason=reason), finder.snapshot()


def _machine_topology() -> DeviceFinder:
    import pyudev

    from nvme_agent.topology.intake import enumerate_records

    topology = Topology()
    for record in enumerate_records(pyudev.Context()):
        topology.apply(record)
    return topology


def _scenario(arg: str) -> tuple[Policy | None, list[tuple[Change, TopologySnapshot]]]:
    from nvme_agent.harness.scenario import ScenarioError, load_scenario

    path = scenarios.resolve(arg)
    try:
        scenario = load_scenario(path)
    except OSError as exc:
        raise error_for_os(exc, f"scenario {path}") from exc
    except ScenarioError as exc:
        raise UsageError("\n".join(str(i) for i in exc.issues)) from exc
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


def _policy(path: str) -> Policy:
    try:
        return load_policy(path)
    except OSError as exc:
        raise error_for_os(exc, f"policy {path}") from exc
    except PolicyError as exc:
        # The issues stay one per line, each starting with file:line:column.
        raise CliError(f"invalid policy {path}:\n{exc}", Exit.FAILED) from exc


def run(args: argparse.Namespace) -> int:
    if bool(args.device) == bool(args.scenario):
        raise UsageError("give either DEVICE or --scenario S")
    out = Reporter(args.json)
    # An explicit policy is read first: its errors matter more than the device's.
    policy: Policy | None = _policy(args.policy) if args.policy else None
    scenario_policy: Policy | None = None
    if args.scenario:
        scenario_policy, items = _scenario(args.scenario)
    else:
        items = [device_change(_machine_topology(), args.device, args.change)]
    if policy is None:
        policy = scenario_policy or _policy(DEFAULT_POLICY)
    report(out, policy, items)
    return Exit.OK
