"""``nvme-agent simulate``: watch the agent handle hotplug on a fake guest."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from nvme_agent.cli import scenarios
from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import policy_problem, with_exits
from nvme_agent.cli.exits import CliError, Exit, UsageError, error_for_os
from nvme_agent.cli.output import Reporter

if TYPE_CHECKING:
    from nvme_agent.harness.scenario import Scenario

log = logging.getLogger(__name__)

EXITS = {
    Exit.OK: "every expectation holds",
    Exit.FAILED: "an expectation failed, or the policy is invalid",
    Exit.USAGE: "usage error, a scenario that cannot be read, or no umockdev",
    Exit.DENIED: "--real without root, or a file that is not readable by you",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="run the agent against a fake NVMe guest and print the timeline",
        description=with_exits(
            "Run the real daemon against a fake guest (a umockdev test bed: fake /sys, /dev "
            "and udev events delivered to the agent's pyudev monitor) and execute a scenario: "
            "namespaces added, removed, hot-swapped, resized; paths and whole controllers (PCIe, "
            "NVMe/TCP) that come and go; policy reloads; ejects.  Prints "
            "each topology change, the rule that matched, each action and its outcome, and "
            "the scenario's expectations.  Without SCENARIO it runs the bundled QEMU "
            f"hot-swap scenario ({scenarios.DEFAULT}).",
            EXITS,
        ),
    )
    scenario = p.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="scenario YAML file, or the name of a bundled scenario (--list); default: "
        f"{scenarios.DEFAULT}",
    )
    hint(scenario, Completion.SCENARIO)
    p.add_argument(
        "--policy",
        metavar="P",
        help="policy file to use instead of the scenario's own policy",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--real",
        action="store_true",
        help=(
            "root only: back each namespace with a loop device holding a real filesystem "
            "and let the agent really mount it (below a temporary directory); everything "
            "is cleaned up afterwards"
        ),
    )
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and report actions without executing them (the default)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of a timeline")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for the agent's reaction to each step (default: per step, 10)",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the names of the bundled scenarios (each works as SCENARIO) and exit",
    )
    p.set_defaults(func=run)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes an exception so every cleanup (loops, mounts, temp files) runs.
    raise KeyboardInterrupt


def _load(arg: str | None) -> Scenario:
    from nvme_agent.harness.scenario import ScenarioError, load_scenario

    path = scenarios.resolve(arg)
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        raise UsageError("\n".join(str(issue) for issue in exc.issues)) from exc
    except OSError as exc:
        raise error_for_os(exc, f"scenario {path}") from exc


def _policy_text(path: str | None) -> str | None:
    if not path:
        return None
    problem = policy_problem(path)
    if problem is not None:
        raise problem
    return Path(path).read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from nvme_agent.harness.bed import unavailable_reason
    from nvme_agent.harness.real import RealModeError, check_real_mode
    from nvme_agent.harness.simulate import Simulation

    if args.list:
        for name in scenarios.bundled():
            print(name)
        return Exit.OK
    scenario = _load(args.scenario)
    policy_text = _policy_text(args.policy)
    if args.real:
        try:
            check_real_mode()
        except RealModeError as exc:
            raise CliError(str(exc), Exit.DENIED if os.geteuid() else Exit.USAGE) from exc
    reason = unavailable_reason()
    if reason is not None:
        raise UsageError(f"cannot simulate: {reason}")
    reporter = Reporter(args.json)

    def emit(record: dict[str, Any], text: str | None) -> None:
        reporter.emit(record, text)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        outcome = Simulation(
            scenario, emit, policy_text=policy_text, real=args.real, step_timeout=args.timeout
        ).run()
    except RealModeError as exc:
        raise CliError(f"real mode: {exc}", Exit.FAILED) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    return Exit.OK if outcome.ok else Exit.FAILED
