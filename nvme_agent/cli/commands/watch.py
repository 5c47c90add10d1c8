"""`nvme-agent watch`: subscribe to the daemon's event stream and print each event."""

from __future__ import annotations

import argparse
import json
import logging
import socket
from pathlib import Path
from typing import Any

from nvme_agent.cli.commands.common import add_runtime_dir, with_exits
from nvme_agent.cli.exits import CliError, DeniedError, Exit, NoDaemonError, UsageError
from nvme_agent.cli.output import Reporter, printable
from nvme_agent.outputs.paths import RuntimePaths
from nvme_agent.outputs.times import local

log = logging.getLogger(__name__)

EXITS = {
    Exit.OK: "the stream ended, or N events were printed (--count)",
    Exit.FAILED: "the stream ended before N events (--count)",
    Exit.USAGE: "usage error",
    Exit.NO_DAEMON: "no daemon reachable",
    Exit.DENIED: "permission denied",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "watch",
        help="print the agent's events (topology changes, plans, action results) as they happen",
        description=with_exits(
            "Connect to the running agent's event stream (RUNTIME_DIR/events.sock) and print "
            "one line per topology change, plan and action result, each with its time, until "
            "the agent closes the stream or you press Ctrl-C.  A subscriber that stops reading is "
            "disconnected by the agent after a bounded backlog; just run watch again.",
            EXITS,
        ),
    )
    add_runtime_dir(p)
    p.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        help="event socket path (default: RUNTIME_DIR/events.sock)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the JSON lines as the agent sends them (one object per line)",
    )
    p.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="exit after N events",
    )
    p.set_defaults(func=run)


def summarize(record: dict[str, Any]) -> str:
    """One human line for an event record, after its time (disk- and user-supplied values
    escaped)."""
    return printable(f"{local(record.get('time'))} {_summary(record)}")


def _summary(record: dict[str, Any]) -> str:
    kind = str(record.get("type", "?"))
    nsid = record.get("nsid")
    ns = f" nsid={nsid}" if nsid is not None else ""
    if kind == "action-result":
        text = f"[{record.get('status')}] {record.get('action')}{ns}: {record.get('message', '')}"
        err = record.get("error")
        if err and err not in text:
            text += f" (error: {err})"
        return text
    if kind == "plan":
        actions = record.get("actions") or []
        kinds = ", ".join(str(a.get("kind", "?")) for a in actions if isinstance(a, dict))
        rule = record.get("rule")
        return (
            f"plan for {record.get('change')}{ns}"
            + (f" rule={rule}" if rule else "")
            + (f": {kinds}" if kinds else ": no actions")
        )
    if kind.startswith(("namespace-", "partition-", "controller-")):
        parts = [kind + ns]
        namespace = record.get("namespace")
        if isinstance(namespace, dict):
            for key in ("name", "devnode"):
                if namespace.get(key):
                    parts.append(str(namespace[key]))
                    break
        if record.get("ctrl"):
            parts.append(f"ctrl={record['ctrl']}")
        if record.get("reason"):
            parts.append(f"({record['reason']})")
        if record.get("coldplug"):
            parts.append("[coldplug]")
        return " ".join(parts)
    extra = {k: v for k, v in record.items() if k not in ("type", "nsid", "time")}
    return kind + ns + (f" {json.dumps(extra, default=str)}" if extra else "")


def connect(path: Path) -> socket.socket:
    """A connection to the event socket at ``path``, or the CLI error that says why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if isinstance(exc, PermissionError):
            raise DeniedError(
                f"cannot connect to {path}: {exc.strerror} (root or group nvme-agent only)"
            ) from exc
        raise NoDaemonError(
            f"cannot connect to {path}: {exc.strerror} "
            "(is the agent running? the right --runtime-dir?)"
        ) from exc
    return sock


def run(args: argparse.Namespace) -> int:
    path = args.socket or RuntimePaths(runtime_dir=args.runtime_dir).events_socket
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    sock = connect(path)
    reporter = Reporter(args.json)
    seen = 0
    with sock, sock.makefile("r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("ignoring a malformed event line: %.200s", line)
                continue
            if not isinstance(record, dict) or "type" not in record:
                log.warning("ignoring an event without a type: %.200s", line)
                continue
            reporter.emit(record, summarize(record))
            seen += 1
            if args.count is not None and seen >= args.count:
                return Exit.OK
    if args.count is not None:
        raise CliError(f"stream ended after {seen} of {args.count} events", Exit.FAILED)
    return Exit.OK
