"""Output for reporting subcommands: readable lines or JSON lines (``--json``).

Text goes to a terminal, and much of it comes from outside: labels, serials and models a disk
carries, names of processes other users run (eject's holders).  A control character in them
could move the cursor, recolour the screen or, with a newline, forge a line such as "safe to
remove".  So :func:`printable` escapes every control character of a value, and
:class:`Reporter` escapes all but the newlines that separate our own lines.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, TextIO

# C0, DEL, C1, the Unicode line/paragraph separators and the bidirectional overrides (which
# reorder what a terminal shows).
_OTHER_CONTROL = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ANY_CONTROL = re.compile(f"[\x00-\x1f{_OTHER_CONTROL}]")
_CONTROL_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_OTHER_CONTROL}]")


def _escape(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


def printable(value: object) -> str:
    """``value`` as one line of text: every control character (newline too) escaped."""
    return _ANY_CONTROL.sub(_escape, str(value))


def printable_lines(text: str) -> str:
    """``text`` with its newlines kept and every other control character escaped."""
    return _CONTROL_BUT_NEWLINE.sub(_escape, text)


class Reporter:
    """Writes one record per call: a JSON object per line with ``--json``, else ``text``.

    Every JSON object carries ``type`` and ``nsid`` (``None`` when it has none) so that
    scripts can rely on both keys.  Values that come from outside belong in ``text`` only
    through :func:`printable`; whatever slips through loses its control characters here.
    """

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: dict[str, Any], text: str | None = None) -> None:
        if self.as_json:
            record = dict(record)
            record.setdefault("nsid", None)
            if "type" not in record:
                raise ValueError(f"JSON record without a type: {record!r}")
            # ensure_ascii (the default) escapes every control character as \\uXXXX.
            self.stream.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        elif text is not None:
            self.stream.write(printable_lines(text) + "\n")
        self.stream.flush()
