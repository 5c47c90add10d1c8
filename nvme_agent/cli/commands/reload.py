"""``nvme-agent reload``: make the running daemon re-read its policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvme_agent.cli.commands.common import add_json, add_runtime_dir, ask, with_exits
from nvme_agent.cli.exits import Exit, exit_for_reason
from nvme_agent.cli.output import Reporter, printable

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
            "`systemctl reload` fails visibly.  A new policy acts on later changes; the "
            "namespaces already present keep what the old one did, and reload says how many "
            "of them the new policy would treat differently (`nvme-agent reconcile` applies "
            "it to them; with defaults.reconcile_on_reload the daemon does so at once).",
            EXITS,
        ),
    )
    add_runtime_dir(p)
    add_json(p)
    p.set_defaults(func=run)


def _nsids(values: list[Any]) -> str:
    shown = ", ".join(str(n) for n in values[:20])
    return shown + (f" and {len(values) - 20} more" if len(values) > 20 else "")


def run(args: argparse.Namespace) -> int:
    answer = ask(args.runtime_dir, {"cmd": "reload", "assess": True})
    out = Reporter(args.json)
    if answer.get("ok"):
        pending = list(answer.get("pending") or [])
        reconciled = list(answer.get("reconciled") or [])
        lines = [f"policy reloaded (generation {answer.get('generation')})"]
        if pending:
            s = "" if len(pending) == 1 else "s"
            lines.append(
                f"{len(pending)} present namespace{s} would be treated differently "
                f"(nsid {_nsids(pending)}): `nvme-agent reconcile` applies the policy to them"
            )
        if reconciled:
            lines.append(f"reconciling nsid {_nsids(reconciled)} (reconcile_on_reload)")
        record = {
            "type": "reloaded",
            "nsid": None,
            "generation": answer.get("generation"),
            "pending": pending,
            "reconciled": reconciled,
        }
        out.emit(record, "\n".join(lines))
        return Exit.OK
    for line in answer.get("errors") or [answer.get("error", "reload failed")]:
        print(printable(line), file=sys.stderr)
    print(
        f"nvme-agent reload: policy NOT reloaded; generation {answer.get('generation')} "
        "stays in force",
        file=sys.stderr,
    )
    code = exit_for_reason(answer.get("reason"))
    if args.json:
        out.emit(
            {
                "type": "reload-failed",
                "nsid": None,
                "generation": answer.get("generation"),
                "errors": answer.get("errors") or [answer.get("error")],
                "reason": answer.get("reason"),
                "exit": int(code),
            }
        )
    return code
