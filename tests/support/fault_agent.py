"""``nvme-agent`` in a mount namespace of its own, with parts of the machine broken (a script).

Usage: ``unshare -m --propagation private -- python fault_agent.py run ARGS...`` with
``NVME_AGENT_TEST_MOUNTS`` in the environment: a JSON list of ``["tmpfs", DIR]``,
``["mkdir", DIR]``, ``["touch", FILE]`` and ``["bind", SOURCE, TARGET]`` done in order (by
mount(2)) before the daemon starts.  This is how a test takes away what the machine gives
(the journal socket, ``systemctl``, a booted systemd) or plants a fake journald socket,
without touching the host: the namespace and its mounts die with the daemon.
``NVME_AGENT_TEST_CLOCK`` fakes the wall clock (see :func:`fake_wall_clock`).  The daemon
is the product's own CLI, unchanged.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

from nvme_agent.cli.main import main

MOUNTS_ENV = "NVME_AGENT_TEST_MOUNTS"
CLOCK_ENV = "NVME_AGENT_TEST_CLOCK"


MS_BIND = 4096
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2) itself: mount(8) may be among what a step hides."""
    args = [x.encode() if x is not None else None for x in (source, target, fstype)]
    if _libc.mount(*args, flags, data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def prepare(steps: list[list[str]]) -> None:
    for step in steps:
        if step[0] == "mkdir":
            os.makedirs(step[1], exist_ok=True)
        elif step[0] == "touch":
            with open(step[1], "a"):
                pass
        elif step[0] == "tmpfs":
            _mount("tmpfs", step[1], "tmpfs", 0, "mode=0755")
        else:
            _mount(step[1], step[2], None, MS_BIND, None)


def fake_wall_clock(path: str) -> None:
    """``time.time`` as the file at ``path`` says: ``+S``/``-S`` seconds off the real wall
    clock, or ``=T`` stopped at T.  Only CLOCK_REALTIME is faked, at the one boundary the
    daemon reads it through (libfaketime would do it in libc, but deadlocks with umockdev's
    preload); ``time.monotonic``, which every timeout uses, is untouched."""
    real = time.time

    def wall() -> float:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
        return float(text[1:]) if text.startswith("=") else real() + float(text or 0)

    time.time = wall


if __name__ == "__main__":
    if os.environ.get(CLOCK_ENV):
        fake_wall_clock(os.environ[CLOCK_ENV])
    prepare(json.loads(os.environ.get(MOUNTS_ENV, "[]")))
    sys.exit(main(sys.argv[1:]))
