"""The control commands: one table of command -> right -> handler, and its dispatcher.

=============  =======  ==========================================================
command        right    what it does
=============  =======  ==========================================================
``status``     read     topology, mountpoints, matching rules, counters
``history``    read     the recorded topology changes (``limit``: the last N, 0 = all)
``watch``      read     where the event stream socket is (reading it needs the group)
``settle``     read     take in the udev events already delivered, then wait until no
                        action is queued or running
``reload``     admin    re-read the policy file; the old policy stays on any error
                        (``assess``: also list the namespaces it would change)
``eject``      admin    run a namespace's remove plan (unmount, hooks, units, signals)
``reconcile``  admin    apply the policy in force to present namespaces an older one
                        handled (``dry_run``: only say what would change)
=============  =======  ==========================================================

``read`` and ``admin`` are defined in :mod:`nvme_agent.service.access`.  ``eject`` acts for
root: its unmount may signal every process holding the mount, whatever its uid, and its
hooks run as root; ``reload`` changes what the daemon does; ``reconcile`` undoes and
re-runs plans like a reload followed by an eject (its ``dry_run`` too needs the right: it
decides on every present namespace).  An unknown command is refused before anything is
dispatched, a command the peer has no right to with ``denied`` naming the missing right.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from nvme_agent.service.access import GROUP, Peer, Right, rights_of, who_has
from nvme_agent.service.answers import Answer, Reason, RequestFailed, failure
from nvme_agent.service.control import Progress
from nvme_agent.service.eject import EjectTarget

log = logging.getLogger(__name__)

#: Upper bounds of the waits a request may ask for (seconds).
MAX_SETTLE = 3600.0
MAX_EJECT = 3600.0
MAX_RECONCILE = 3600.0
MAX_DEVICE = 4096


class Agent(Protocol):
    """What the handlers need from the daemon."""

    @property
    def events_socket(self) -> str: ...

    async def status(self) -> Answer: ...

    def status_line(self) -> str: ...

    def admin_group(self) -> str | None: ...

    async def history_records(self, limit: int) -> list[dict[str, Any]]: ...

    async def settle(self, timeout: float) -> bool: ...

    async def reload(self, assess: bool = False) -> Answer: ...

    async def eject(self, target: EjectTarget, timeout: float, progress: Progress) -> Answer: ...

    async def reconcile(
        self, target: EjectTarget | None, dry_run: bool, timeout: float, progress: Progress
    ) -> Answer: ...


Handler = Callable[[Agent, dict[str, Any], Progress], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    right: Right
    handler: Handler
    summary: str


def _number(req: dict[str, Any], key: str, default: float, maximum: float) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestFailed(Reason.BAD_REQUEST, f'"{key}" must be a number of seconds')
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise RequestFailed(Reason.BAD_REQUEST, f'"{key}" must be between 0 and {maximum:g}')
    return float(value)


def _integer(req: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = req.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise RequestFailed(Reason.BAD_REQUEST, f'"{key}" must be an integer from 0 to 2^32-1')
    return value


def _text(req: dict[str, Any], key: str) -> str | None:
    value = req.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_DEVICE or "\0" in value:
        raise RequestFailed(Reason.BAD_REQUEST, f'"{key}" must be a path or name')
    return value


async def _status(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    return {"ok": True, **(await agent.status())}


async def _history(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    limit = _integer(req, "limit", 100) or 0
    return {"ok": True, "records": await agent.history_records(limit)}


async def _watch(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    return {"ok": True, "events": agent.events_socket}


async def _settle(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    timeout = _number(req, "timeout", 60.0, MAX_SETTLE)
    if await agent.settle(timeout):
        return {"ok": True, "status": agent.status_line()}
    return failure(
        Reason.TIMEOUT, f"actions still running after {timeout:.0f}s", status=agent.status_line()
    )


async def _reload(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    assess = req.get("assess", False)
    if not isinstance(assess, bool):
        raise RequestFailed(Reason.BAD_REQUEST, '"assess" must be true or false')
    return await agent.reload(assess)


def _target(req: dict[str, Any]) -> EjectTarget | None:
    device = _text(req, "device")
    nsid = None if device else _integer(req, "nsid")
    if device is None and nsid is None:
        return None
    return EjectTarget(device, nsid, _text(req, "ctrl"))


async def _eject(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    timeout = _number(req, "timeout", 300.0, MAX_EJECT)
    target = _target(req)
    if target is None:
        raise RequestFailed(Reason.BAD_REQUEST, "eject needs a device or an integer nsid")
    return await agent.eject(target, timeout, progress)


async def _reconcile(agent: Agent, req: dict[str, Any], progress: Progress) -> Answer:
    timeout = _number(req, "timeout", 300.0, MAX_RECONCILE)
    dry_run = req.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise RequestFailed(Reason.BAD_REQUEST, '"dry_run" must be true or false')
    return await agent.reconcile(_target(req), dry_run, timeout, progress)


#: The one table.  README's control-socket section and the docstring above list it.
COMMANDS: MappingProxyType[str, Command] = MappingProxyType(
    {
        c.name: c
        for c in (
            Command("status", Right.READ, _status, "topology, mounts, rules, counters"),
            Command("history", Right.READ, _history, "the recorded topology changes"),
            Command("watch", Right.READ, _watch, "where the event stream socket is"),
            Command("settle", Right.READ, _settle, "wait until no action is queued or running"),
            Command("reload", Right.ADMIN, _reload, "re-read the policy file"),
            Command("eject", Right.ADMIN, _eject, "run a namespace's remove plan"),
            Command(
                "reconcile",
                Right.ADMIN,
                _reconcile,
                "apply the policy in force to what an older one handled",
            ),
        )
    }
)


class Dispatcher:
    """The control server's :class:`~nvme_agent.service.control.Service`: checks the peer's
    rights against :data:`COMMANDS` and runs the handler."""

    def __init__(
        self,
        agent: Agent,
        read_group: str | None = GROUP,
        refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.read_group = read_group
        self._refuse = refuse or (lambda kind, message: log.warning("%s", message))

    def rights(self, peer: Peer) -> frozenset[Right]:
        return rights_of(peer, self.read_group, self.agent.admin_group())

    def admit(self, peer: Peer) -> Answer | None:
        if self.rights(peer):
            return None
        return self._denied(peer, Right.READ, "any request")

    async def answer(self, peer: Peer, request: dict[str, Any], progress: Progress) -> Answer:
        name = request.get("cmd")
        command = COMMANDS.get(name) if isinstance(name, str) else None
        if command is None:
            known = ", ".join(COMMANDS)
            return failure(Reason.UNKNOWN_COMMAND, f"unknown command {name!r} (known: {known})")
        if command.right not in self.rights(peer):
            return self._denied(peer, command.right, command.name)
        try:
            return await command.handler(self.agent, request, progress)
        except RequestFailed as exc:
            return exc.answer()
        except Exception as exc:  # a bad request must never take the daemon down
            log.exception("control request %r from %s failed", command.name, peer)
            return failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _denied(self, peer: Peer, right: Right, what: str) -> Answer:
        holders = who_has(right, self.read_group, self.agent.admin_group())
        error = f"permission denied: {what} needs the {right.value} right, held by {holders}"
        self._refuse(f"control request denied ({right.value})", f"{peer}: {error}")
        return failure(Reason.DENIED, error, right=right.value)
