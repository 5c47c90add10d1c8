"""Policy reloads off the event loop: parse in a worker thread, swap on the loop.

While a policy file is read, parsed and validated, the loop keeps taking udev events,
answering control requests and pinging the watchdog.  Whatever the loader does (a
:class:`PolicyError`, ``RecursionError``, ``MemoryError``, any other exception, or no answer
within ``timeout`` seconds), the outcome is an answer, and ``READY=1`` follows every
``RELOADING=1``.

Concurrent reloads **coalesce**: while one parse runs, every further request joins a single
follow-up parse that starts when the running one ends, so each requester gets the result of
a parse that began after its request (it sees the file as it was when it asked, or newer),
and a burst of N requests costs at most two parses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nvme_agent.policy import Policy, PolicyError
from nvme_agent.service.answers import Answer, Reason, failure

log = logging.getLogger(__name__)

Loader = Callable[[Path], Policy]

#: At most this many error lines in an answer or a start-up error (the rest are counted).
MAX_ERROR_LINES = 20


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """A parsed policy, or why there is none."""

    policy: Policy | None
    errors: tuple[str, ...] = ()
    reason: Reason = Reason.INVALID_POLICY


def error_lines(exc: BaseException) -> list[str]:
    """One line per problem, at most :data:`MAX_ERROR_LINES` (then a count)."""
    if isinstance(exc, PolicyError):
        lines = [str(issue) for issue in exc.issues]
    elif isinstance(exc, RecursionError):
        lines = ["the policy is nested too deeply to be read (RecursionError)"]
    elif isinstance(exc, MemoryError):
        lines = ["the policy is too large to be read (MemoryError)"]
    elif isinstance(exc, OSError):
        lines = [str(exc)]
    else:
        lines = [f"cannot read the policy: {type(exc).__name__}: {exc}"]
    lines = [line if len(line) <= 500 else line[:500] + "..." for line in lines]
    if len(lines) > MAX_ERROR_LINES:
        extra = len(lines) - MAX_ERROR_LINES + 1
        lines = [*lines[: MAX_ERROR_LINES - 1], f"... and {extra} more problem(s)"]
    return lines


def read_policy(path: Path, load: Loader) -> LoadOutcome:
    """``load(path)`` that never raises."""
    try:
        return LoadOutcome(load(path))
    except Exception as exc:  # RecursionError and MemoryError are Exceptions too
        return LoadOutcome(None, tuple(error_lines(exc)))


class Reloader:
    """Runs reloads one at a time in worker threads, coalescing the requests that arrive
    meanwhile (see the module docstring).

    ``reloading()`` runs on the loop before each parse (``RELOADING=1``), ``apply(outcome)``
    after it (swap or keep; returns the answer), ``ready()`` always after ``apply``
    (``READY=1``), even when ``apply`` raised.
    """

    def __init__(
        self,
        path: Path,
        load: Loader,
        timeout: float,
        *,
        reloading: Callable[[], object],
        apply: Callable[[LoadOutcome], Answer],
        ready: Callable[[], object],
    ) -> None:
        self.path = path
        self.load = load
        self.timeout = timeout
        self._reloading = reloading
        self._apply = apply
        self._ready = ready
        self.parses = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: asyncio.Future[Answer] | None = None
        self._next: asyncio.Future[Answer] | None = None
        self._token = 0
        self._timer: asyncio.TimerHandle | None = None

    def request(self) -> asyncio.Future[Answer]:
        """A reload; the future's result is its answer (call on the loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._running is None:
            self._running = loop.create_future()
            self._start()
            return self._running
        if self._next is None:
            self._next = loop.create_future()
        return self._next

    @property
    def busy(self) -> bool:
        return self._running is not None

    def _start(self) -> None:
        assert self._loop is not None
        loop, token = self._loop, self._token
        self.parses += 1
        self._reloading()

        def work() -> None:
            outcome = read_policy(self.path, self.load)
            # RuntimeError: the loop closed while we parsed, and nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finish, token, outcome)

        try:
            threading.Thread(target=work, name="policy-reload", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: fail this reload, not the loop
            broken = LoadOutcome(None, (f"cannot start a reload thread: {exc}",), Reason.INTERNAL)
            loop.call_soon(self._finish, token, broken)
            return
        late = LoadOutcome(
            None,
            (f"the policy was not read within {self.timeout:g}s; the old policy stays",),
            Reason.TIMEOUT,
        )
        self._timer = loop.call_later(self.timeout, self._finish, token, late)

    def _finish(self, token: int, outcome: LoadOutcome) -> None:
        if token != self._token:
            return  # the late result of a parse that already timed out
        self._token += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            answer = self._apply(outcome)
        except Exception as exc:
            log.exception("applying the reloaded policy failed")
            answer = failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            self._ready()
        done, self._running = self._running, None
        if done is not None and not done.done():
            done.set_result(answer)
        if self._next is not None:
            self._running, self._next = self._next, None
            self._start()

    def cancel(self) -> None:
        """The daemon stops: answer whoever still waits."""
        self._token += 1
        if self._timer is not None:
            self._timer.cancel()
        for fut in (self._running, self._next):
            if fut is not None and not fut.done():
                fut.set_result(failure(Reason.STOPPING, "the daemon is stopping; not reloaded"))
        self._running = self._next = None
