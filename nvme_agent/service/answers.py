"""Answers of the control socket, and the one table of failure reasons.

Every answer is one JSON object with ``"ok"``.  A failure also carries ``"error"`` (text for
a human, naming what was wrong) and ``"reason"`` (a word from :data:`REASONS`, for programs).
The command line pairs each reason with an exit status (``nvme_agent.cli.exits``, the one
table of exit statuses; a test checks that every reason here has its status there):

==================  =================================================================
reason              meaning
==================  =================================================================
``denied``          the peer lacks the right the command needs (see ``requests``)
``not-found``       no namespace or device matches the request
``held``            eject: the mount is still in use (the holders are named)
``failed``          an action of the plan failed (eject), or the request failed
``invalid-policy``  reload: the policy file is invalid; the old policy stays in force
``timeout``         the work did not finish in time (eject, settle, reload), or the
                    peer did not send a complete request line in time
``busy``            too many connections from this user; retry later
``bad-request``     not a JSON object with a ``cmd`` string, too large, or a field of
                    the wrong type or range
``unknown-command`` ``cmd`` names no command of the control socket
``stopping``        the daemon is shutting down
``internal``        a bug in the daemon (logged with its traceback); nothing was lost
==================  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

Answer = dict[str, Any]


class Reason(StrEnum):
    """Why a control request failed (the ``"reason"`` field)."""

    DENIED = "denied"
    NOT_FOUND = "not-found"
    HELD = "held"
    FAILED = "failed"
    INVALID_POLICY = "invalid-policy"
    TIMEOUT = "timeout"
    BUSY = "busy"
    BAD_REQUEST = "bad-request"
    UNKNOWN_COMMAND = "unknown-command"
    STOPPING = "stopping"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    meaning: str


#: The one table: reason -> exit status and meaning (the docstring above renders it).
REASONS: MappingProxyType[Reason, ReasonInfo] = MappingProxyType(
    {
        Reason.DENIED: ReasonInfo("the peer lacks the right the command needs"),
        Reason.NOT_FOUND: ReasonInfo("no namespace or device matches"),
        Reason.HELD: ReasonInfo("the mount is still in use"),
        Reason.FAILED: ReasonInfo("an action or the request failed"),
        Reason.INVALID_POLICY: ReasonInfo("the policy file is invalid"),
        Reason.TIMEOUT: ReasonInfo("the work did not finish in time"),
        Reason.BUSY: ReasonInfo("too many connections from this user"),
        Reason.BAD_REQUEST: ReasonInfo("a malformed or out-of-range request"),
        Reason.UNKNOWN_COMMAND: ReasonInfo("no such command"),
        Reason.STOPPING: ReasonInfo("the daemon is shutting down"),
        Reason.INTERNAL: ReasonInfo("a bug in the daemon"),
    }
)


def failure(reason: Reason, error: str, **extra: Any) -> Answer:
    """A failed answer: ``ok`` false, the human ``error`` and the machine ``reason``."""
    return {"ok": False, "error": error, "reason": reason.value, **extra}


class RequestFailed(Exception):
    """Raised inside a command handler; becomes a :func:`failure` answer."""

    def __init__(self, reason: Reason, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.extra = extra

    def answer(self) -> Answer:
        return failure(self.reason, self.error, **self.extra)
