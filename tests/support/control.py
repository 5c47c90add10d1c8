"""A control socket that answers what a test says: the real ``ControlServer`` on a real Unix
socket, its handler replaced by canned answers.

The CLI's side of the contract (a failed answer's ``reason`` -> an exit status, text that
stays on its lines) is tested against every answer the daemon may give, including ones the
running daemon cannot be made to give on demand.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from nvme_agent.outputs.paths import RuntimePaths
from nvme_agent.service.access import Peer
from nvme_agent.service.control import ControlServer, Progress


class CannedDaemon:
    """Serves ``answer_given`` (settable) on ``runtime_dir``/control.sock; records the requests."""

    def __init__(self, runtime_dir: Path, answer: dict[str, Any] | None = None) -> None:
        self.paths = RuntimePaths(runtime_dir=runtime_dir)
        self.answer_given: dict[str, Any] = answer or {"ok": True}
        #: Progress lines sent first to a request that asks for them.
        self.progress_given: list[dict[str, Any]] = []
        #: Answers for particular commands (``cmd`` -> answer), else ``answer_given``.
        self.by_command: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def admit(self, peer: Peer) -> dict[str, Any] | None:
        return None  # every peer may ask; the canned answer says what the daemon would

    async def answer(
        self, peer: Peer, request: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        self.requests.append(request)
        for line in self.progress_given:
            progress(dict(line))
        return dict(self.by_command.get(str(request.get("cmd")), self.answer_given))

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = ControlServer(str(self.paths.control_socket), self, group=None)
        try:
            self._loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the test by __enter__
            self._failure = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(server.close())
        self._loop.close()

    def __enter__(self) -> CannedDaemon:
        self.paths.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        assert self._started.wait(30), "control server did not start"
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
