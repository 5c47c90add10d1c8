"""sd_notify through systemd-python, safe where no service manager listens."""

from __future__ import annotations

import importlib
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=``, ``RELOADING=1``, ``WATCHDOG=1``, ``STOPPING=1``.

    Without ``NOTIFY_SOCKET`` every call is a no-op; a socket that points nowhere is logged
    once instead of raising (systemd-python raises FileNotFoundError there).
    """

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notify: Any = None
        self._warned = False
        if self.enabled:
            self._notify = importlib.import_module("systemd.daemon").notify

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        try:
            return bool(self._notify("\n".join(lines)))
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
                self._warned = True
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(int(usec) / 2_000_000, 0.05)
        except ValueError:
            return None
