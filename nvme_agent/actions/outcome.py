"""What one action function returns; the runner turns it into an :class:`ActionResult`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nvme_agent.policy.plan import Status


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of executing one action spec.

    ``message_id`` overrides the journal MESSAGE_ID the runner would pick from ``status``
    (mount, unmount and lazy detach have their own ids).
    """

    status: Status
    message: str
    error: str | None = None
    details: tuple[tuple[str, str], ...] = ()
    message_id: str | None = None

    @classmethod
    def ok(cls, message: str, *, message_id: str | None = None, **details: str) -> Outcome:
        return cls(Status.OK, message, None, tuple(details.items()), message_id)

    @classmethod
    def failed(cls, message: str, error: str | None = None, **details: str) -> Outcome:
        return cls(Status.FAILED, message, error or message, tuple(details.items()))

    @classmethod
    def skipped(cls, message: str, **details: str) -> Outcome:
        return cls(Status.SKIPPED, message, None, tuple(details.items()))


class ActionError(Exception):
    """An action cannot proceed; the message says why, with the device or path involved."""


@dataclass(slots=True)
class Deadline:
    """A monotonic deadline shared by every step of one action."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def remaining(self, floor: float = 0.05) -> float:
        """Seconds left (at least ``floor`` so that a last short step still gets a chance)."""
        return max(floor, self.start + self.seconds - time.monotonic())
