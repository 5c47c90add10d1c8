"""Log refusals of local peers without letting a flood of them flood the log.

The first refusal of a kind is logged at once, with its details; later ones of the same kind
within ``window`` seconds are only counted, and :meth:`RefusalLog.flush` logs one summary
line per kind whose window has closed (the servers call it from a timer and at close).
Pure apart from the logger: the clock is a parameter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    opened: float
    more: int = 0


class RefusalLog:
    """One warning per kind and window, then one summary with the count of the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window = window
        self.clock = clock
        self.total = 0
        self._open: dict[str, _Window] = {}

    def refused(self, kind: str, message: str) -> bool:
        """Count one refusal; True when it was logged (the first of a new window)."""
        self.total += 1
        now = self.clock()
        current = self._open.get(kind)
        if current is not None and now - current.opened < self.window:
            current.more += 1
            return False
        if current is not None:
            self._summary(kind, current)
        self._open[kind] = _Window(now)
        self.logger.warning(
            "%s: %s (more of these are counted for %.0fs)", kind, message, self.window
        )
        return True

    def flush(self, everything: bool = False) -> None:
        """Log the summary of every window that has closed (all of them with
        ``everything``, e.g. when the server closes)."""
        now = self.clock()
        for kind, current in list(self._open.items()):
            if everything or now - current.opened >= self.window:
                del self._open[kind]
                self._summary(kind, current)

    def _summary(self, kind: str, current: _Window) -> None:
        if current.more:
            self.logger.warning(
                "%d more refusal(s) of this kind: %s, in %.0fs",
                current.more,
                kind,
                self.clock() - current.opened,
            )
