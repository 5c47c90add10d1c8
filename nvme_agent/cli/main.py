"""The one command line: ``nvme-agent SUBCOMMAND``.

Each subcommand lives in ``nvme_agent.cli.commands.<name>`` and exposes ``register(subparsers)``
(which sets ``func``) so that this module stays a thin dispatcher and the man page can be
generated from :func:`build_parser` alone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from nvme_agent import __version__
from nvme_agent.cli.exits import CliError, Exit
from nvme_agent.cli.output import printable_lines
from nvme_agent.outputs.journal import LogTarget
from nvme_agent.outputs.logs import make_handler
from nvme_agent.outputs.paths import DEFAULT_RUNTIME_DIR as _RUNTIME_DIR
from nvme_agent.outputs.paths import DEFAULT_STATE_DIR as _STATE_DIR

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "run",
    "status",
    "history",
    "watch",
    "reload",
    "eject",
    "reconcile",
    "check",
    "explain",
    "simulate",
    "replay",
)

DEFAULT_POLICY = "/etc/nvme-agent/policy.yaml"
DEFAULT_RUNTIME_DIR = str(_RUNTIME_DIR)
DEFAULT_STATE_DIR = str(_STATE_DIR)


def build_parser() -> argparse.ArgumentParser:
    """The complete argparse tree (also the source of the man page)."""
    parser = argparse.ArgumentParser(
        prog="nvme-agent",
        description=(
            "Guest-side agent for NVMe namespace hotplug: watches udev for namespaces that "
            "come and go, logs every topology change, and mounts, unmounts and notifies "
            "applications as a YAML policy says."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"nvme_agent.cli.commands.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def setup_logging(verbosity: int, target: LogTarget = "stderr") -> None:
    """One handler on the root logger: the journal with fields for the daemon under systemd
    (``run --log-target``, see :mod:`nvme_agent.outputs.logs`), else one line per record on
    stderr."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(make_handler(target))
    root.setLevel(max(logging.WARNING - 10 * verbosity, logging.DEBUG))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status comes from :mod:`nvme_agent.cli.exits`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Only ``run`` has --log-target: every other command talks to a terminal or a script.
    setup_logging(args.verbose, getattr(args, "log_target", "stderr"))
    try:
        rc: int = args.func(args)
    except CliError as exc:
        # Printed here, once, so every command words its failures the same way.
        print(printable_lines(f"{parser.prog} {args.command}: {exc}"), file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        return int(Exit.OK)
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
