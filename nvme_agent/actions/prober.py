"""Long-lived probe helpers (:mod:`~nvme_agent.actions.probehelper`): the mount-time reprobe
without an exec of ``blkid`` per mount (issue 13).

Up to ``size`` helpers run, one per concurrent probe.  A probe that finds no helper free
(all busy, or the first ones still starting) returns None and the caller runs ``blkid -p`` as
before, so a slow device never makes another mount wait for it.  A helper that dies, answers
garbage or misses the deadline is killed and replaced later; only a missed deadline fails the
probe (the time is spent), anything else falls back to ``blkid -p``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.proc import BASE_ENV
from nvme_agent.topology.text import escape

log = logging.getLogger("nvme_agent.actions")

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probehelper.py")
#: An answer is one short JSON line; more is garbage.
_MAX_ANSWER = 4096


@dataclass(frozen=True, slots=True)
class Probe:
    """One answer: ``rc`` as blkid(8) exits (0, 2 nothing, 8 ambivalent, 4 error)."""

    rc: int
    fstype: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _Helper:
    proc: subprocess.Popen[bytes]
    lock: threading.Lock = field(default_factory=threading.Lock)
    dead: bool = False


class Prober:
    """A pool of probe helpers; thread-safe.  :meth:`close` ends them."""

    def __init__(self, size: int, argv: list[str] | None = None) -> None:
        self.size = size
        self.argv = argv if argv is not None else [sys.executable, "-I", "-S", HELPER]
        self._lock = threading.Lock()
        self._helpers: list[_Helper] = []
        self._dying: list[subprocess.Popen[bytes]] = []
        self._closed = False

    def probe(self, devnode: str, deadline: Deadline) -> Probe | None:
        """What the device holds now, or None: run ``blkid -p`` instead."""
        if "\n" in devnode or "\0" in devnode:
            return None  # not a line of the helper's input: blkid takes any path
        helper = self._take()
        if helper is None:
            return None
        try:
            return self._ask(helper, devnode, deadline)
        finally:
            helper.lock.release()

    def close(self) -> None:
        """End every helper (their input closes: they exit; killed if they do not)."""
        with self._lock:
            self._closed = True
            procs = [h.proc for h in self._helpers] + self._dying
            self._helpers, self._dying = [], []
        for proc in procs:
            _end(proc)

    def _take(self) -> _Helper | None:
        """A free helper, locked for the caller; None when none is (one more is started if the
        pool is not full: it serves the next probe)."""
        with self._lock:
            if self._closed:
                return None
            self._bury()
            for helper in self._helpers:
                if helper.lock.acquire(blocking=False):
                    return helper
            if len(self._helpers) < self.size:
                self._start()
        return None

    def _bury(self) -> None:
        """Kill the dead helpers and reap what has exited, without waiting (a helper stuck
        in the kernel on a device exits when the kernel lets it)."""
        for helper in [h for h in self._helpers if h.dead]:
            self._helpers.remove(helper)
            helper.proc.kill()
            _close_pipes(helper.proc)
            self._dying.append(helper.proc)
        self._dying = [p for p in self._dying if p.poll() is None]

    def _start(self) -> None:
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=dict(BASE_ENV),
                cwd="/",
            )
        except OSError as exc:
            log.warning("cannot start the probe helper (blkid -p is used): %s", exc)
            return
        self._helpers.append(_Helper(proc))

    def _ask(self, helper: _Helper, devnode: str, deadline: Deadline) -> Probe | None:
        proc = helper.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            os.write(proc.stdin.fileno(), os.fsencode(devnode) + b"\n")
            line = _read_line(proc.stdout.fileno(), deadline)
        except TimeoutError as exc:
            helper.dead = True
            proc.kill()
            raise ActionError(
                f"probing {devnode} did not finish within {deadline.seconds:g}s (killed)"
            ) from exc
        except OSError as exc:
            helper.dead = True
            log.warning("probe helper failed (%s); blkid -p is used", exc)
            return None
        answer = _parse(line)
        if answer is None:
            helper.dead = True
            log.warning("probe helper gave no answer for %s; blkid -p is used", escape(devnode))
        return answer


def _read_line(fd: int, deadline: Deadline) -> bytes:
    """One line from ``fd`` within the deadline; b"" at end of file."""
    data = b""
    while b"\n" not in data and len(data) < _MAX_ANSWER:
        ready, _, _ = select.select([fd], [], [], deadline.remaining(floor=0.0))
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, _MAX_ANSWER)
        if not chunk:
            return b""
        data += chunk
    return data


def _parse(line: bytes) -> Probe | None:
    try:
        data = json.loads(line)
        rc, fstype, error = data["rc"], data.get("type"), data.get("error")
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(rc, int) or not isinstance(fstype, str | None):
        return None
    return Probe(rc, fstype, error if isinstance(error, str) else None)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Close its input (a helper exits at its end), then kill it if it does not; bounded."""
    _close_pipes(proc)
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
