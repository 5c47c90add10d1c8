"""``nvme-agent reload``: make the running daemon re-read its policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvme_agent.cli.commands.common import add_runtime_dir, control_socket
from nvme_agent.service.control import ControlError, request


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reload",
        help="reload the daemon's policy (exit 1 and print the errors if it is invalid)",
        description=(
            "Ask the running daemon to validate and load its policy file. On any error the "
            "old policy stays in force, the errors are printed with file:line, and the exit "
            "status is 1 (so `systemctl reload` fails visibly)."
        ),
    )
    add_runtime_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        answer = request(control_socket(args.runtime_dir), {"cmd": "reload"})
    except ControlError as exc:
        print(f"nvme-agent reload: {exc}", file=sys.stderr)
        return 2
    if answer.get("ok"):
        print(f"policy reloaded (generation {answer.get('generation')})")
        return 0
    for line in answer.get("errors") or [answer.get("error", "reload failed")]:
        print(line, file=sys.stderr)
    print(
        f"nvme-agent reload: policy NOT reloaded; generation {answer.get('generation')} "
        "stays in force",
        file=sys.stderr,
    )
    return 1
