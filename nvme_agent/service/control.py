"""The control socket: JSON requests to the running daemon, and the client for the CLI.

One request per connection: a JSON object on one line (at most :data:`MAX_REQUEST` bytes),
answered by one JSON object on one line.  Peers are checked with ``SO_PEERCRED``: root and
members of the ``nvme-agent`` group only.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
GROUP = "nvme-agent"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached or answered with an error."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected AF_UNIX socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def _group_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_allowed(uid: int, gid: int, group: str = GROUP) -> bool:
    """Root, or a user whose primary or supplementary group is ``group``."""
    if uid == 0:
        return True
    gid_allowed = _group_gid(group)
    if gid_allowed is None:
        return False
    if gid == gid_allowed:
        return True
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return user in grp.getgrgid(gid_allowed).gr_mem


class ControlServer:
    """Serves requests on a Unix socket; ``handler`` maps a request to an answer."""

    def __init__(self, path: str, handler: Handler, group: str | None = GROUP) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if os.path.exists(self.path) or os.path.islink(self.path):
            os.unlink(self.path)  # stale socket of a previous run
        self._server = await asyncio.start_unix_server(
            self._serve, path=self.path, limit=MAX_REQUEST + 2
        )
        gid = _group_gid(self.group) if self.group else None
        if gid is not None:
            os.chown(self.path, 0, gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(reader, writer)
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            pid, uid, gid = peer_credentials(sock)
            if not peer_allowed(uid, gid, self.group or GROUP):
                log.warning("control request from pid %d uid %d refused", pid, uid)
                return {"ok": False, "error": "permission denied"}
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            return {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
            if not line:
                return {"ok": False, "error": "empty request"}
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"malformed JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a "cmd" string'}
        try:
            return await self.handler(request)
        except Exception as exc:  # a bad request must never take the daemon down
            log.exception("control request %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def request(path: str, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its answer (blocking)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"no nvme-agent daemon listening on {path}: {exc.strerror}") from exc
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"malformed answer from {path}: {data[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"malformed answer from {path}: {answer!r}")
    return answer
