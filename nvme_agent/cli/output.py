"""Output for reporting subcommands: readable lines or JSON lines (``--json``)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class Reporter:
    """Writes one record per call: a JSON object per line with ``--json``, else ``text``.

    Every JSON object carries ``type`` and ``nsid`` (``None`` when it has none) so that
    scripts can rely on both keys.
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
            self.stream.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        elif text is not None:
            self.stream.write(text + "\n")
        self.stream.flush()
