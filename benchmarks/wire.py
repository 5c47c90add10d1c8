"""The load generator: the bed's own uevent datagrams, recorded once and replayed at full speed.

The bed's sender writes every sysfs file of a device before it sends its event (about 20 ms
per namespace), so it cannot load a daemon.  Instead a :class:`Recorder` listens in the bed
like one more ``pyudev`` monitor and keeps the exact datagrams the bed sends (libudev's
monitor format, with the BPF filter hashes); a :class:`Sender` then delivers them to one
chosen listener, timestamped, as fast as that listener reads.  What a datagram is about comes
from its own properties (:func:`describe`).

Receivers are timestamped on the benchmark side: :class:`EventTap` (the daemon's event stream)
and :class:`LineTap` (a bare monitor's acknowledgements on a pipe) stamp each line when it
arrives, so both figures include one hop back to the benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import IO, Any

#: What a plan line and an action result line of the event stream contain (``json.dumps``'s
#: separators): lines without it are not decoded.
PLAN = b'"type": "plan"'
RESULT = b'"type": "action-result"'
#: A listener name the preload never gives a real monitor (it uses ``event<fd>``).
RECORDER_NAME = "event990001"
HEADER = 40


def describe(datagram: bytes) -> dict[str, str]:
    """The properties of a libudev monitor datagram (``ACTION``, ``DEVPATH``...)."""
    props: dict[str, str] = {}
    for item in datagram[HEADER:].split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            props[key] = value
    return props


class Recorder:
    """A listener socket in the bed that keeps every datagram the bed sends, in order."""

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, RECORDER_NAME)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.datagrams: list[bytes] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self.datagrams.append(data)
                self._cond.notify_all()

    def take(self, count: int, timeout: float = 60.0) -> list[bytes]:
        """The next ``count`` datagrams (they are already sent: wait for the reader only)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.datagrams) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"recorded {len(self.datagrams)} of {count} datagrams")
                self._cond.wait(remaining)
            taken, self.datagrams = self.datagrams[:count], self.datagrams[count:]
        return taken

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # first, so that the bed's sender skips it
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sender:
    """Delivers datagrams to one listener; blocks while its queue is full, like a slow reader
    makes a full netlink buffer (which the kernel would overrun instead)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.connect(path)

    def send(self, datagram: bytes) -> int:
        """Send one; the monotonic time (ns) just before it left."""
        stamp = time.monotonic_ns()
        self.sock.send(datagram)
        return stamp

    def close(self) -> None:
        self.sock.close()


Matcher = Callable[[Any], bool]


class _Tap:
    """Timestamped items from a reader thread, and waits on them.

    The reader only stamps and stores raw items: it must keep up with a daemon that publishes
    thousands of lines in a burst (the event stream drops a subscriber that falls 1 MiB
    behind).  Items are decoded when a waiter first looks at them.
    """

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []
        self.closed = False
        self._decoded: dict[int, Any] = {}
        self._decode_lock = threading.Lock()
        self._cond = threading.Condition()

    def decode(self, raw: Any) -> Any:
        return raw

    def _add(self, stamp: int, items: list[Any]) -> None:
        with self._cond:
            self.items.extend((stamp, item) for item in items)
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _item(self, index: int) -> tuple[int, Any]:
        """Item ``index`` decoded; called without the condition held, so that the reader is
        never kept waiting while a waiter decodes (items only ever get appended)."""
        stamp, raw = self.items[index]
        with self._decode_lock:
            if index not in self._decoded:
                self._decoded[index] = self.decode(raw)
            return stamp, self._decoded[index]

    def _candidate(self, index: int, needle: bytes | None) -> bool:
        """Whether item ``index`` may match: raw lines without ``needle`` are not decoded."""
        raw = self.items[index][1]
        return needle is None or not isinstance(raw, bytes) or needle in raw

    def _await_more(self, index: int, deadline: float) -> bool:
        """Wait until there is an item at ``index``; False when closed or out of time."""
        with self._cond:
            while len(self.items) <= index:
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait(
        self, match: Matcher, start: int, timeout: float, needle: bytes | None = None
    ) -> tuple[int, int, Any]:
        """(index, arrival ns, item) of the first item at or after ``start`` that matches."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            if not self._await_more(index, deadline):
                if self.closed:
                    raise RuntimeError("the receiver went away")
                raise TimeoutError(f"nothing matching within {timeout:.1f}s")
            if self._candidate(index, needle):
                stamp, item = self._item(index)
                if match(item):
                    return index, stamp, item
            index += 1

    def wait_count(
        self, match: Matcher, start: int, count: int, timeout: float, needle: bytes | None = None
    ) -> tuple[int, int | None]:
        """Wait for ``count`` matching items from ``start``: (how many came, arrival ns of the
        last of them, or ``None`` when fewer than ``count`` came within ``timeout``)."""
        deadline = time.monotonic() + timeout
        index, seen, last = start, 0, 0
        while seen < count:
            if not self._await_more(index, deadline):
                return seen, None
            if self._candidate(index, needle):
                stamp, item = self._item(index)
                if match(item):
                    seen, last = seen + 1, stamp
            index += 1
        return seen, last

    def count(self, match: Matcher, start: int = 0, needle: bytes | None = None) -> int:
        return sum(
            1
            for i in range(start, len(self))
            if self._candidate(i, needle) and match(self._item(i)[1])
        )

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)


class EventTap(_Tap):
    """A subscriber of the daemon's event stream; each JSON line stamped on arrival."""

    def decode(self, raw: Any) -> Any:
        return json.loads(raw)

    def __init__(self, path: str) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._thread = threading.Thread(target=self._read, name="event-tap", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while chunk := self.sock.recv(1 << 20):
                stamp = time.monotonic_ns()
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                self._add(stamp, [line for line in lines if line])
        except OSError:
            pass
        finally:
            self._close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


class LineTap(_Tap):
    """Lines of a child's stdout, each stamped on arrival."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._thread = threading.Thread(target=self._read, name="line-tap", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.stream:
                self._add(time.monotonic_ns(), [line.rstrip("\n")])
        except (OSError, ValueError):
            pass
        finally:
            self._close()
