"""The probe helper: ``blkid -p``'s low-level probe, by libblkid, in a long-lived child process.

Started by :mod:`nvme_agent.actions.prober` as ``python3 -I -S probehelper.py`` (standard
library only; nothing of the daemon is imported).  It reads one device path per line on stdin
and answers each with one JSON line on stdout: ``{"rc": RC, "type": TYPE}``, where RC is what
``blkid -p`` would exit with (0 found, 2 nothing found, 8 ambivalent, 4 error, with
``"error"``).  It exits at the end of its input, so it dies with the daemon.

Probing parses what a disk carries, which is hostile: it stays in a child process, as with
``blkid -p``; a crash or a hang costs this helper, which the daemon kills and replaces.  Only
the exec of a new ``blkid`` per mount is saved.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

#: blkid(8)'s exit statuses, which the answers reuse.
FOUND, ERROR, NOTHING, AMBIVALENT = 0, 4, 2, 8
#: BLKID_PARTS_ENTRY_DETAILS: partitions are probed as ``blkid -p`` probes them.
_PARTS_ENTRY_DETAILS = 1 << 2


def _library() -> Any:
    lib = ctypes.CDLL("libblkid.so.1", use_errno=True)
    lib.blkid_new_probe_from_filename.restype = ctypes.c_void_p
    lib.blkid_new_probe_from_filename.argtypes = [ctypes.c_char_p]
    for name in ("blkid_probe_enable_superblocks", "blkid_probe_enable_partitions"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.blkid_probe_set_partitions_flags.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.blkid_do_safeprobe.argtypes = [ctypes.c_void_p]
    lib.blkid_free_probe.argtypes = [ctypes.c_void_p]
    lib.blkid_free_probe.restype = None
    lib.blkid_probe_lookup_value.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_void_p,
    ]
    return lib


def probe(lib: Any, devnode: bytes) -> dict[str, Any]:
    """One answer: what ``blkid -p -o export DEVNODE`` would say of the type, and its status."""
    pr = lib.blkid_new_probe_from_filename(devnode)
    if not pr:
        # blkid -p says "nothing found" of a device it cannot open, with the reason.
        err = ctypes.get_errno()
        return {"rc": NOTHING, "error": f"{os.fsdecode(devnode)}: {os.strerror(err)}"}
    try:
        lib.blkid_probe_enable_superblocks(pr, 1)
        lib.blkid_probe_enable_partitions(pr, 1)
        lib.blkid_probe_set_partitions_flags(pr, _PARTS_ENTRY_DETAILS)
        rc = lib.blkid_do_safeprobe(pr)
        if rc == 1:
            return {"rc": NOTHING}
        if rc == -2:
            return {"rc": AMBIVALENT}
        if rc != 0:
            return {"rc": ERROR, "error": f"{os.fsdecode(devnode)}: low-level probe failed"}
        value = ctypes.c_char_p()
        found = lib.blkid_probe_lookup_value(pr, b"TYPE", ctypes.byref(value), None) == 0
        kind = value.value.decode("utf-8", "replace") if found and value.value else None
        return {"rc": FOUND, "type": kind}
    finally:
        lib.blkid_free_probe(pr)


def main() -> int:
    lib = _library()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        out.write(json.dumps(probe(lib, line.rstrip(b"\n"))).encode() + b"\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
