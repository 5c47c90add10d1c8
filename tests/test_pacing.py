"""How often the daemon does what a burst of events asks for (``service/pacing.py``), on a
loop whose clock and queue the test turns by hand: no sleeps, no real time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from nvme_agent.service.pacing import AtMostEvery, OncePerIteration


class ManualLoop:
    """``call_soon``/``call_later``/``time`` of an event loop, run by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 100.0
        self.queue: list[tuple[float, int, asyncio.Handle]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], None]) -> asyncio.Handle:
        return self.call_later(0.0, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.Handle:
        handle = asyncio.Handle(callback, (), cast(Any, self))
        self._seq += 1
        self.queue.append((self.now + delay, self._seq, handle))
        return handle

    def advance(self, seconds: float = 0.0) -> None:
        """Move the clock on and run what is due, in order."""
        self.now += seconds
        while due := sorted(e for e in self.queue if e[0] <= self.now):
            self.queue.remove(due[0])
            if not due[0][2].cancelled():
                due[0][2]._run()

    def get_debug(self) -> bool:  # asyncio.Handle asks
        return False


def paced(kind: str) -> tuple[ManualLoop, Any, list[float]]:
    loop, runs = ManualLoop(), []
    action = lambda: runs.append(loop.now)  # noqa: E731
    pacer: Any = OncePerIteration(action) if kind == "once" else AtMostEvery(action, 0.25)
    pacer.loop = cast(asyncio.AbstractEventLoop, loop)
    return loop, pacer, runs


def test_once_per_iteration_runs_once_for_a_burst_and_never_when_idle() -> None:
    loop, pacer, runs = paced("once")
    loop.advance(10)
    assert runs == []  # nobody asked: nothing scheduled
    for _ in range(100):
        pacer()
    loop.advance()
    assert runs == [110.0]
    pacer()
    loop.advance()
    assert runs == [110.0, 110.0]


def test_at_most_every_runs_at_once_then_once_per_interval_and_keeps_the_last_ask() -> None:
    loop, pacer, runs = paced("every")
    pacer()
    loop.advance()
    assert runs == [100.0]  # the first ask: at once
    for _ in range(50):  # a burst within the interval
        pacer()
        loop.advance()
    loop.advance(0.125)
    assert runs == [100.0]
    loop.advance(0.125)
    assert runs == [100.0, 100.25]  # the last ask, when the interval was over
    loop.advance(10)
    assert runs == [100.0, 100.25] and loop.queue == []  # idle: nothing more, nothing due
    pacer()
    loop.advance()
    assert runs[-1] == loop.now  # long after: at once again


def test_at_most_every_cancelled_runs_nothing() -> None:
    loop, pacer, runs = paced("every")
    pacer()
    loop.advance()
    pacer()
    pacer.cancel()
    loop.advance(1)
    assert runs == [100.0]
