"""Sizes with units: ``512MiB``, ``2TB``, ``1.5 GiB``, ``4096``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: Decimal (SI) and binary (IEC) multipliers.  A bare ``K``/``M``/``G`` is refused: it means
#: 1000 to some tools and 1024 to others, and a policy must not be ambiguous.
UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes for ``value`` (an int, or a string number with an optional unit).

    Raises ``ValueError`` with an operator-facing message.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 2TB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 512MiB or 2TB, got {type(value).__name__}")
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size (examples: 4096, 512MiB, 2TB, 1.5GiB)")
    number, unit = m.groups()
    mult = UNITS.get(unit.lower())
    if mult is None:
        raise ValueError(
            f"unknown size unit {unit!r} in {value!r} (use B, kB, MB, GB, TB, PB, "
            "KiB, MiB, GiB, TiB or PiB)"
        )
    try:
        return int(Decimal(number) * mult)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"{value!r} is not a size") from exc


def format_size(size: int | None) -> str:
    """A short human form in the largest binary unit: exact when it divides the size
    (``512MiB``), else one decimal and the exact byte count (``931.5GiB (1000204886016B)``);
    ``?`` for an unknown size.  The one size formatter (explanations, ``status``,
    ``simulate``).
    """
    if size is None:
        return "?"
    for unit, mult in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size < mult:
            continue
        if size % mult == 0:
            return f"{size // mult}{unit}"
        # Truncated, not rounded: 1GiB - 1 must not read as 1024.0MiB.
        return f"{size * 10 // mult / 10:.1f}{unit} ({size}B)"
    return f"{size}B"
