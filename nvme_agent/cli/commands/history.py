"""``nvme-agent history``: the recorded topology changes."""

from __future__ import annotations

import argparse
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import add_json, add_state_dir, with_exits
from nvme_agent.cli.exits import Exit, error_for_os
from nvme_agent.cli.output import Reporter, printable
from nvme_agent.outputs.paths import RuntimePaths
from nvme_agent.outputs.state import History
from nvme_agent.outputs.times import local

EXITS = {
    Exit.OK: "printed (nothing when no change was recorded yet)",
    Exit.DENIED: "the history is not readable (root or the nvme-agent group only)",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "history",
        help="print the history of topology changes",
        description=with_exits(
            "Print the append-only history of topology changes, oldest first, each with the "
            "time it was seen (local time; in --json the record's 'time', RFC 3339 in UTC, "
            "null for records of a release that kept no times).",
            EXITS,
        ),
    )
    add_state_dir(p)
    p.add_argument("-n", "--limit", type=int, default=0, help="only the last N records")
    hint(
        p.add_argument("--nsid", type=int, help="only changes of this namespace ID"),
        Completion.NSID,
    )
    add_json(p)
    p.set_defaults(func=run)


def describe(rec: dict[str, Any]) -> str:
    ns = rec.get("namespace") or {}
    part = rec.get("partition") or {}
    ctrl = rec.get("controller") or {}
    bits = [local(rec.get("time")), str(rec.get("type"))]
    if ns:
        bits.append(f"nsid={ns.get('nsid')} {ns.get('name')} id={ns.get('identity')}")
    if part:
        bits.append(f"partition={part.get('name')}")
    if ctrl and not ns:
        bits.append(str(ctrl.get("name")))
    if rec.get("reason"):
        bits.append(f"({rec['reason']})")
    return printable(" ".join(bits))


def run(args: argparse.Namespace) -> int:
    path = RuntimePaths(state_dir=args.state_dir).history_file
    try:
        records = list(History(path).read())
    except OSError as exc:
        raise error_for_os(exc, f"history {path}") from exc
    if args.nsid is not None:
        records = [r for r in records if r.get("nsid") == args.nsid]
    if args.limit > 0:
        records = records[-args.limit :]
    out = Reporter(args.json)
    for rec in records:
        out.emit({"time": None, **rec}, describe(rec))
    return Exit.OK
