"""Where Python logging goes: the journal with fields under systemd, else stderr, one line each.

Under systemd, stderr is a journal stream: journald splits it on newlines and reads a leading
``<N>`` as the priority, so a record that carried a newline would become two entries, the second
one's text and priority chosen by whoever wrote the value.  The daemon therefore logs natively
(:class:`FieldJournalHandler`: one entry per record, whatever it holds, with the record's
journal fields such as ``MESSAGE_ID``, ``NVME_NSID``, ``DEVNAME``) when systemd says stderr is
the journal (``JOURNAL_STREAM``) or when asked (``--log-target journal``).  On stderr every
record is one line and continuation lines (tracebacks) are indented, never a line of their own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from systemd.journal import JournalHandler, send

from nvme_agent.outputs.journal import JournalWatch, LogTarget
from nvme_agent.topology.text import one_line

SYSLOG_IDENTIFIER = "nvme-agent"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: A journal field name: upper case, digits and ``_``, not starting with ``_`` (those are
#: trusted fields journald sets itself).
_FIELD_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}\Z")


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when systemd connected ``fd`` to the journal (``JOURNAL_STREAM=<dev>:<inode>``).

    The variable alone is not enough: a child of a service inherits it with another stderr.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def wants_journal(target: LogTarget, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``target`` means the journal here (``auto``: when stderr is the journal)."""
    return target == "journal" or (target == "auto" and stderr_is_journal(environ))


class FieldJournalHandler(JournalHandler):  # type: ignore[misc]  # systemd-python is untyped
    """A :class:`systemd.journal.JournalHandler` that sends only journal fields.

    The base class sends every attribute of the record (``msg``, ``args`` with the raw values,
    ...); this one sends the message, the priority, where it was logged, and the record's
    extras whose names are valid journal field names (``extra={"NVME_NSID": "3"}``).
    """

    def __init__(
        self,
        level: int = logging.NOTSET,
        sender_function: Callable[..., Any] = send,
        **fields: str,
    ) -> None:
        fields.setdefault("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER)
        super().__init__(level, sender_function=sender_function, **fields)
        self._fields = dict(fields)
        self.watch = JournalWatch()
        self.fallback = logging.StreamHandler(sys.stderr)
        self.fallback.setFormatter(OneLineFormatter(STDERR_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if self.send is send and not self.watch.available():
            self.fallback.emit(record)  # journald is gone: never lose the record
            return
        try:
            fields: dict[str, Any] = dict(self._fields)
            fields.update(
                (k, v)
                for k, v in record.__dict__.items()
                if _FIELD_NAME.match(k) and v is not None and v != ""
            )
            self.send(
                self.format(record),
                PRIORITY=str(self.map_priority(record.levelno)),
                LOGGER=record.name,
                THREAD_NAME=record.threadName,
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except Exception:
            self.handleError(record)


class OneLineFormatter(logging.Formatter):
    """Every record one line on a stream: unsafe characters escaped, continuations indented."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return "\n    ".join(one_line(line) for line in text.split("\n"))


def make_handler(target: LogTarget, stream: TextIO | None = None) -> logging.Handler:
    """The handler for ``target``: journal (with fields) or the stream (stderr by default)."""
    if wants_journal(target):
        return FieldJournalHandler()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter(STDERR_FORMAT))
    return handler
