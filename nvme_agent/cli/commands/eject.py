"""``nvme-agent eject``: prepare a namespace for removal before the host detaches it."""

from __future__ import annotations

import argparse
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import add_json, add_runtime_dir, ask, with_exits
from nvme_agent.cli.exits import Exit, exit_for_reason
from nvme_agent.cli.output import Reporter, printable

EXITS = {
    Exit.OK: "safe to remove",
    Exit.FAILED: "NOT safe: still held (the holders are named) or not done in time",
    Exit.USAGE: "usage error",
    Exit.NOT_FOUND: "no such namespace or device (nothing to eject)",
    Exit.NO_DAEMON: "no daemon reachable",
    Exit.DENIED: "permission denied",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "eject",
        help="unmount and run the remove plan of a namespace while it is still present",
        description=with_exits(
            "Run a namespace's remove plan while its device is still present (graceful "
            "unmount, hooks, units), then say whether it is safe for the host to remove it "
            "(device_del / nvme detach-ns).  While it runs, progress goes to stderr: the plan, "
            "who holds each mount, each holder signalled, each action's result, and every "
            "10 s without news that it is still working.",
            EXITS,
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    dev = target.add_argument("device", nargs="?", help="block device, e.g. /dev/nvme0n1")
    nsid = target.add_argument("--nsid", type=int, help="namespace ID")
    ctrl = p.add_argument("--ctrl", help="controller name (nvmeX) when --nsid is ambiguous")
    hint(dev, Completion.DEVICE)
    hint(nsid, Completion.NSID)
    hint(ctrl, Completion.CTRL)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    add_runtime_dir(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"cmd": "eject", "timeout": args.timeout}
    if args.device:
        payload["device"] = args.device
    else:
        payload["nsid"] = args.nsid
        if args.ctrl:
            payload["ctrl"] = args.ctrl
    answer = ask(args.runtime_dir, payload, timeout=args.timeout + 10, progress="nvme-agent eject")
    out = Reporter(args.json)
    for result in answer.get("results", []):
        line = f"  {result.get('action')}: {result.get('status')} {result.get('message', '')}"
        out.emit(result, printable(line))
    nsid = answer.get("nsid")
    if answer.get("ok"):
        out.emit(
            {"type": "ejected", "nsid": nsid, "device": answer.get("device")},
            printable(f"nsid {nsid} ({answer.get('device')}) is safe to remove"),
        )
        return Exit.OK
    code = exit_for_reason(answer.get("reason"))
    holders = answer.get("holders", [])
    if code is Exit.NOT_FOUND:
        lines = [f"nothing to eject: {answer.get('error')}"]
    else:
        lines = [f"NOT safe to remove nsid {nsid}: {answer.get('error')}"]
    lines += [f"  held by: {holder}" for holder in holders]
    out.emit(
        {
            "type": "eject-failed",
            "nsid": nsid,
            "error": answer.get("error"),
            "reason": answer.get("reason"),
            "exit": int(code),
            "holders": holders,
        },
        # One printable line each: a holder's process name is chosen by its (any) user.
        "\n".join(printable(line) for line in lines),
    )
    return code
