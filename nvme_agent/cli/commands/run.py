"""``nvme-agent run``: the foreground daemon (for systemd ``Type=notify``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.commands.common import (
    add_policy,
    add_runtime_dir,
    add_state_dir,
    with_exits,
)
from nvme_agent.cli.exits import Exit

EXITS = {
    Exit.OK: "stopped by SIGTERM after draining",
    Exit.FAILED: "cannot start (an invalid policy, a directory it cannot create) or failed",
}

log = logging.getLogger(__name__)

#: The interpreter's thread switch interval in the daemon, in seconds (CPython's default is
#: 5 ms).  While a worker thread computes (a reload's parse, the assessment after it: up to a
#: second with a thousand rules and namespaces), the loop gets the GIL back only when the
#: interval ends, and it gives the GIL up at every system call an event makes: at 5 ms an
#: event waited up to 120-155 ms behind a reload and its assessment, at 1 ms 40-51 ms
#: (CONTRIBUTING.md, sixth round).
#: Without such a thread nothing waits for the GIL and the interval changes nothing.
SWITCH_INTERVAL = 0.001


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description=with_exits(
            "Watch udev for NVMe namespaces, log every topology change and act on the policy. "
            "Sends READY=1 to systemd once coldplug is reconciled; SIGHUP reloads the policy "
            "(a broken file keeps the old one); SIGTERM drains running actions and exits 0.",
            EXITS,
        ),
    )
    add_policy(p)
    add_runtime_dir(p)
    add_state_dir(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and log every action without executing any",
    )
    p.add_argument(
        "--log-target",
        choices=("auto", "journal", "stderr"),
        default="auto",
        help=(
            "where the topology log and the daemon's own log go (auto: the topology log to "
            "the journal when journald runs, the daemon's log natively, with fields, when "
            "stderr is connected to the journal as under systemd)"
        ),
    )
    metrics = p.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help=(
            "keep FILE current with the daemon's counters in the Prometheus text format (for "
            "node_exporter's textfile collector, e.g. "
            "/var/lib/prometheus/node-exporter/nvme-agent.prom): replaced atomically at most "
            "once a second after a change; the metrics are listed in nvme-agent(8)"
        ),
    )
    hint(metrics, Completion.FILE)
    p.add_argument(
        "--max-workers",
        type=int,
        default=4,
        help="namespaces whose actions may run at the same time (default 4)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to let running actions finish on stop (default 30)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to let coldplug actions finish before reporting READY=1 (default 60)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nvme_agent.service.daemon import DaemonConfig, StartupError, run_daemon

    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    config = DaemonConfig(
        policy_path=args.policy,
        runtime_dir=args.runtime_dir,
        state_dir=args.state_dir,
        dry_run=args.dry_run,
        log_target=args.log_target,
        max_workers=args.max_workers,
        drain_timeout=args.drain_timeout,
        ready_timeout=args.ready_timeout,
        metrics_file=args.metrics_file,
        owns_process=True,
    )
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        return asyncio.run(run_daemon(config))
    except StartupError as exc:
        log.error("%s", exc)  # one screen at most: no traceback for a bad policy
        return Exit.FAILED
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return Exit.FAILED
