"""How often the daemon does what many events ask for at once: a burst of hundreds of events
must not become hundreds of state-file writes or datagrams to the service manager.

* :class:`OncePerIteration`: at most once per loop iteration (the state: every batch is on
  disk before its actions run);
* :class:`AtMostEvery`: at once, then at most once per interval, the last request never lost
  (``STATUS=``: a line for ``systemctl status``, sent once per batch it cost a datagram and
  the status line's counting per event, issue 13).

Neither wakes an idle daemon: nothing is scheduled unless something asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class OncePerIteration:
    """Runs ``action`` at most once per loop iteration, however often it is asked for."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending = False

    def __call__(self) -> None:
        if self._pending or self.loop is None:
            return
        self._pending = True
        self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._pending = False
        self.action()


class AtMostEvery:
    """Runs ``action`` soon after it is asked for, then at most once per ``interval``
    seconds: asked again meanwhile, it runs once more when the interval is over."""

    def __init__(self, action: Callable[[], None], interval: float) -> None:
        self.action = action
        self.interval = interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self._due: asyncio.Handle | None = None
        self._last: float | None = None

    def __call__(self) -> None:
        if self._due is not None or self.loop is None:
            return
        wait = 0.0 if self._last is None else self._last + self.interval - self.loop.time()
        if wait <= 0:
            self._due = self.loop.call_soon(self._run)
        else:
            self._due = self.loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._due = None
        assert self.loop is not None
        self._last = self.loop.time()
        self.action()

    def cancel(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
