"""``nvme-agent run --dry-run`` whose policy reloads wait on a FIFO (run as a script).

Usage: gated_agent.py POLICY WORKDIR FIFO.  The first load (the start) is the real loader;
every later one first waits until the test opens the FIFO for writing and closes it: a slow
parse the test releases, not a sleep.  Used where the daemon must run inside a umockdev bed
(LD_PRELOAD), i.e. in a child process.

The FIFO is opened without blocking and then polled: umockdev's preload holds a process-wide
lock during ``open()``, so a blocking FIFO open would stall every thread of the daemon, the
event loop included, which is just what the test must not see.  Linux reports POLLHUP to
this reader only once a writer opened and closed the FIFO after it.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
from pathlib import Path

from nvme_agent.policy import Policy, load_policy
from nvme_agent.service.daemon import Daemon, DaemonConfig


def main(policy: Path, workdir: Path, fifo: Path) -> int:
    calls = 0

    def load(path: Path) -> Policy:
        nonlocal calls
        calls += 1
        if calls > 1:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            try:
                waiting = select.poll()
                waiting.register(fd, select.POLLIN | select.POLLHUP)
                waiting.poll()
            finally:
                os.close(fd)
        return load_policy(path)

    config = DaemonConfig(
        policy_path=policy,
        runtime_dir=workdir / "run",
        state_dir=workdir / "state",
        dry_run=True,
        log_target="stderr",
    )
    return asyncio.run(Daemon(config, load=load).run())


if __name__ == "__main__":
    sys.exit(main(*(Path(a) for a in sys.argv[1:4])))
