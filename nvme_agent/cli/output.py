"""Output for reporting subcommands: readable lines or JSON lines (``--json``).

Text goes to a terminal, and much of it comes from outside: labels, serials and models a disk
carries, names of processes other users run (eject's holders).  A control character in them
could move the cursor, recolour the screen or, with a newline, forge a line such as "safe to
remove".  So :func:`printable` escapes every unsafe character of a value (the one table of
:mod:`nvme_agent.topology.text`), and :class:`Reporter` all but the newlines that separate
our own lines.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from nvme_agent.outputs.times import timestamp
from nvme_agent.topology.text import one_line


def printable(value: object) -> str:
    """``value`` as one line of text: every unsafe character (newline too) escaped."""
    return one_line(str(value))


def printable_lines(text: str) -> str:
    """``text`` with its newlines kept and every other unsafe character escaped."""
    return "\n".join(one_line(line) for line in text.split("\n"))


class Reporter:
    """Writes one record per call: a JSON object per line with ``--json``, else ``text``.

    Every JSON object carries ``type``, ``nsid`` (``None`` when it has none) and ``time``
    (when it happened; the time of printing for a record that does not say, ``None`` for a
    history record of a release that kept no times) so that scripts can rely on the three
    keys.  Values that come from outside belong in ``text`` only through :func:`printable`;
    whatever slips through loses its control characters here.
    """

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: dict[str, Any], text: str | None = None) -> None:
        if self.as_json:
            record = dict(record)
            record.setdefault("nsid", None)
            if "time" not in record:
                record["time"] = timestamp()
            if "type" not in record:
                raise ValueError(f"JSON record without a type: {record!r}")
            # ensure_ascii (the default) escapes every control character as \\uXXXX.
            self.stream.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        elif text is not None:
            self.stream.write(printable_lines(text) + "\n")
        self.stream.flush()

    def write(self, text: str) -> None:
        """Text that belongs to no record (a table), printed without ``--json`` only."""
        if not self.as_json and text:
            self.stream.write(printable_lines(text) + "\n")
            self.stream.flush()
