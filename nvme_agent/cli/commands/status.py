"""``nvme-agent status``: controllers and namespaces by subsystem, as a table or JSON lines."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from nvme_agent.cli.commands.common import add_json, add_runtime_dir, control_socket, with_exits
from nvme_agent.cli.exits import CliError, DeniedError, Exit, NoDaemonError
from nvme_agent.cli.output import Reporter, printable
from nvme_agent.outputs.times import timestamp
from nvme_agent.policy.units import format_size
from nvme_agent.service.control import ControlError, request

log = logging.getLogger(__name__)

EXITS = {
    Exit.OK: "printed",
    Exit.FAILED: "printed, but --settle timed out with actions still running",
    Exit.NO_DAEMON: "--settle without a running daemon (it needs one)",
}

#: The table's columns, in order.  ``RULE`` only when the daemon answers.
COLUMNS = ("NSID", "DEVICE", "SIZE", "FS", "LABEL", "MOUNT", "RULE", "IDENTITY")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="show NVMe controllers and namespaces (from the daemon, else from udev)",
        description=with_exits(
            "Show each NVMe subsystem with its controllers and a table of its namespaces: "
            "NSID, device, size, filesystem, label, mountpoint, the matching policy rule "
            "(and whether the plan that ran is what the policy in force says: 'not applied "
            "(policy changed)' after a reload until `nvme-agent reconcile`), and the identity, "
            "weak ones flagged; below each namespace its paths (controller, transport, "
            "address, state).  Asks the running daemon; when none runs, reads udev and "
            "/proc/self/mountinfo directly (no rules, no counters then).  --json prints a "
            "'summary' record (source, counts, the daemon's counters), then one record per "
            "controller and per namespace.",
            EXITS,
        ),
    )
    add_runtime_dir(p)
    p.add_argument(
        "--settle",
        type=float,
        metavar="SECONDS",
        help="first let the daemon take in the udev events already delivered and wait (up to "
        "SECONDS) until it has no action queued or running (needs the daemon)",
    )
    add_json(p)
    p.set_defaults(func=run)


def _local_status() -> dict[str, Any]:
    import pyudev

    from nvme_agent.actions import mountinfo
    from nvme_agent.service.status import counts, mounts_by_source, topology_status
    from nvme_agent.topology.intake import enumerate_records
    from nvme_agent.topology.tracker import Topology

    topo = Topology()
    topo.apply_all(enumerate_records(pyudev.Context()))
    try:
        mounts = mounts_by_source((m.source, m.mountpoint) for m in mountinfo.read())
    except (OSError, ValueError) as exc:
        log.warning("cannot read mountinfo: %s", exc)
        mounts = {}
    view = topology_status(topo.snapshot(), mounts)
    return view | {"source": "udev", "time": timestamp(), "counts": counts(view)}


def _from_daemon(path: str, settle: float | None) -> tuple[dict[str, Any], str | None]:
    """The daemon's status (after settling when asked) and why it did not settle."""
    unsettled = None
    if settle is not None:
        settled = request(path, {"cmd": "settle", "timeout": settle}, timeout=settle + 10)
        if not settled.get("ok"):
            unsettled = str(settled.get("error") or "not settled")
    data = request(path, {"cmd": "status"}, timeout=60)
    if not data.get("ok", True):
        raise CliError(f"the daemon refused: {data.get('error')}", Exit.FAILED)
    return data | {"source": "daemon"}, unsettled


def _gather(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    path = control_socket(args.runtime_dir)
    if not os.path.exists(path):
        if args.settle is not None:
            raise NoDaemonError(f"--settle needs the running daemon; none listens on {path}")
        return _local_status(), None
    try:
        return _from_daemon(path, args.settle)
    except ControlError as exc:
        if args.settle is not None:
            if isinstance(exc.__cause__, PermissionError):
                raise DeniedError(f"{exc} (--settle needs the daemon)") from exc
            raise NoDaemonError(f"{exc}; --settle needs the running daemon") from exc
        log.warning("%s; reading udev directly", exc)
        return _local_status(), None


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` record: where the view comes from, its counts, and (from the
    daemon) the policy, the generation and the counters."""
    record: dict[str, Any] = {
        "type": "summary",
        "nsid": None,
        "time": data.get("time"),
        "source": data.get("source"),
        **(data.get("counts") or {}),
        "subsystems": data.get("subsystems") or [],
    }
    for key in ("status", "policy", "policy_generation", "dry_run", "counters"):
        record[key] = data.get(key)
    return record


def run(args: argparse.Namespace) -> int:
    data, unsettled = _gather(args)
    out = Reporter(args.json)
    record = summary(data)
    out.emit(record, _summary_text(record))
    daemon = data.get("source") == "daemon"
    namespaces = data.get("namespaces") or []
    controllers = data.get("controllers") or []
    for c in controllers:
        out.emit({"type": "controller", "nsid": None, **c})
    for ns in namespaces:
        out.emit({"type": "namespace", **ns})
    if not args.json:
        out.write(render_table(data.get("subsystems") or [], controllers, namespaces, daemon))
    if unsettled is not None:
        print(f"nvme-agent status: not settled: {printable(unsettled)}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK


def _summary_text(record: dict[str, Any]) -> str:
    if record["source"] != "daemon":
        head = "source: udev (no daemon answered: no rules, no counters)"
    else:
        head = f"source: daemon ({record.get('status')})"
        head += f"; policy {record.get('policy')}, generation {record.get('policy_generation')}"
        if record.get("dry_run"):
            head += "; DRY RUN"
    pending = record.get("not_applied") or 0
    if pending:
        s = "" if pending == 1 else "s"
        head += f"\n{pending} namespace{s} not applied (policy changed): `nvme-agent reconcile`"
    if not record.get("controllers") and not record.get("namespaces"):
        head += "\nno NVMe controllers or namespaces found"
    return head


# ---------------------------------------------------------------------- the table
def render_table(
    subsystems: list[dict[str, Any]],
    controllers: list[dict[str, Any]],
    namespaces: list[dict[str, Any]],
    daemon: bool,
) -> str:
    """Each subsystem: its controllers, then one table row per namespace and partition,
    each namespace followed by its paths.  Every device string is escaped."""
    columns = [c for c in COLUMNS if daemon or c != "RULE"]
    by_name = {c.get("name"): c for c in controllers}
    by_nsid: dict[tuple[str | None, int], dict[str, Any]] = {
        (n.get("subsysnqn"), n["nsid"]): n for n in namespaces
    }
    blocks: list[tuple[list[str], list[list[str] | str]]] = []
    for group in subsystems:
        nqn = group.get("subsysnqn")
        head = [f"subsystem {printable(nqn or '?')}"]
        head += [
            f"  {_controller(by_name.get(name) or {'name': name})}" for name in group["controllers"]
        ]
        rows: list[list[str] | str] = []
        for nsid in group["nsids"]:
            ns = by_nsid.get((nqn, nsid))
            if ns is not None:
                rows += _namespace_rows(ns, daemon)
        blocks.append((head, rows))
    widths = _widths(columns, [r for _h, rows in blocks for r in rows if isinstance(r, list)])
    lines: list[str] = []
    for head, rows in blocks:
        lines += head
        if rows:
            lines.append("  " + _row(list(columns), widths))
        for row in rows:
            lines.append("  " + (_row(row, widths) if isinstance(row, list) else row))
    return "\n".join(lines)


def _widths(columns: list[str], rows: Iterable[list[str]]) -> list[int]:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    return widths


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=False)).rstrip()


def _controller(c: dict[str, Any]) -> str:
    bits = [f"controller {c.get('name')}:"]
    if c.get("model"):
        bits.append(f"{c['model']},")
    if c.get("serial"):
        bits.append(f"serial {c['serial']},")
    bits.append(" ".join(str(c[k]) for k in ("transport", "address", "state") if c.get(k)))
    return printable(" ".join(bits).rstrip(","))


def _rule(item: dict[str, Any]) -> str:
    rule = item.get("rule")
    text = str(rule) if rule is not None else "-"
    if item.get("applied") is False:
        was = item.get("applied_rule")
        text += ", not applied (policy changed" + (f"; ran: {was})" if was else ")")
    return text


def _mounts(item: dict[str, Any]) -> str:
    return ",".join(item.get("mountpoints") or []) or "-"


def _cells(item: dict[str, Any], nsid: str, daemon: bool, identity: str) -> list[str]:
    fs = item.get("fs") or {}
    cells = [
        nsid,
        str(item.get("devnode") or "?"),
        format_size(item.get("size_bytes")),
        str(fs.get("type") or "-"),
        str(fs.get("label") or "-"),
        _mounts(item),
    ]
    if daemon:
        cells.append(_rule(item))
    cells.append(identity)
    return [printable(c) for c in cells]


def _namespace_rows(ns: dict[str, Any], daemon: bool) -> list[list[str] | str]:
    identity = str(ns.get("identity"))
    if ns.get("identity_weak"):
        identity += " (weak: cannot tell a swapped image)"
    first = _cells(ns, str(ns["nsid"]), daemon, identity)
    if ns.get("ejected"):
        first[COLUMNS.index("MOUNT")] = "ejected: safe to remove"
    rows: list[list[str] | str] = [first]
    for part in ns.get("partitions") or []:
        rows.append(_cells(part, "", daemon, f"partition {part.get('number')}"))
    paths = ns.get("paths") or []
    if paths:
        rows.append("      paths: " + "; ".join(_path(p) for p in paths))
    return rows


def _path(p: dict[str, Any]) -> str:
    where = " ".join(str(p[k]) for k in ("transport", "address", "state") if p.get(k))
    device = f" {p['device']}" if p.get("device") else ""
    return printable(f"{p.get('controller') or '?'}{device}" + (f" ({where})" if where else ""))
