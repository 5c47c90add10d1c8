"""A disk image served through FUSE whose reads can be held, then failed (run as a script).

Usage (Debian's python3 with python3-fusepy): ``slowdisk.py IMAGE MOUNTPOINT``; the file
``MOUNTPOINT/disk`` is the image, for a loop device.  Commands on stdin, one per line:

* ``hold START END``: a read touching bytes [START, END) waits; the first one prints
  ``{"held": OFFSET}`` on stdout (a disk that stopped answering mid-I/O);
* ``fail``: every waiting and later read and write fails with EIO (the disk is gone).

It stands in for hardware only: the test holds e2fsck or mount(8) inside a real read of a
real loop device, detaches the namespace, and lets the I/O fail as a detached disk's does.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations  # Debian's python3-fusepy


class Disk(Operations):  # type: ignore[misc]  # fusepy has no types: Operations is Any
    def __init__(self, image: str) -> None:
        self.fd = os.open(image, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.cond = threading.Condition()
        self.hold: tuple[int, int] | None = None
        self.failing = False
        self.told = False

    def init(self, path: str) -> None:
        sys.stdout.write(json.dumps({"ready": True}) + "\n")  # mounted: the file can be used
        sys.stdout.flush()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/disk":
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", "disk"]

    def open(self, path: str, flags: int) -> int:
        return 0

    def _wait(self, offset: int, size: int) -> None:
        with self.cond:
            hold = self.hold
            if hold is not None and offset < hold[1] and offset + size > hold[0]:
                if not self.told:
                    self.told = True
                    sys.stdout.write(json.dumps({"held": offset}) + "\n")
                    sys.stdout.flush()
                self.cond.wait_for(lambda: self.failing)
            if self.failing:
                raise FuseOSError(errno.EIO)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._wait(offset, size)
        return os.pread(self.fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._wait(offset, len(data))
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        return None

    def flush(self, path: str, fh: int) -> None:
        return None

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        return None

    def control(self) -> None:
        for line in sys.stdin:
            words = line.split()
            with self.cond:
                if words[:1] == ["hold"]:
                    self.hold = (int(words[1]), int(words[2]))
                elif words[:1] == ["fail"]:
                    self.failing = True
                    self.cond.notify_all()
            sys.stdout.write(json.dumps({"done": words[0] if words else ""}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    disk = Disk(sys.argv[1])
    threading.Thread(target=disk.control, daemon=True).start()
    FUSE(disk, sys.argv[2], foreground=True, nothreads=False, allow_other=True, direct_io=True)
