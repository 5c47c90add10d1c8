"""`nvme-agent watch`: subscribe to the daemon's event stream and print each event."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from typing import Any

from nvme_agent.cli.output import Reporter

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_DIR = "/run/nvme-agent"
EVENTS_SOCKET = "events.sock"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "watch",
        help="print the agent's events (topology changes, plans, action results) as they happen",
        description=(
            "Connect to the running agent's event stream (RUNTIME_DIR/events.sock) and print "
            "one line per topology change, plan and action result until the agent closes "
            "the stream or you press Ctrl-C.  A subscriber that stops reading is "
            "disconnected by the agent after a bounded backlog; just run watch again."
        ),
    )
    p.add_argument(
        "--runtime-dir",
        default=DEFAULT_RUNTIME_DIR,
        metavar="DIR",
        help=f"the daemon's runtime directory (default: {DEFAULT_RUNTIME_DIR})",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
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
    """One human line for an event record."""
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
    extra = {k: v for k, v in record.items() if k not in ("type", "nsid")}
    return kind + ns + (f" {json.dumps(extra, default=str)}" if extra else "")


def run(args: argparse.Namespace) -> int:
    path = args.socket or os.path.join(args.runtime_dir, EVENTS_SOCKET)
    if args.count is not None and args.count < 1:
        print("nvme-agent watch: --count must be at least 1", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        print(
            f"nvme-agent watch: cannot connect to {path}: {exc.strerror} "
            "(is the agent running? right --runtime-dir? member of group nvme-agent?)",
            file=sys.stderr,
        )
        return 1
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
                return 0
    if args.count is not None:
        print(f"nvme-agent watch: stream ended after {seen} events", file=sys.stderr)
        return 1
    return 0
