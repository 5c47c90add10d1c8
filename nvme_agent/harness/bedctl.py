"""Bed controller: owns a umockdev testbed and takes JSON-line commands on stdin.

Run it as ``umockdev-wrapper /usr/bin/python3 bedctl.py``: it needs the umockdev preload and
Debian's python3-gi, and nothing else (standard library + gi; it must not import the agent,
pyudev or a venv).  The first line it prints is ``{"ok": true, "root": ..., ...}``; then each
request line ``{"id": N, "op": ..., ...}`` gets one answer line ``{"id": N, "ok": ...}``.

Why it writes the sysfs tree itself instead of calling ``Testbed.add_device``:

* ``add_device`` always emits its ``add`` through umockdev's non-blocking sender, which
  ``abort()``s this process once about 10 events sit unread by a listener (umockdev 0.17,
  ``net.unix.max_dgram_qlen`` = 10).  A namespace is 3-5 events and a rescan can bring
  hundreds.  Every event here goes through :func:`send`, which blocks until the listener has
  room (with a timeout), so nothing is lost and nothing aborts.
* hidden multipath path devices must exist without any uevent;
* the three gaps umockdev leaves are filled by construction: the ``/sys/dev/block/MAJ:MIN``
  link (umockdev only makes it for paths containing ``/block/``), the ``/dev`` node (a file
  with the sticky bit plus ``dev/.node/NAME -> MAJ:MIN``, which the preload reports as a block
  device) and the ``/sys/block/NAME`` link, which ``remove_device`` leaves behind.

The tree follows the layout of umockdev 0.17's ``add_devicev`` (class/bus links, a
``subsystem`` link, properties in the ``uevent`` file).  ``probe`` reports whether the
installed umockdev's own ``remove_device`` emits a ``remove`` (0.18.4+) or not (0.17.x).

Values are text; bytes that are not UTF-8 (a hostile device's ``serial``) travel as
``surrogateescape`` characters and are written and sent as the original bytes.  Every path
a request names (devpath, subsystem, attribute, device node) is checked before anything is
written: nothing a request says can reach outside the testbed's directory.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import socket
import struct
import sys
import time
from typing import Any

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

#: Subsystems that live under /sys/bus rather than /sys/class (umockdev's rule).
BUS_SUBSYSTEMS = {"pci", "usb", "platform", "scsi", "i2c", "spi", "serio", "hid"}
SEND_TIMEOUT = 20.0
Dev = dict[str, Any]
_MONITOR_MAGIC = 0xFEEDCAFE
#: One sysfs or /dev path component (kernel names, ``259:3``, ``0000:00:04.0``).
_COMPONENT = re.compile(r"^[A-Za-z0-9_.:@+-]{1,255}$")


def _safe_parts(path: str, what: str) -> list[str]:
    parts = path.split("/")
    if not all(_COMPONENT.match(p) and p not in (".", "..") for p in parts):
        raise ValueError(f"unsafe {what} {path!r}")
    return parts


def check_device(dev: Dev) -> None:
    """Refuse a device whose paths could leave the testbed (``..``, odd characters)."""
    devpath = dev["devpath"]
    if not devpath.startswith("/devices/") or len(devpath) > 4000:
        raise ValueError(f"unsafe devpath {devpath!r}: must be below /devices/")
    _safe_parts(devpath[len("/devices/") :], "devpath")
    _safe_parts(dev["subsystem"], "subsystem")
    for key in dev.get("attributes", {}):
        _safe_parts(key, "attribute name")
    node = dev.get("devnode")
    if node is not None:
        if not node.startswith("/dev/"):
            raise ValueError(f"unsafe device node {node!r}: must be below /dev/")
        _safe_parts(node[len("/dev/") :], "device node")
    if dev.get("dev") is not None and not re.fullmatch(r"\d{1,9}:\d{1,9}", dev["dev"]):
        raise ValueError(f"bad device number {dev['dev']!r}")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def string_hash32(text: str) -> int:
    """systemd's ``string_hash32`` (MurmurHash2, seed = length): libudev's BPF filter key."""
    data = text.encode()
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = length & 0xFFFFFFFF
    i = 0
    while length >= 4:
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
        length -= 4
    if length == 3:
        h ^= data[i + 2] << 16
    if length >= 2:
        h ^= data[i + 1] << 8
    if length >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def message(action: str, device: Dev, seqnum: int) -> bytes:
    """One libudev monitor datagram (what udevd sends after rule processing).

    A NUL inside a value would split it into two properties: refused.
    """
    props = [
        f"ACTION={action}",
        f"DEVPATH={device['devpath']}",
        f"SUBSYSTEM={device['subsystem']}",
        f"SEQNUM={seqnum}",
    ]
    for key, value in device.get("properties", {}).items():
        if key not in ("ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM"):
            props.append(f"{key}={value}")
    if device.get("devtype") and "DEVTYPE" not in device.get("properties", {}):
        props.append(f"DEVTYPE={device['devtype']}")
    if any("\0" in p for p in props):
        raise ValueError(f"a property of {device['devpath']!r} contains NUL")
    body = b"".join(_bytes(p) + b"\0" for p in props)
    devtype = device.get("devtype")
    # libudev's header: magic and filter hashes big-endian, sizes and offsets host order.
    header = (
        struct.pack(">8sI", b"libudev\0", _MONITOR_MAGIC)
        + struct.pack("=III", 40, 40, len(body))
        + struct.pack(
            ">IIII",
            string_hash32(device["subsystem"]),
            string_hash32(devtype) if devtype else 0,
            0,
            0,
        )
    )
    return header + body


class Bed:
    """The testbed plus the sysfs writer and the blocking event sender."""

    def __init__(self) -> None:
        self.testbed = UMockdev.Testbed.new()
        self.root: str = str(self.testbed.get_root_dir())
        self.seqnum = 1000
        self.sent = 0

    # ------------------------------------------------------------------ paths
    def real(self, path: str) -> str:
        return self.root + path

    def _symlink(self, target: str, link: str) -> None:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)

    @staticmethod
    def _dotdots(devpath: str) -> str:
        # from /sys/<devpath> back to /sys
        return "/".join([".."] * (devpath.strip("/").count("/") + 1))

    # ------------------------------------------------------------------ devices
    def materialize(self, dev: Dev, event_only: list[str]) -> None:
        devpath, subsystem, name = (
            dev["devpath"],
            dev["subsystem"],
            dev["devpath"].rsplit("/", 1)[-1],
        )
        ddir = self.real("/sys" + devpath)
        if os.path.exists(os.path.join(ddir, "uevent")):
            raise ValueError(f"device {devpath} already exists")
        os.makedirs(ddir, exist_ok=True)
        if subsystem in BUS_SUBSYSTEMS:
            self._symlink("../../.." + devpath, self.real(f"/sys/bus/{subsystem}/devices/{name}"))
            self._symlink(
                f"{self._dotdots(devpath)}/bus/{subsystem}", os.path.join(ddir, "subsystem")
            )
        else:
            self._symlink("../.." + devpath, self.real(f"/sys/class/{subsystem}/{name}"))
            self._symlink(
                f"{self._dotdots(devpath)}/class/{subsystem}", os.path.join(ddir, "subsystem")
            )
        if subsystem == "block" and dev.get("devtype") == "disk":
            self._symlink(".." + devpath, self.real(f"/sys/block/{name}"))
        self.write_uevent(dev, event_only)
        for key, value in dev.get("attributes", {}).items():
            self.write_attribute(devpath, key, value)
        if dev.get("dev"):
            kind = "block" if subsystem == "block" else "char"
            self.write_attribute(devpath, "dev", dev["dev"])
            self._symlink("../.." + devpath, self.real(f"/sys/dev/{kind}/{dev['dev']}"))
            node = dev.get("devnode")
            if node:
                real_node = self.real(node)
                os.makedirs(os.path.dirname(real_node), exist_ok=True)
                with open(real_node, "wb"):
                    pass
                # the preload reports a regular file with the sticky bit as a block device
                os.chmod(real_node, 0o1660 if kind == "block" else 0o660)
                self._symlink(
                    dev["dev"], self.real("/dev/.node/" + node[len("/dev/") :].replace("/", "_"))
                )

    def write_uevent(self, dev: Dev, event_only: list[str]) -> None:
        lines = []
        for key, value in dev.get("properties", {}).items():
            if key in event_only:
                continue  # a variable of one uevent (RESIZE=1), not of the device
            if "\n" in key + value:
                # The file is read line by line: a newline would forge another property.
                raise ValueError(f"property {key} of {dev['devpath']!r} contains a newline")
            if key == "DEVNAME" and value.startswith("/dev/"):
                value = value[len("/dev/") :]  # the kernel's uevent file has no prefix
            lines.append(f"{key}={value}\n")
        if dev.get("devtype") and "DEVTYPE" not in dev.get("properties", {}):
            lines.append(f"DEVTYPE={dev['devtype']}\n")
        self.write_attribute(dev["devpath"], "uevent", "".join(lines))

    def write_attribute(self, devpath: str, key: str, value: str) -> None:
        path = os.path.join(self.real("/sys" + devpath), key)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        # Write aside, then rename: a `change` rewrites every attribute while a listener may
        # still be reading them for the previous event, and a real sysfs attribute never
        # reads empty (open(path, "w") would truncate it first).
        tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
        with open(tmp, "wb") as f:
            f.write(_bytes(value if value.endswith("\n") or value == "" else value + "\n"))
        os.replace(tmp, path)

    def dematerialize(self, dev: Dev) -> None:
        devpath, subsystem, name = (
            dev["devpath"],
            dev["subsystem"],
            dev["devpath"].rsplit("/", 1)[-1],
        )
        links = [
            self.real(f"/sys/class/{subsystem}/{name}"),
            self.real(f"/sys/bus/{subsystem}/devices/{name}"),
        ]
        if subsystem == "block":
            links.append(self.real(f"/sys/block/{name}"))
        if dev.get("dev"):
            kind = "block" if subsystem == "block" else "char"
            links.append(self.real(f"/sys/dev/{kind}/{dev['dev']}"))
            node = dev.get("devnode")
            if node:
                links.append(self.real(node))
                links.append(self.real("/dev/.node/" + node[len("/dev/") :].replace("/", "_")))
        for link in links:
            if os.path.lexists(link):
                os.unlink(link)
        shutil.rmtree(self.real("/sys" + devpath), ignore_errors=True)

    def change(self, dev: Dev, event_only: list[str]) -> None:
        self.write_uevent(dev, event_only)
        for key, value in dev.get("attributes", {}).items():
            self.write_attribute(dev["devpath"], key, value)

    # ------------------------------------------------------------------ events
    def listeners(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, "event[0-9]*")))

    def send(self, action: str, dev: Dev, timeout: float) -> int:
        """Send one event to every listener, blocking while a listener's queue is full."""
        self.seqnum += 1
        data = message(action, dev, self.seqnum)
        for path in self.listeners():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(timeout)
            try:
                try:
                    sock.connect(path)
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        continue  # that monitor was closed; umockdev also ignores it
                    raise
                sock.send(data)
            except TimeoutError:
                raise TimeoutError(
                    f"listener {os.path.basename(path)} did not read for {timeout}s "
                    f"(event {action} {dev['devpath']})"
                ) from None
            finally:
                sock.close()
        self.sent += 1
        return self.seqnum

    # ------------------------------------------------------------------ requests
    def apply(self, req: Dev) -> Dev:
        """Execute ``events``: each {action, device, silent}; returns the seqnums sent."""
        timeout = float(req.get("timeout", SEND_TIMEOUT))
        seqnums = []
        for ev in req["events"]:
            check_device(ev["device"])
        for ev in req["events"]:
            action, dev, silent = ev["action"], ev["device"], ev.get("silent", False)
            event_only = list(ev.get("event_only", ()))
            if action == "add":
                self.materialize(dev, event_only)
            elif action == "change":
                self.change(dev, event_only)
            elif action == "remove":
                # Like the kernel: the sysfs directory is gone before the event arrives.
                # Our sender needs no sysfs (umockdev's reads it through libudev, which is
                # why its remove must be sent before remove_device).
                self.dematerialize(dev)
            if not silent and not req.get("quiet", False):
                seqnums.append(self.send(action, dev, timeout))
        return {"seqnums": seqnums}

    def probe(self) -> Dev:
        """Does this umockdev's ``remove_device`` emit ``remove`` itself?  Counted on a
        private listener in a private directory, so the caller's monitors see nothing."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(self.root, "event999999")
        sock.bind(path)
        sock.setblocking(False)
        try:
            syspath = self.testbed.add_device("probe", "harness-probe", None, [], [])
            self.testbed.remove_device(syspath)
            actions = []
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                props = data[40:].split(b"\0")
                actions += [p[7:].decode() for p in props if p.startswith(b"ACTION=")]
        finally:
            sock.close()
            os.unlink(path)
        return {"actions": actions, "remove_emits": "remove" in actions}


def main() -> None:
    bed = Bed()
    out = sys.stdout
    out.write(
        json.dumps(
            {"ok": True, "root": bed.root, "pid": os.getpid(), "umockdev": UMockdev.__name__}
        )
        + "\n"
    )
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        rid = req.get("id")
        op = req.get("op")
        started = time.monotonic()
        try:
            if op == "apply":
                result = bed.apply(req)
            elif op == "listeners":
                result = {"listeners": [os.path.basename(p) for p in bed.listeners()]}
            elif op == "probe":
                result = bed.probe()
            elif op == "quit":
                out.write(json.dumps({"id": rid, "ok": True}) + "\n")
                out.flush()
                break
            else:
                raise ValueError(f"unknown op {op!r}")
            result.update({"id": rid, "ok": True, "elapsed": time.monotonic() - started})
        except Exception as exc:  # report every failure to the client, keep serving
            result = {"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(result) + "\n")
        out.flush()
    del bed.testbed  # the destructor removes the tree


if __name__ == "__main__":
    main()
