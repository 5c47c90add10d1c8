"""The event stream: a Unix socket that publishes one JSON line per topology change, plan
and action result, so applications can react without polling.

Subscribers just connect and read lines.  Publishing never blocks the agent: each subscriber
has a bounded buffer (``max_buffer`` bytes waiting in its transport); a subscriber that falls
that far behind (or is stuck) is disconnected with a logged notice and can reconnect.

Subscribers are bounded too: at most ``max_per_uid`` connections of one non-root user and
``max_subscribers`` of all non-root users together (root, trusted, is never refused).  A
refused subscriber gets one ``{"type": "refused", ...}`` line and is disconnected; a flood of
refusals is logged once per minute with a count (:class:`RefusalLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import select
import socket
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.outputs.refusals import RefusalLog
from nvme_agent.outputs.times import timestamp

log = logging.getLogger("nvme_agent.outputs.events")

DEFAULT_MAX_BUFFER = 1 << 20
DEFAULT_MAX_SUBSCRIBERS = 64
DEFAULT_MAX_PER_UID = 16


@dataclass(eq=False, slots=True)
class _Subscriber:
    sock: socket.socket
    peer: str
    fd: int
    uid: int = -1
    buf: bytearray = field(default_factory=bytearray)
    sent: int = 0


def _peer(sock: socket.socket | None) -> tuple[str, int]:
    """(``pid=N uid=N``, uid) of the connected process (SO_PEERCRED); uid -1 if unknown."""
    if sock is None:
        return "unknown peer", -1
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
    except OSError:
        return "unknown peer", -1
    return f"pid={pid} uid={uid}", uid


class EventStream:
    """The ``events.sock`` server (asyncio).  Create it, ``await start()``, ``publish()``.

    Guarantee: a subscriber whose ``connect()`` has returned receives every record published
    after that (pending connections are accepted before each publish), so a client can
    connect, then trigger something, without missing its events.
    """

    def __init__(
        self,
        path: str,
        mode: int = 0o660,
        group: str | None = "nvme-agent",
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        max_per_uid: int = DEFAULT_MAX_PER_UID,
    ) -> None:
        self.path = path
        self.mode = mode
        self.group = group
        self.max_buffer = max_buffer
        self.max_subscribers = max_subscribers
        self.max_per_uid = max_per_uid
        self.refusals = RefusalLog(log)
        self._per_uid: Counter[int] = Counter()
        self._listener: socket.socket | None = None
        self._subs: dict[int, _Subscriber] = {}
        self._inode: tuple[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = select.poll()  # is a connection waiting? without a failed accept()
        self._held: list[bytes] = []  # lines published with more=True, not sent yet

    @property
    def listening(self) -> bool:
        """Whether anybody subscribes now (accepting any that wait): a caller may skip
        building a record nobody would get."""
        self._accept_pending()
        return bool(self._subs)

    @property
    def subscriber_count(self) -> int:
        """Connected subscribers (accepting any that are waiting first)."""
        self._accept_pending()
        return len(self._subs)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket; not replacing it")
        log.info("removing stale event socket %s", self.path)
        os.unlink(self.path)

    def _bind(self) -> socket.socket:
        """Bind under a temporary name, fix mode and group, then rename into place, so the
        socket is never reachable with looser permissions than asked."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            mode = self.mode
            if self.group is not None:
                try:
                    os.chown(tmp, -1, grp.getgrnam(self.group).gr_gid)
                except KeyError:
                    mode &= 0o700
                    log.warning(
                        "group %r does not exist; %s is accessible to its owner only",
                        self.group,
                        self.path,
                    )
            os.chmod(tmp, mode)
            os.rename(tmp, self.path)
            st = os.lstat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return sock

    async def start(self) -> None:
        """Create the socket (replacing a stale one) and start accepting subscribers."""
        self._loop = asyncio.get_running_loop()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o755, exist_ok=True)
        self._remove_stale()
        self._listener = self._bind()
        self._waiting.register(self._listener.fileno(), select.POLLIN)
        self._loop.add_reader(self._listener.fileno(), self._accept_pending)
        log.info("event stream listening on %s", self.path)

    def _accept_pending(self) -> None:
        """Accept every waiting connection now (non-blocking), registering it at once."""
        if self._listener is None or self._loop is None:
            return
        # Asked before every record: one poll(2) when nobody waits, the usual case, instead
        # of an accept(2) that fails with an exception.
        if not self._waiting.poll(0):
            return
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep serving the others
                log.warning("event stream: accept failed: %s", exc)
                return
            conn.setblocking(False)
            peer, uid = _peer(conn)
            refusal = self._refusal(uid)
            if refusal is not None:
                self._refuse(conn, peer, refusal)
                continue
            sub = _Subscriber(conn, peer, conn.fileno(), uid)
            self._per_uid[uid] += 1
            self._subs[sub.fd] = sub
            # Subscribers only listen; reading just notices EOF (and discards any input).
            self._loop.add_reader(sub.fd, self._on_readable, sub)
            log.debug("event subscriber connected (%s)", sub.peer)

    def _refusal(self, uid: int) -> str | None:
        """Why a subscriber of ``uid`` cannot be admitted now, or None."""
        if uid == 0:
            return None
        if self._per_uid[uid] >= self.max_per_uid:
            return f"uid {uid} already has {self.max_per_uid} subscribers (the limit per user)"
        others = sum(n for u, n in self._per_uid.items() if u != 0)
        if others >= self.max_subscribers:
            return f"{self.max_subscribers} subscribers are connected (the limit)"
        return None

    def _refuse(self, conn: socket.socket, peer: str, why: str) -> None:
        logged = self.refusals.refused("event subscriber refused", f"{peer}: {why}")
        if logged and self._loop is not None:
            self._loop.call_later(self.refusals.window, self.refusals.flush)
        line = json.dumps({"type": "refused", "nsid": None, "reason": "busy", "error": why})
        with contextlib.suppress(OSError):
            conn.send(line.encode() + b"\n")  # a fresh socket's buffer takes one short line
        conn.close()

    def _on_readable(self, sub: _Subscriber) -> None:
        try:
            data = sub.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log.debug("event subscriber disconnected (%s)", sub.peer)
            self._close_sub(sub)

    def _close_sub(self, sub: _Subscriber) -> None:
        if self._subs.pop(sub.fd, None) is None:
            return
        self._per_uid[sub.uid] -= 1
        if self._per_uid[sub.uid] <= 0:
            del self._per_uid[sub.uid]
        if self._loop is not None:
            self._loop.remove_reader(sub.fd)
            self._loop.remove_writer(sub.fd)
        sub.sock.close()

    def _flush(self, sub: _Subscriber) -> None:
        try:
            n = sub.sock.send(sub.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_sub(sub)
            return
        del sub.buf[:n]
        if not sub.buf and self._loop is not None:
            self._loop.remove_writer(sub.fd)

    def publish(self, record: dict[str, Any], *, more: bool = False) -> None:
        """Send one record as a JSON line to every subscriber; never blocks.

        A record without a ``"time"`` gets the current one.  ``more``: another record
        follows at once (a change's plan after the change): its line is held and goes out
        with the next one, one write per subscriber (one wake-up of each reader instead of
        two), at the latest when the loop turns.  Call from the event loop thread (see
        :meth:`publish_threadsafe`).
        """
        self._accept_pending()
        if not self._subs:
            return  # nobody listens: not even worth encoding
        if "time" not in record:
            record = {**record, "time": timestamp()}
        line = (json.dumps(record, default=str) + "\n").encode()
        if more and self._loop is not None:
            if not self._held:
                self._loop.call_soon(self._send_held)
            self._held.append(line)
            return
        if self._held:
            self._held.append(line)
            self._send_held()
            return
        self._send(line, 1)

    def _send_held(self) -> None:
        if self._held:
            lines, self._held = self._held, []
            self._send(b"".join(lines), len(lines))

    def _send(self, data: bytes, records: int) -> None:
        """``data`` (``records`` whole lines) to every subscriber, or into its buffer."""
        for sub in list(self._subs.values()):
            if sub.buf and len(sub.buf) + len(data) > self.max_buffer:
                # The writer callback runs only when the loop is back: within one long
                # batch (a rescan of a thousand namespaces) a subscriber that reads all the
                # while would look stuck.  What it made room for goes now.
                self._flush(sub)
                if sub.fd not in self._subs:
                    continue
            if len(sub.buf) + len(data) > self.max_buffer:
                self._drop(sub)
                continue
            sub.sent += records
            if sub.buf:
                sub.buf += data  # the writer callback is already armed
                continue
            try:
                n = sub.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close_sub(sub)
                continue
            if n < len(data):
                sub.buf += data[n:]
                assert self._loop is not None
                self._loop.add_writer(sub.fd, self._flush, sub)

    def publish_threadsafe(self, record: dict[str, Any]) -> None:
        """:meth:`publish` from any thread (e.g. the action runner's ``on_result``)."""
        if self._loop is None:
            raise RuntimeError("EventStream not started")
        self._loop.call_soon_threadsafe(self.publish, record)

    def _drop(self, sub: _Subscriber) -> None:
        log.warning(
            "dropping event subscriber %s: %d bytes unread (limit %d) after %d records; "
            "it can reconnect",
            sub.peer,
            len(sub.buf),
            self.max_buffer,
            sub.sent,
        )
        self._close_sub(sub)

    async def close(self) -> None:
        """Flush what fits without blocking, disconnect subscribers, stop listening and
        remove the socket file (if it is still ours)."""
        self.refusals.flush(everything=True)
        self._send_held()
        for sub in list(self._subs.values()):
            if sub.buf:
                with contextlib.suppress(OSError):
                    del sub.buf[: sub.sock.send(sub.buf)]
            self._close_sub(sub)
        if self._listener is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        try:
            st = os.lstat(self.path)
            if self._inode == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
