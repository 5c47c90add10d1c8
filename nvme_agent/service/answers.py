"""Answers of the control socket, and the one table of failure reasons.

Every answer is one JSON object with ``"ok"``.  A failure also carries ``"error"`` (text for
a human, naming what was wrong) and ``"reason"`` (a word from :data:`REASONS`, for programs).
The CLI maps a reason to its exit status with :func:`exit_status`, so this table is the only
place that pairs the two:

==================  ====  =================================================================
reason              exit  meaning
==================  ====  =================================================================
``denied``          5     the peer lacks the right the command needs (see ``requests``)
``not-found``       3     no namespace or device matches the request
``held``            1     eject: the mount is still in use (the holders are named)
``failed``          1     an action of the plan failed (eject), or the request failed
``invalid-policy``  1     reload: the policy file is invalid; the old policy stays in force
``timeout``         1     the work did not finish in time (eject, settle, reload), or the
                          peer did not send a complete request line in time
``busy``            1     too many connections from this user; retry later
``bad-request``     2     not a JSON object with a ``cmd`` string, too large, or a field of
                          the wrong type or range
``unknown-command`` 2     ``cmd`` names no command of the control socket
``stopping``        1     the daemon is shutting down
``internal``        1     a bug in the daemon (logged with its traceback); nothing was lost
==================  ====  =================================================================

Exit statuses: 0 ok/safe, 1 failed/held, 2 usage, 3 no such device, 4 no daemon (the CLI's
own, when the socket cannot be reached), 5 permission denied.
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


#: Exit statuses of the CLI (documented in nvme-agent(8) by the CLI).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NO_DAEMON = 4
EXIT_DENIED = 5


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    exit_status: int
    meaning: str


#: The one table: reason -> exit status and meaning (the docstring above renders it).
REASONS: MappingProxyType[Reason, ReasonInfo] = MappingProxyType(
    {
        Reason.DENIED: ReasonInfo(EXIT_DENIED, "the peer lacks the right the command needs"),
        Reason.NOT_FOUND: ReasonInfo(EXIT_NOT_FOUND, "no namespace or device matches"),
        Reason.HELD: ReasonInfo(EXIT_FAILED, "the mount is still in use"),
        Reason.FAILED: ReasonInfo(EXIT_FAILED, "an action or the request failed"),
        Reason.INVALID_POLICY: ReasonInfo(EXIT_FAILED, "the policy file is invalid"),
        Reason.TIMEOUT: ReasonInfo(EXIT_FAILED, "the work did not finish in time"),
        Reason.BUSY: ReasonInfo(EXIT_FAILED, "too many connections from this user"),
        Reason.BAD_REQUEST: ReasonInfo(EXIT_USAGE, "a malformed or out-of-range request"),
        Reason.UNKNOWN_COMMAND: ReasonInfo(EXIT_USAGE, "no such command"),
        Reason.STOPPING: ReasonInfo(EXIT_FAILED, "the daemon is shutting down"),
        Reason.INTERNAL: ReasonInfo(EXIT_FAILED, "a bug in the daemon"),
    }
)


def failure(reason: Reason, error: str, **extra: Any) -> Answer:
    """A failed answer: ``ok`` false, the human ``error`` and the machine ``reason``."""
    return {"ok": False, "error": error, "reason": reason.value, **extra}


def exit_status(answer: Answer) -> int:
    """The CLI's exit status for ``answer`` (0 when ok; unknown reasons count as failed)."""
    if answer.get("ok") is True:
        return EXIT_OK
    try:
        return REASONS[Reason(str(answer.get("reason")))].exit_status
    except ValueError:
        return EXIT_FAILED


class RequestFailed(Exception):
    """Raised inside a command handler; becomes a :func:`failure` answer."""

    def __init__(self, reason: Reason, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.extra = extra

    def answer(self) -> Answer:
        return failure(self.reason, self.error, **self.extra)
