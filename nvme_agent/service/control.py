"""The control socket: JSON requests to the running daemon, and the client for the CLI.

One request per connection: a JSON object on one line (at most :data:`MAX_REQUEST` bytes),
answered by one JSON object on one line (see :mod:`nvme_agent.service.answers`).  A request
with ``"progress": true`` may first get progress lines, JSON objects with ``"progress"`` (a
long eject says which holders it signalled and which actions finished); the answer is the
first line without that key.  A request without it gets the answer alone.  This module only
frames requests and keeps local peers from exhausting the daemon:

* the peer's credentials come from the kernel (:func:`~nvme_agent.service.access.peer_of`);
  a peer without any right is refused before a byte is read;
* a request line must arrive within ``read_timeout`` seconds, and an answer (or progress
  line) that the peer does not read within ``write_timeout`` seconds is dropped with the
  connection (the work it asked for goes on);
* a non-root user may hold at most ``max_per_uid`` connections at once;
* every refusal is logged, a flood of them once per minute with a count.

What a command may do, and for whom, is the :class:`Service`'s business (the command table
in :mod:`nvme_agent.service.requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from nvme_agent.outputs.refusals import RefusalLog
from nvme_agent.service.access import GROUP, Peer, group_id, peer_of
from nvme_agent.service.answers import Answer, Reason, RequestFailed, failure

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
#: Progress lines a requester has not read yet, at most (bytes).
MAX_BACKLOG = 256 * 1024
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_WRITE_TIMEOUT = 30.0
DEFAULT_MAX_PER_UID = 16

__all__ = [
    "GROUP",
    "MAX_REQUEST",
    "ControlError",
    "ControlServer",
    "Progress",
    "Service",
    "request",
]

#: Sends one progress line to the requester (a no-op unless it asked for progress).
Progress = Callable[[dict[str, Any]], None]


def no_progress(line: dict[str, Any]) -> None:
    """The :data:`Progress` of a request that did not ask for progress lines."""


class Service(Protocol):
    """What the control server serves: admission of a peer, then its request."""

    def admit(self, peer: Peer) -> Answer | None:
        """A refusal for a peer that may do nothing at all, or None."""

    async def answer(self, peer: Peer, request: dict[str, Any], progress: Progress) -> Answer:
        """The answer to one well-formed request (never raises)."""


class ControlError(Exception):
    """The daemon could not be reached or answered with an error."""


class ControlServer:
    """Serves requests on a Unix socket (mode 0660, group ``group``; 0600 without it)."""

    def __init__(
        self,
        path: str,
        service: Service,
        group: str | None = GROUP,
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_per_uid: int = DEFAULT_MAX_PER_UID,
    ) -> None:
        self.path = path
        self.service = service
        self.group = group
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_per_uid = max_per_uid
        self.refusals = RefusalLog(log)
        self._open: Counter[int] = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections(self) -> int:
        return sum(self._open.values())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if os.path.exists(self.path) or os.path.islink(self.path):
            os.unlink(self.path)  # stale socket of a previous run
        self._server = await asyncio.start_unix_server(
            self._serve, path=self.path, limit=MAX_REQUEST + 2
        )
        gid = group_id(self.group) if self.group else None
        if gid is not None:
            os.chown(self.path, 0, gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def close(self) -> None:
        self.refusals.flush(everything=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def refuse(self, kind: str, message: str) -> None:
        """Log a refusal (the first of a flood, then a count)."""
        if self.refusals.refused(kind, message) and self._loop is not None:
            self._loop.call_later(self.refusals.window, self.refusals.flush)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
        except (OSError, TypeError, AttributeError) as exc:  # not a Unix socket peer
            log.warning("control connection without credentials refused: %s", exc)
            writer.close()
            return
        if peer.uid != 0 and self._open[peer.uid] >= self.max_per_uid:
            why = f"uid {peer.uid} already has {self.max_per_uid} control connections open"
            self.refuse("control connection refused (per-user limit)", f"{peer}: {why}")
            await self._send(writer, failure(Reason.BUSY, f"{why}; retry later"))
            return
        self._open[peer.uid] += 1
        try:
            await self._send(writer, await self._answer(peer, reader, writer))
        finally:
            self._open[peer.uid] -= 1
            if not self._open[peer.uid]:
                del self._open[peer.uid]

    async def _send(self, writer: asyncio.StreamWriter, answer: Answer) -> None:
        try:
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("control client went away or stopped reading: %r", exc)
            writer.transport.abort()
        finally:
            writer.close()

    async def _answer(
        self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Answer:
        refusal = self.service.admit(peer)
        if refusal is not None:
            return refusal
        try:
            request = _parse(await self._read_line(peer, reader))
        except RequestFailed as exc:
            return exc.answer()
        progress = self._progress(writer) if request.get("progress") is True else no_progress
        try:
            return await self.service.answer(peer, request, progress)
        except Exception as exc:  # the service catches its own; this is the last net
            log.exception("control request %r from %s failed", request.get("cmd"), peer)
            return failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _progress(self, writer: asyncio.StreamWriter) -> Progress:
        """Progress lines to ``writer``: queued without waiting; a peer that leaves more than
        :data:`MAX_BACKLOG` bytes unread loses its connection, never stalls the daemon."""

        def send(line: dict[str, Any]) -> None:
            transport = writer.transport
            if transport.is_closing():
                return
            if transport.get_write_buffer_size() > MAX_BACKLOG:
                log.debug("control client stopped reading progress: dropping it")
                transport.abort()
                return
            writer.write(json.dumps({"progress": True, **line}, default=str).encode() + b"\n")

        return send

    async def _read_line(self, peer: Peer, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout)
        except TimeoutError:
            why = f"no complete request line within {self.read_timeout:g}s"
            self.refuse("control request timed out", f"{peer}: {why}")
            raise RequestFailed(Reason.TIMEOUT, why) from None
        except asyncio.LimitOverrunError:
            raise RequestFailed(
                Reason.BAD_REQUEST, f"request larger than {MAX_REQUEST} bytes"
            ) from None
        except asyncio.IncompleteReadError as exc:
            line = exc.partial  # EOF without a newline: the request is what came
        except ConnectionError as exc:
            raise RequestFailed(Reason.BAD_REQUEST, f"connection failed: {exc}") from None
        if len(line) > MAX_REQUEST:
            raise RequestFailed(Reason.BAD_REQUEST, f"request larger than {MAX_REQUEST} bytes")
        if not line.strip():
            raise RequestFailed(Reason.BAD_REQUEST, "empty request")
        return line


def _parse(line: bytes) -> dict[str, Any]:
    """The request object in ``line``."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise RequestFailed(Reason.BAD_REQUEST, f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise RequestFailed(Reason.BAD_REQUEST, 'request must be an object with a "cmd" string')
    return request


def request(
    path: str,
    payload: dict[str, Any],
    timeout: float = 120.0,
    on_progress: Progress | None = None,
    *,
    tick: float | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its answer (blocking).

    With ``on_progress`` the request asks for progress lines and each is handed to it.
    ``on_tick(seconds)`` is called whenever ``tick`` seconds pass without a line, so a
    caller can say it is still waiting.
    """
    if on_progress is not None:
        payload = {**payload, "progress": True}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            with contextlib.suppress(BrokenPipeError):  # refused unread: the answer says why
                sock.sendall(json.dumps(payload).encode() + b"\n")
            return _read_answer(sock, path, timeout, on_progress, tick, on_tick)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"no nvme-agent daemon listening on {path}: {exc.strerror}") from exc
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc


def _read_answer(
    sock: socket.socket,
    path: str,
    timeout: float,
    on_progress: Progress | None,
    tick: float | None,
    on_tick: Callable[[float], None] | None,
) -> dict[str, Any]:
    """Lines until the answer (the first without ``"progress"``); progress lines go to
    ``on_progress``."""
    deadline = time.monotonic() + timeout
    began = time.monotonic()
    buf = b""
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = _decode(raw, path)
            if on_progress is not None and line.get("progress") is True:
                on_progress(line)
                continue
            return line
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g}s")
        sock.settimeout(min(left, tick) if tick else left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if tick and on_tick is not None and deadline - time.monotonic() > 0:
                on_tick(time.monotonic() - began)
                continue
            raise
        if not chunk:
            return _decode(buf, path)
        buf += chunk


def _decode(raw: bytes, path: str) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"malformed answer from {path}: {raw[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"malformed answer from {path}: {answer!r}")
    return answer
