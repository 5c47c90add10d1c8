"""``nvme-agent status``: controllers, namespaces, identities, filesystems, mountpoints."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from nvme_agent.cli.commands.common import add_json, add_runtime_dir, control_socket
from nvme_agent.cli.output import Reporter
from nvme_agent.policy.units import format_size
from nvme_agent.service.control import ControlError, request

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="show NVMe controllers and namespaces (from the daemon, else from udev)",
        description=(
            "Show controllers, namespaces, identities (weak ones flagged), sizes, filesystems, "
            "mountpoints and the matching policy rule. Asks the running daemon; when none "
            "runs, reads udev and /proc/self/mountinfo directly (no rule shown then)."
        ),
    )
    add_runtime_dir(p)
    p.add_argument(
        "--settle",
        type=float,
        metavar="SECONDS",
        help="first wait (up to SECONDS) until the daemon has no action queued or running",
    )
    add_json(p)
    p.set_defaults(func=run)


def _local_status() -> dict[str, Any]:
    import pyudev

    from nvme_agent.actions import mountinfo
    from nvme_agent.service.status import mounts_by_source, topology_status
    from nvme_agent.topology.intake import enumerate_records
    from nvme_agent.topology.tracker import Topology

    topo = Topology()
    topo.apply_all(enumerate_records(pyudev.Context()))
    try:
        mounts = mounts_by_source((m.source, m.mountpoint) for m in mountinfo.read())
    except (OSError, ValueError) as exc:
        log.warning("cannot read mountinfo: %s", exc)
        mounts = {}
    return topology_status(topo.snapshot(), mounts) | {"source": "udev"}


def run(args: argparse.Namespace) -> int:
    path = control_socket(args.runtime_dir)
    data: dict[str, Any]
    if os.path.exists(path):
        try:
            if args.settle is not None:
                settled = request(
                    path, {"cmd": "settle", "timeout": args.settle}, timeout=args.settle + 10
                )
                if not settled.get("ok"):
                    log.warning("not settled: %s", settled.get("error"))
            data = request(path, {"cmd": "status"}, timeout=10)
            data["source"] = "daemon"
        except ControlError as exc:
            log.warning("%s; reading udev directly", exc)
            data = _local_status()
    else:
        data = _local_status()
    out = Reporter(args.json)
    if not args.json:
        print(f"source: {data['source']}" + (f" ({data['status']})" if data.get("status") else ""))
    for c in data.get("controllers", []):
        out.emit(
            {"type": "controller", **c},
            f"{c['name']}: {c.get('model')} serial={c.get('serial')} "
            f"transport={c.get('transport')} nqn={c.get('subsysnqn')}",
        )
    for ns in data.get("namespaces", []):
        fs = ns.get("fs") or {}
        weak = " (weak: cannot detect a swapped image)" if ns.get("identity_weak") else ""
        lines = [
            f"  nsid {ns['nsid']}: {ns.get('devnode')} {format_size(ns.get('size_bytes'))} "
            f"via {','.join(ns.get('controllers') or []) or '?'}"
            + (" [multipath]" if ns.get("multipath") else ""),
            f"    identity {ns.get('identity')}{weak}",
        ]
        if fs:
            lines.append(f"    fs {fs.get('type')} label={fs.get('label')!r} uuid={fs.get('uuid')}")
        for mp in ns.get("mountpoints", []):
            lines.append(f"    mounted at {mp}")
        for part in ns.get("partitions", []):
            pfs = part.get("fs") or {}
            desc = f"{pfs.get('type')} label={pfs.get('label')!r}" if pfs else "no filesystem"
            lines.append(f"    partition {part.get('devnode')}: {desc}")
            for mp in part.get("mountpoints", []):
                lines.append(f"      mounted at {mp}")
        if ns.get("rule"):
            lines.append(f"    rule {ns['rule']}")
        if ns.get("ejected"):
            lines.append("    ejected: safe to remove")
        out.emit({"type": "namespace", **ns}, "\n".join(lines))
    return 0
