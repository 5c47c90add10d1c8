"""``nvme-agent eject``: prepare a namespace for removal before the host detaches it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvme_agent.cli.commands.common import add_json, add_runtime_dir, control_socket
from nvme_agent.cli.output import Reporter
from nvme_agent.service.control import ControlError, request


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "eject",
        help="unmount and run the remove plan of a namespace while it is still present",
        description=(
            "Run a namespace's remove plan while its device is still present (graceful "
            "unmount, hooks, units), then say whether it is safe for the host to remove it "
            "(device_del / nvme detach-ns). Exit 0 when safe; exit 1 naming the processes "
            "that still hold it when not."
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("device", nargs="?", help="block device, e.g. /dev/nvme0n1")
    target.add_argument("--nsid", type=int, help="namespace ID")
    p.add_argument("--ctrl", help="controller name (nvmeX) when --nsid is ambiguous")
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
    try:
        answer = request(control_socket(args.runtime_dir), payload, timeout=args.timeout + 10)
    except ControlError as exc:
        print(f"nvme-agent eject: {exc}", file=sys.stderr)
        return 2
    out = Reporter(args.json)
    for result in answer.get("results", []):
        out.emit(result, f"  {result['action']}: {result['status']} {result.get('message', '')}")
    nsid = answer.get("nsid")
    if answer.get("ok"):
        out.emit(
            {"type": "ejected", "nsid": nsid, "device": answer.get("device")},
            f"nsid {nsid} ({answer.get('device')}) is safe to remove",
        )
        return 0
    out.emit(
        {
            "type": "eject-failed",
            "nsid": nsid,
            "error": answer.get("error"),
            "holders": answer.get("holders", []),
        },
        f"NOT safe to remove nsid {nsid}: {answer.get('error')}",
    )
    for holder in answer.get("holders", []):
        if not args.json:
            print(f"  held by: {holder}")
    return 1
