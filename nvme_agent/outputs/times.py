"""Times in records: when something happened, as every JSON record and history line says it.

One format everywhere (``"time"``): RFC 3339 in UTC with microseconds and a ``Z``, e.g.
``2025-01-31T09:15:02.123456Z``: sortable as text, unambiguous across time zones, parsed by
``date -d`` and ``datetime.fromisoformat``.  Human output shows the same instant in the local
time zone, to the millisecond (:func:`local`).
"""

from __future__ import annotations

import datetime

UTC = datetime.UTC


def timestamp(when: datetime.datetime | None = None) -> str:
    """``when`` (default: now) as the ``"time"`` of a record."""
    moment = when.astimezone(UTC) if when is not None else datetime.datetime.now(UTC)
    # isoformat is three times faster than strftime; it ends in "+00:00" in UTC.
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def parse(text: object) -> datetime.datetime | None:
    """A record's ``"time"`` as an aware datetime; None when it is missing or not a time
    (a record of an older release, or a hand-edited file)."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def local(text: object) -> str:
    """A record's ``"time"`` for a human: local time to the millisecond, with its offset
    (``2025-01-31T10:15:02.123+01:00``); ``-`` when the record has none."""
    moment = parse(text)
    if moment is None:
        return "-"
    return moment.astimezone().isoformat(timespec="milliseconds")
