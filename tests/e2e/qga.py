"""A small QEMU guest agent client: plain JSON over the virtio-serial unix socket.

Only what the suite needs: ``guest-sync-delimited`` to find a clean start of the stream,
``guest-exec`` + ``guest-exec-status`` to run commands, ``guest-file-*`` to move files.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The byte the guest agent puts before its reply to guest-sync-delimited, and that we send
#: first so a half-read request left in the agent's parser is flushed.
SYNC_BYTE = b"\xff"


class QgaError(RuntimeError):
    """The guest agent answered with an error, or did not answer in time."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command run in the guest."""

    argv: tuple[str, ...]
    exitcode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> ExecResult:
        """Raise with the command and its output unless it exited 0."""
        if self.exitcode != 0:
            raise QgaError(
                f"guest command {list(self.argv)} exited {self.exitcode}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
            )
        return self


class QgaClient:
    """Talks to qemu-guest-agent through the chardev socket QEMU exposes on the host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buf = b""
        self._sync_id = int(time.time()) % 1_000_000

    # -- transport -------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self._sock = sock
            self._buf = b""
        return self._sock

    def close(self) -> None:
        """Close the socket (QEMU keeps the chardev; a later call reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_line(self, deadline: float) -> bytes:
        sock = self._connect()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply from the guest agent on {self.path}")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no reply from the guest agent on {self.path}") from None
            if not chunk:
                self.close()
                raise QgaError(f"guest agent socket {self.path} closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def sync(self, timeout: float = 2.0) -> None:
        """Resynchronise: discard stale replies until the one answering our sync id arrives."""
        self._sync_id += 1
        sync_id = self._sync_id
        sock = self._connect()
        request = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
        sock.sendall(SYNC_BYTE + json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_line(deadline)
            # The reply is preceded by 0xff; anything before it is stale output.
            if SYNC_BYTE in line:
                line = line.rsplit(SYNC_BYTE, 1)[1]
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if isinstance(reply, dict) and reply.get("return") == sync_id:
                return

    def wait_ready(self, timeout: float) -> float:
        """Wait until the guest agent answers a sync; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.sync(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return time.monotonic() - started
            except (TimeoutError, OSError, QgaError) as exc:
                # Before the guest opens its port QEMU swallows what we write; reconnect and
                # ask again, each try bounded by its own reply timeout.
                last = exc
                self.close()
        raise QgaError(f"guest agent not ready after {timeout:.0f}s: {last}")

    def call(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Execute one guest agent command and return its ``return`` value."""
        sock = self._connect()
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        sock.sendall(json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._read_line(deadline))
            if "error" in reply:
                raise QgaError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                return reply["return"]

    # -- commands ----------------------------------------------------------------------------

    def start(self, argv: list[str] | tuple[str, ...], stdin: bytes | None = None) -> int:
        """Start ``argv`` in the guest without waiting; return its guest pid."""
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode()
        return int(self.call("guest-exec", args)["pid"])

    def wait(
        self, pid: int, argv: list[str] | tuple[str, ...], timeout: float = 120.0
    ) -> ExecResult:
        """Wait for the guest process ``pid`` (started as ``argv``) and return its outcome."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            status = self.call("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise QgaError(f"guest command {list(argv)} still running after {timeout:.0f}s")
            # Polling is the guest agent's only way to learn about the process exit.
            time.sleep(0.02)
        result = ExecResult(
            argv=tuple(argv),
            exitcode=int(status.get("exitcode", -status.get("signal", 1))),
            stdout=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
            stderr=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
            seconds=time.monotonic() - started,
        )
        log.debug("guest: %s -> %d", " ".join(argv), result.exitcode)
        return result

    def exec(
        self,
        argv: list[str] | tuple[str, ...],
        timeout: float = 120.0,
        stdin: bytes | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run ``argv`` in the guest, wait for it to exit, return its status and output."""
        result = self.wait(self.start(argv, stdin), argv, timeout)
        return result.check() if check else result

    def sh(self, script: str, timeout: float = 120.0, check: bool = True) -> ExecResult:
        """Run a shell snippet in the guest (the guest's own /bin/sh; the host uses no shell)."""
        return self.exec(["/bin/sh", "-c", script], timeout=timeout, check=check)

    def write_file(self, path: str, data: bytes | str, mode: str = "w") -> None:
        """Write a file in the guest through guest-file-open/write/close."""
        payload = data.encode() if isinstance(data, str) else data
        handle = self.call("guest-file-open", {"path": path, "mode": mode})
        try:
            for offset in range(0, max(len(payload), 1), 48 * 1024):
                chunk = payload[offset : offset + 48 * 1024]
                self.call(
                    "guest-file-write",
                    {"handle": handle, "buf-b64": base64.b64encode(chunk).decode()},
                )
        finally:
            self.call("guest-file-close", {"handle": handle})

    def read_file(self, path: str) -> bytes:
        """Read a whole file from the guest."""
        handle = self.call("guest-file-open", {"path": path, "mode": "r"})
        data = b""
        try:
            while True:
                part = self.call("guest-file-read", {"handle": handle, "count": 48 * 1024})
                data += base64.b64decode(part.get("buf-b64", ""))
                if part.get("eof") or not part.get("count"):
                    break
        finally:
            self.call("guest-file-close", {"handle": handle})
        return data
