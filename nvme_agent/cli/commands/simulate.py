"""``nvme-agent simulate``: watch the agent handle hotplug on a fake guest."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

from nvme_agent.cli.output import Reporter

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = "qemu-hot-swap.yaml"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="run the agent against a fake NVMe guest and print the timeline",
        description=(
            "Run the real daemon against a fake guest (a umockdev test bed: fake /sys, /dev "
            "and udev events delivered to the agent's pyudev monitor) and execute a scenario: "
            "namespaces added, removed, hot-swapped, resized; paths and whole controllers (PCIe, "
            "NVMe/TCP) that come and go; policy reloads; ejects.  Prints "
            "each topology change, the rule that matched, each action and its outcome, and "
            "the scenario's expectations.  Exit status 0 when every expectation holds.  "
            "Without SCENARIO it runs the bundled QEMU hot-swap scenario."
        ),
    )
    p.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="scenario YAML file (default: the bundled QEMU nvme-ns hot-swap scenario)",
    )
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
        help="list the bundled scenarios and exit",
    )
    p.set_defaults(func=run)


def bundled_scenarios() -> list[Path]:
    """The scenario files shipped in the package."""
    folder = resources.files("nvme_agent").joinpath("data/scenarios")
    return sorted(
        Path(str(f))
        for f in folder.iterdir()
        if f.name.endswith(".yaml") and not f.name.endswith(".policy.yaml")
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes an exception so every cleanup (loops, mounts, temp files) runs.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from nvme_agent.cli.commands.common import policy_problem
    from nvme_agent.harness.bed import unavailable_reason
    from nvme_agent.harness.real import RealModeError, check_real_mode
    from nvme_agent.harness.scenario import ScenarioError, load_scenario
    from nvme_agent.harness.simulate import Simulation

    if args.list:
        for path in bundled_scenarios():
            print(path.name)
        return 0
    path = Path(args.scenario) if args.scenario else _default_scenario()
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read scenario {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    policy_text = None
    if args.policy:
        problem = policy_problem(args.policy)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        policy_text = Path(args.policy).read_text(encoding="utf-8")
    if args.real:
        try:
            check_real_mode()
        except RealModeError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot simulate: {reason}", file=sys.stderr)
        return 2
    reporter = Reporter(args.json)

    def emit(record: dict[str, Any], text: str | None) -> None:
        reporter.emit(record, text)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        outcome = Simulation(
            scenario, emit, policy_text=policy_text, real=args.real, step_timeout=args.timeout
        ).run()
    except RealModeError as exc:
        print(f"real mode: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if outcome.ok else 1


def _default_scenario() -> Path:
    return Path(str(resources.files("nvme_agent").joinpath(f"data/scenarios/{DEFAULT_SCENARIO}")))
