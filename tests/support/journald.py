"""journald's native protocol, as the tests that stand in for journald read it."""

from __future__ import annotations

import struct


def parse_native(data: bytes) -> dict[str, bytes]:
    """One datagram: ``KEY=value\\n`` or, for a value with newlines, ``KEY\\n`` +
    little-endian 64-bit length + value + ``\\n``."""
    fields: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value
    return fields
