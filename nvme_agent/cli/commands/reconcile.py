"""``nvme-agent reconcile``: apply the policy in force to namespaces already present."""

from __future__ import annotations

import argparse
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import add_json, add_runtime_dir, ask, with_exits
from nvme_agent.cli.exits import Exit, exit_for_reason
from nvme_agent.cli.output import Reporter, printable

EXITS = {
    Exit.OK: "applied (or, with --dry-run, listed); also when nothing differs",
    Exit.FAILED: "an action failed or did not finish in time (the results are printed)",
    Exit.USAGE: "usage error",
    Exit.NOT_FOUND: "DEVICE or --nsid names no present namespace",
    Exit.NO_DAEMON: "no daemon reachable",
    Exit.DENIED: "permission denied (root or the policy's admin group)",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reconcile",
        help="apply the policy in force to namespaces an older policy handled",
        description=with_exits(
            "A reload changes what the agent does with later changes; namespaces already "
            "present keep what the old policy did.  reconcile finds the present namespaces "
            "(and partitions) whose add plan under the policy in force differs from the one "
            "that ran, and for each undoes the old plan (the on_remove of the rule that "
            "applied, under the policy that applied it, with a graceful unmount as for eject) "
            "and runs the new one (its on_add).  Hooks see NVME_AGENT_REASON=reconcile.  "
            "Ejected namespaces are left alone.  Progress goes to stderr.",
            EXITS,
        ),
    )
    target = p.add_mutually_exclusive_group()
    dev = target.add_argument(
        "device", nargs="?", help="only this namespace (a block device, e.g. /dev/nvme0n1)"
    )
    nsid = target.add_argument("--nsid", type=int, help="only the namespace with this ID")
    ctrl = p.add_argument("--ctrl", help="controller name (nvmeX) when --nsid is ambiguous")
    hint(dev, Completion.DEVICE)
    hint(nsid, Completion.NSID)
    hint(ctrl, Completion.CTRL)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only list what differs and what would run; change nothing",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the actions (300)"
    )
    add_runtime_dir(p)
    add_json(p)
    p.set_defaults(func=run)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "cmd": "reconcile",
        "dry_run": bool(args.dry_run),
        "timeout": args.timeout,
    }
    if args.device:
        payload["device"] = args.device
    elif args.nsid is not None:
        payload["nsid"] = args.nsid
        if args.ctrl:
            payload["ctrl"] = args.ctrl
    return payload


def _target_text(t: dict[str, Any], dry_run: bool) -> str:
    what = f"nsid {t.get('nsid')} ({t.get('device')})"
    ran = t.get("applied_rule")
    rule = t.get("rule")
    head = f"{what}: rule {rule or '-'}" + (f" (ran: {ran})" if ran != rule else "")
    actions = "; ".join(str(a) for a in t.get("actions") or []) or "nothing to add"
    verb = "would run" if dry_run else "runs"
    return f"{head}; {verb}: {actions}"


def run(args: argparse.Namespace) -> int:
    progress = None if args.dry_run else "nvme-agent reconcile"
    answer = ask(args.runtime_dir, _payload(args), timeout=args.timeout + 60, progress=progress)
    out = Reporter(args.json)
    dry_run = bool(args.dry_run)
    targets = answer.get("targets") or []
    for t in targets:
        out.emit({"type": "reconcile-target", **t}, printable(_target_text(t, dry_run)))
    for result in answer.get("results") or []:
        line = f"  {result.get('action')}: {result.get('status')} {result.get('message', '')}"
        out.emit(result, printable(line))
    generation = answer.get("generation")
    if answer.get("ok"):
        if not targets:
            text = (
                "nothing to reconcile: every present namespace is handled as policy "
                f"generation {generation} says"
            )
        else:
            text = f"{'would reconcile' if dry_run else 'reconciled'} {len(targets)} target(s)"
        done = {"type": "reconciled", "nsid": None, "generation": generation}
        out.emit(done | {"dry_run": dry_run, "targets": len(targets)}, text)
        return Exit.OK
    code = exit_for_reason(answer.get("reason"))
    out.emit(
        {
            "type": "reconcile-failed",
            "nsid": None,
            "error": answer.get("error"),
            "reason": answer.get("reason"),
            "exit": int(code),
        },
        printable(f"NOT reconciled: {answer.get('error')}"),
    )
    return code
