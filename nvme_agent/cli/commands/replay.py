"""``nvme-agent replay``: feed a recorded ``udevadm monitor`` capture to the agent."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import policy_problem, with_exits
from nvme_agent.cli.exits import Exit, UsageError, error_for_os
from nvme_agent.cli.output import Reporter

EXITS = {
    Exit.OK: "replayed",
    Exit.FAILED: "the replay failed, or the policy is invalid",
    Exit.USAGE: "usage error, a capture that cannot be read, or no umockdev",
    Exit.DENIED: "a file is not readable by you",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="replay a udevadm monitor capture through the agent and print what it does",
        description=with_exits(
            "Replay a capture made on a real guest with `udevadm monitor --udev --property` "
            "(KERNEL events are ignored) through the real agent: each event's device is "
            "recreated in a fake-udev test bed and delivered to the daemon's pyudev monitor.  "
            "Controllers (PCIe or fabrics) and subsystems may come and go inside the capture.  "
            "Prints every topology change, the rule that matched and each action (dry-run by "
            "default), so a new policy can be tried against what real machines emit; what "
            "cannot be rebuilt (a line it does not understand, an NQN the capture does not "
            "contain) is named with its line number.",
            EXITS,
        ),
    )
    p.add_argument("capture", metavar="CAPTURE", help="udevadm monitor --property output file")
    p.add_argument("--policy", metavar="P", help="policy file (default: log changes only)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=True,
        help="plan and report actions without executing them (always on: replayed devices "
        "are fake)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    nqn = p.add_argument(
        "--subsysnqn",
        metavar="NQN",
        default=None,
        help="NQN to give the replayed subsystem (captures do not contain it; a second "
        "subsystem gets a variant of it)",
    )
    hint(nqn, Completion.NONE)
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the agent's reaction to each event",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nvme_agent.harness.bed import unavailable_reason
    from nvme_agent.harness.replay import DEFAULT_NQN, Replay, read_capture_file

    try:
        text, notes = read_capture_file(args.capture)
    except OSError as exc:
        raise error_for_os(exc, args.capture) from exc
    policy = None
    if args.policy:
        problem = policy_problem(args.policy)
        if problem is not None:
            raise problem
        policy = Path(args.policy).resolve()
    reason = unavailable_reason()
    if reason is not None:
        raise UsageError(f"cannot replay: {reason}")
    reporter = Reporter(args.json)
    replay = Replay(
        text,
        lambda record, line: reporter.emit(record, line),
        policy=policy,
        subsysnqn=args.subsysnqn or DEFAULT_NQN,
        timeout=args.timeout,
        notes=notes,
    )
    result = replay.run()
    if result.error:
        reporter.emit(
            {"type": "error", "nsid": None, "error": result.error}, f"error: {result.error}"
        )
        return Exit.FAILED
    if not result.records:
        reporter.emit(
            {"type": "summary", "nsid": None, "changes": 0},
            "no UDEV events for NVMe devices in this capture: no topology change",
        )
    return Exit.OK
