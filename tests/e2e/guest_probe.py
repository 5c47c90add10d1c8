"""Guest-side helper, copied into the guest and run by its python3 (stdlib + pyudev only).

Each subcommand prints one JSON object on stdout:

* ``state``: attached namespaces (by the ``nsid`` sysfs attribute, never by name), their
  block name, devpath, partitions and mount points.
* ``run-wait-udev --action add|remove --nsid N -- CMD...``: run CMD and wait for the udev
  (not kernel) event of the namespace's disk; report the latency from command start.
* ``wait-mount --target PATH --state present|absent``: wait for a mount to (dis)appear,
  woken by the kernel's mountinfo change notification (POLLPRI), not by a sleep loop.
* ``run-wait-mount --action add|remove --nsid N --target PATH -- CMD...``: run CMD (attach or
  detach), wait for the disk's udev event and for PATH to be mounted (add) or unmounted
  (remove); report both latencies from command start, measured in the guest.
* ``wait-journal --after CURSOR --match FIELD=VALUE...``: wait for a journal entry after
  CURSOR matching every FIELD=VALUE (python3-systemd's ``Reader.wait``, woken by journald).
* ``capture --out FILE -- CMD...``: ``udevadm monitor --udev --property`` around CMD, cut
  after a marker event so every event the command caused is in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MARKER = "/sys/devices/virtual/mem/null"


def _mounts() -> list[dict[str, str]]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, source = right.split()[:2]
        out.append({"target": fields[4], "source": source, "fstype": fstype})
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def state() -> dict[str, Any]:
    """Attached NVMe namespaces as the guest kernel shows them."""
    mounts = _mounts()
    namespaces = []
    for disk in sorted(Path("/sys/class/block").iterdir()):
        name = disk.name
        if not name.startswith("nvme") or (disk / "partition").exists():
            continue
        if _read(disk / "hidden") == "1":  # the multipath path device nvme0cXnY
            continue
        real = disk.resolve()
        parts = sorted(p.name for p in real.iterdir() if (p / "partition").exists())
        devs = {f"/dev/{name}", *(f"/dev/{p}" for p in parts)}
        namespaces.append(
            {
                "nsid": int(_read(disk / "nsid") or 0),
                "name": name,
                "devpath": str(real).removeprefix("/sys"),
                "partitions": parts,
                "mounts": [m for m in mounts if m["source"] in devs],
            }
        )
    return {"namespaces": namespaces, "mounts": mounts}


def run_wait_udev(action: str, nsid: int, cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd``; wait for the udev event ``action`` of the disk with ID_NSID ``nsid``."""
    import pyudev  # the guest has python3-pyudev (an agent dependency)

    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="udev")
    monitor.filter_by("block", "disk")
    monitor.start()
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    returned = time.monotonic()
    result: dict[str, Any] = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    result["command_seconds"] = round(returned - started, 4)
    if proc.returncode != 0:
        return result
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result["timed_out"] = True
            return result
        device = monitor.poll(timeout=remaining)
        if device is None:
            continue
        if device.action == action and device.properties.get("ID_NSID") == str(nsid):
            result["latency"] = round(time.monotonic() - started, 4)
            result["devpath"] = device.device_path
            result["name"] = device.sys_name
            return result


def wait_mount(target: str, wanted: str, timeout: float) -> dict[str, Any]:
    """Wait until ``target`` is (``present``) or is not (``absent``) a mount point."""
    started = time.monotonic()
    with open("/proc/self/mountinfo") as fh:
        poller = select.poll()
        poller.register(fh, select.POLLPRI | select.POLLERR)
        while True:
            fh.seek(0)
            fh.read()  # re-arm the change notification
            present = any(m["target"] == target for m in _mounts())
            if present == (wanted == "present"):
                return {"ok": True, "seconds": round(time.monotonic() - started, 4)}
            remaining = deadline_left = started + timeout - time.monotonic()
            if deadline_left <= 0:
                return {"ok": False, "seconds": round(time.monotonic() - started, 4)}
            poller.poll(remaining * 1000)


def run_wait_mount(
    action: str, nsid: int, target: str, cmd: list[str], timeout: float
) -> dict[str, Any]:
    """Run ``cmd``; wait for the udev ``action`` of NSID's disk and for ``target`` to be
    mounted (``add``) or gone (``remove``).  Both watches are armed before ``cmd`` starts."""
    import pyudev

    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="udev")
    monitor.filter_by("block", "disk")
    monitor.start()
    wanted = action == "add"
    result: dict[str, Any] = {"ok": False}
    with open("/proc/self/mountinfo") as fh:
        fh.read()  # arm the change notification before the command runs
        poller = select.poll()
        poller.register(fh, select.POLLPRI | select.POLLERR)
        poller.register(monitor.fileno(), select.POLLIN)
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        result.update(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        result["command_seconds"] = round(time.monotonic() - started, 4)
        if proc.returncode != 0:
            return result
        deadline = started + timeout
        while "udev_seconds" not in result or "mount_seconds" not in result:
            while (device := monitor.poll(timeout=0)) is not None:
                if device.action == action and device.properties.get("ID_NSID") == str(nsid):
                    result.setdefault("udev_seconds", round(time.monotonic() - started, 4))
                    result["name"] = device.sys_name
            fh.seek(0)
            fh.read()  # re-arm before looking, so no change slips between look and poll
            if (
                "mount_seconds" not in result
                and any(m["target"] == target for m in _mounts()) == wanted
            ):
                result["mount_seconds"] = round(time.monotonic() - started, 4)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result["timed_out"] = True
                return result
            if "udev_seconds" not in result or "mount_seconds" not in result:
                poller.poll(remaining * 1000)
    result["ok"] = True
    return result


def wait_journal(after: str, matches: list[str], timeout: float) -> dict[str, Any]:
    """Wait for the first journal entry after cursor ``after`` matching all ``matches``."""
    from systemd import journal  # python3-systemd (an agent dependency)

    reader = journal.Reader()
    reader.this_boot()
    for match in matches:
        reader.add_match(match)
    reader.seek_cursor(after)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        for entry in reader:
            if entry.get("__CURSOR") == after:
                continue  # seek_cursor lands on the cursor's own entry when it matches
            return {
                "ok": True,
                "seconds": round(time.monotonic() - started, 4),
                "message": str(entry.get("MESSAGE", "")),
                "pid": int(entry.get("_PID", 0)),
                "cursor": str(entry["__CURSOR"]),
            }
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"ok": False, "seconds": round(time.monotonic() - started, 4)}
        reader.wait(remaining)


def capture(out: str, cmd: list[str], timeout: float) -> dict[str, Any]:
    """Record ``udevadm monitor --udev --property`` output while ``cmd`` runs."""
    mon = subprocess.Popen(
        ["udevadm", "monitor", "--udev", "--property"],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert mon.stdout is not None
    lines: list[str] = []
    header_done = threading.Event()
    marker_seen = threading.Event()

    def reader() -> None:
        assert mon.stdout is not None
        for line in mon.stdout:
            lines.append(line)
            if line.startswith("UDEV - "):
                header_done.set()
            if line.startswith("UDEV") and " change " in line and "/mem/null" in line:
                marker_seen.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    # The legend is printed once the monitor's socket is bound: events from now on are seen.
    header_done.wait(timeout)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    subprocess.run(["udevadm", "settle", f"--timeout={int(timeout)}"], check=False)
    # Netlink keeps order: once the marker's event is read, every earlier one was too.
    subprocess.run(["udevadm", "trigger", "--action=change", MARKER], check=False)
    ok = marker_seen.wait(timeout)
    mon.terminate()
    mon.wait()
    thread.join(timeout)
    text = "".join(lines)
    cut = text.rfind("\nUDEV")
    marker_at = text.find("/mem/null", cut if cut >= 0 else 0)
    if ok and marker_at >= 0:
        text = text[: text.rfind("\n\n", 0, marker_at) + 2]
    header = f"# {' '.join(cmd)}\n# command started at monotonic {started:.6f}\n"
    Path(out).write_text(header + text)
    return {"rc": proc.returncode, "stderr": proc.stderr, "marker_seen": ok, "out": out}


def main(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand; print its JSON result."""
    parser = argparse.ArgumentParser(prog="guest_probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("state")
    p = sub.add_parser("run-wait-udev")
    p.add_argument("--action", choices=("add", "remove"), required=True)
    p.add_argument("--nsid", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("wait-mount")
    p.add_argument("--target", required=True)
    p.add_argument("--state", choices=("present", "absent"), required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("run-wait-mount")
    p.add_argument("--action", choices=("add", "remove"), required=True)
    p.add_argument("--nsid", type=int, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("wait-journal")
    p.add_argument("--after", required=True, help="journal cursor")
    p.add_argument("--match", action="append", default=[], help="FIELD=VALUE")
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("capture")
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [c for c in getattr(args, "command", []) if c != "--"]
    if args.cmd == "state":
        result = state()
    elif args.cmd == "run-wait-udev":
        result = run_wait_udev(args.action, args.nsid, command, args.timeout)
    elif args.cmd == "run-wait-mount":
        result = run_wait_mount(args.action, args.nsid, args.target, command, args.timeout)
    elif args.cmd == "wait-journal":
        result = wait_journal(args.after, args.match, args.timeout)
    elif args.cmd == "wait-mount":
        result = wait_mount(args.target, args.state, args.timeout)
    else:
        result = capture(args.out, command, args.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    sys.exit(main())
