"""``nvme-agent reload``: make the running daemon re-read its policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvme_agent.cli.commands.common import add_runtime_dir, ask, with_exits
from nvme_agent.cli.exits import Exit, exit_for_reason

EXITS = {
    Exit.OK: "reloaded",
    Exit.FAILED: "the new policy is invalid (errors printed; the old one stays in force)",
    Exit.NO_DAEMON: "no daemon reachable",
    Exit.DENIED: "permission denied",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reload",
        help="reload the daemon's policy (exit 1 and print the errors if it is invalid)",
        description=with_exits(
            "Ask the running daemon to validate and load its policy file. On any error the "
            "old policy stays in force and the errors are printed with file:line, so "
            "`systemctl reload` fails visibly.",
            EXITS,
        ),
    )
    add_runtime_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    answer = ask(args.runtime_dir, {"cmd": "reload"})
    if answer.get("ok"):
        print(f"policy reloaded (generation {answer.get('generation')})")
        return Exit.OK
    for line in answer.get("errors") or [answer.get("error", "reload failed")]:
        print(line, file=sys.stderr)
    print(
        f"nvme-agent reload: policy NOT reloaded; generation {answer.get('generation')} "
        "stays in force",
        file=sys.stderr,
    )
    return exit_for_reason(answer.get("reason"))
