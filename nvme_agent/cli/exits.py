"""Exit statuses of every ``nvme-agent`` command: the one table.

A host script decides what to do from the status alone (retry, give up, start the daemon), so
every command uses the same numbers for the same situations.  The man page's EXIT STATUS, the
README's table and each command's ``--help`` are generated from :data:`EXITS`.

Commands return :class:`Exit` for outcomes they report themselves and raise a
:class:`CliError` for everything else; :func:`nvme_agent.cli.main.main` prints the error once
and maps it to its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from nvme_agent.service.answers import Reason


class Exit(IntEnum):
    """The exit statuses (argparse's own usage errors exit 2 as well)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    NO_DAEMON = 4
    DENIED = 5
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@dataclass(frozen=True, slots=True)
class ExitDoc:
    """One row of the table: the status, a short name and what it means for a caller."""

    code: Exit
    name: str
    meaning: str


EXITS: tuple[ExitDoc, ...] = (
    ExitDoc(Exit.OK, "ok", "Success. For eject: the namespace is safe to remove."),
    ExitDoc(
        Exit.FAILED,
        "failed",
        "The command ran and the answer is no: eject: still held (the holders are named) or "
        "not finished in time; reload, check, explain, run: the policy is invalid; simulate, "
        "replay: an expectation or the run failed.  Retry after fixing the cause.",
    ),
    ExitDoc(
        Exit.USAGE,
        "usage",
        "Usage error: wrong arguments, an input file that cannot be read, or a request the "
        "daemon refuses as malformed.  The same command will fail again.",
    ),
    ExitDoc(
        Exit.NOT_FOUND,
        "not-found",
        "No such device or namespace: nothing was done.  For eject, a namespace that is not "
        "there needs no eject.",
    ),
    ExitDoc(
        Exit.NO_DAEMON,
        "no-daemon",
        "No daemon reachable: its socket is missing or does not answer (is nvme-agent.service "
        "running? the right --runtime-dir?).",
    ),
    ExitDoc(
        Exit.DENIED,
        "denied",
        "Permission denied: neither root nor a member of the nvme-agent group, or a file the "
        "command must read is not readable.",
    ),
    ExitDoc(Exit.INTERRUPTED, "interrupted", "Interrupted (Ctrl-C); cleanup has run."),
)

#: A failed control answer's machine ``reason`` (the daemon's table,
#: :mod:`nvme_agent.service.answers`) -> the exit status.  Every reason has a row (a test
#: checks it); a reason this command line does not know (a newer daemon) is FAILED.
REASON_EXITS: dict[Reason, Exit] = {
    Reason.DENIED: Exit.DENIED,
    Reason.NOT_FOUND: Exit.NOT_FOUND,
    Reason.HELD: Exit.FAILED,
    Reason.FAILED: Exit.FAILED,
    Reason.INVALID_POLICY: Exit.FAILED,
    Reason.TIMEOUT: Exit.FAILED,
    Reason.BUSY: Exit.FAILED,
    Reason.BAD_REQUEST: Exit.USAGE,
    # The daemon is older than this command line: retrying will not help either.
    Reason.UNKNOWN_COMMAND: Exit.USAGE,
    Reason.STOPPING: Exit.FAILED,
    Reason.INTERNAL: Exit.FAILED,
}


def exit_for_reason(reason: object) -> Exit:
    """The exit status for a failed answer's ``reason`` (unknown or missing: FAILED)."""
    try:
        return REASON_EXITS[Reason(reason)] if isinstance(reason, str) else Exit.FAILED
    except ValueError:
        return Exit.FAILED


def describe_exits(meanings: dict[Exit, str]) -> str:
    """One sentence for a command's ``--help``: ``Exit status: 0 safe to remove, 1 ...``."""
    parts = [f"{int(code)} {text}" for code, text in sorted(meanings.items())]
    return "Exit status: " + "; ".join(parts) + " (see EXIT STATUS in nvme-agent(8))."


class CliError(Exception):
    """A command cannot do its job; ``main`` prints the message once and exits ``code``."""

    code: Exit = Exit.FAILED

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CliError):
    """Wrong arguments or an unreadable input file."""

    code = Exit.USAGE


class NotFoundError(CliError):
    """No such device or namespace."""

    code = Exit.NOT_FOUND


class NoDaemonError(CliError):
    """No daemon answers on the socket."""

    code = Exit.NO_DAEMON


class DeniedError(CliError):
    """Not allowed: the socket or a file refuses the caller."""

    code = Exit.DENIED


def error_for_os(exc: OSError, what: str) -> CliError:
    """The CLI error for an ``OSError`` while reading ``what`` (a file the user named)."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError):
        return DeniedError(f"cannot read {what}: {reason}")
    return UsageError(f"cannot read {what}: {reason}")
