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
* ``capture --out FILE [--kernel] [--until SPEC]... [--ready-fifo F] -- CMD...``: ``udevadm
  monitor [--kernel] --udev --property`` around CMD, until the SPEC events arrived and udev's
  queue drained, cut after a marker event so every event the command caused is in the file.
* ``wait-fifo F``: block until a capture says (through the FIFO F) that it is listening.
* ``agent-sync --steps JSON``: run each command and wait for its journal entry (a barrier:
  the agent reads udev events in order).
* ``snapshot [--steps JSON]``: the barrier, then ``nvme-agent status --settle --json`` and
  the mounts.
* ``journal --after CURSOR --match FIELD=VALUE...``: the matching entries after CURSOR.
* ``tcp-gate``, ``gated-connect``: an ``nvme connect`` held in the ``connecting`` state (see
  test_e2e_tcp.py); ``ctrl-attributes NAME``: a controller's sysfs attributes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

MARKER = "/sys/devices/virtual/mem/null"
MARKER_DEVPATH = MARKER.removeprefix("/sys")


def _mounts() -> list[dict[str, str]]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, source = right.split()[:2]
        out.append(
            {
                "id": fields[0],
                "majmin": fields[2],
                "target": fields[4],
                "source": source,
                "fstype": fstype,
            }
        )
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


def _text(value: Any) -> str:
    # python3-systemd converts MESSAGE_ID and friends to uuid.UUID: keep journalctl's form.
    return value.hex if isinstance(value, uuid.UUID) else str(value)


def journal_entries(after: str, matches: list[str]) -> dict[str, Any]:
    """Every journal entry after cursor ``after`` matching all ``matches``, as text fields."""
    from systemd import journal

    reader = journal.Reader()
    reader.this_boot()
    for match in matches:
        reader.add_match(match)
    reader.seek_cursor(after)
    entries = [
        {key: _text(value) for key, value in entry.items()}
        for entry in reader
        if entry.get("__CURSOR") != after  # seek_cursor lands on the cursor's own entry
    ]
    return {"entries": entries}


def journal_tail() -> str:
    """The cursor of the journal's last entry: entries logged from now on come after it."""
    from systemd import journal

    reader = journal.Reader()
    reader.this_boot()
    reader.seek_tail()
    return str(reader.get_previous()["__CURSOR"])


class _Until:
    """UDEV events a capture waits for after its command: ``action,subsystem[,devtype[,K=V]]``
    (K=V: a property value, e.g. ID_NSID=1), each spec once per occurrence (list a spec
    twice to wait for two such events)."""

    def __init__(self, specs: list[str]) -> None:
        self.pending = [tuple(spec.split(",")) for spec in specs]
        self.armed = False
        self.done = threading.Event()
        if not self.pending:
            self.done.set()

    @staticmethod
    def _matches(spec: tuple[str, ...], action: str, subsystem: str, props: dict[str, str]) -> bool:
        devtype = spec[2] if len(spec) > 2 and spec[2] else None
        if (spec[0], spec[1]) != (action, subsystem) or devtype not in (None, props.get("DEVTYPE")):
            return False
        key, _, value = spec[3].partition("=") if len(spec) > 3 else ("", "", "")
        return not key or props.get(key) == value

    def offer(self, action: str, subsystem: str, props: dict[str, str]) -> None:
        if not self.armed:
            return
        for i, spec in enumerate(self.pending):
            if self._matches(spec, action, subsystem, props):
                del self.pending[i]
                break
        if not self.pending:
            self.done.set()


def _drop_marker_blocks(text: str) -> str:
    """Remove the marker's KERNEL and UDEV event blocks (and anything after the UDEV one)."""
    blocks = text.split("\n\n")
    kept = []
    for block in blocks:
        if MARKER_DEVPATH in block.split("\n", 1)[0]:
            if block.startswith("UDEV"):
                break
            continue
        kept.append(block)
    return "\n\n".join(kept).rstrip("\n") + "\n\n"


def capture(
    out: str,
    cmd: list[str],
    timeout: float,
    kernel: bool = False,
    until: list[str] | None = None,
    ready_fifo: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Record ``udevadm monitor [--kernel] --udev --property`` output while ``cmd`` runs.

    After the command: wait for the ``until`` events (a controller that goes away only after
    its reconnect timeout, a namespace scanned after ``nvme connect`` returned), then for
    udev's queue to drain, then for a marker event: netlink keeps order, so every event the
    step caused is in the file.  With ``ready_fifo`` the monitor's readiness is written to
    that FIFO before the command runs, for a host that acts from outside (QMP); ``label``
    then names the host's action in the header, and "command started" is when the guest
    said it was listening.
    """
    argv = ["udevadm", "monitor", "--udev", "--property"] + (["--kernel"] if kernel else [])
    mon = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert mon.stdout is not None
    lines: list[str] = []
    legend = {"UDEV - "} | ({"KERNEL - "} if kernel else set())
    header_done = threading.Event()
    marker_seen = threading.Event()
    waiter = _Until(until or [])

    def reader() -> None:
        assert mon.stdout is not None
        event: dict[str, str] = {}
        head: list[str] = []
        for line in mon.stdout:
            lines.append(line)
            legend.discard(line[:9] if line.startswith("KERNEL") else line[:7])
            if not legend:
                header_done.set()
            if line.startswith(("UDEV ", "KERNEL")) and "[" in line:
                head, event = line.split(), {}
            elif line.strip() and "=" in line:
                key, _, value = line.rstrip("\n").partition("=")
                event[key] = value
            elif not line.strip() and head and head[0] == "UDEV":
                if MARKER_DEVPATH in head[-2] and head[-3] == "change":
                    marker_seen.set()
                waiter.offer(head[-3], head[-1].strip("()"), event)
                head = []

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    # The legend is printed once the monitor's sockets are bound: events from now on are seen.
    header_done.wait(timeout)
    waiter.armed = True
    cursor = journal_tail()
    started = time.monotonic()
    if ready_fifo:  # from here on, the host may act
        with open(ready_fifo, "w") as fifo:
            fifo.write("ready\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    returned = time.monotonic()
    until_ok = waiter.done.wait(timeout)
    subprocess.run(["udevadm", "settle", f"--timeout={int(timeout)}"], check=False)
    subprocess.run(["udevadm", "trigger", "--action=change", MARKER], check=False)
    ok = marker_seen.wait(timeout)
    mon.terminate()
    mon.wait()
    thread.join(timeout)
    text = _drop_marker_blocks("".join(lines)) if ok else "".join(lines)
    header = (
        f"# {label or ' '.join(cmd)}\n"
        f"# command started at monotonic {started:.6f}, returned at {returned:.6f}\n"
    )
    Path(out).write_text(header + text)
    return {
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "marker_seen": ok,
        "until_ok": until_ok,
        "missing": [",".join(spec) for spec in waiter.pending],
        "out": out,
        "seconds": round(time.monotonic() - started, 4),
        "cursor": cursor,
    }


def wait_fifo(path: str) -> dict[str, Any]:
    """Block until a writer opens the FIFO ``path`` and writes a line (a capture's readiness)."""
    with open(path) as fifo:
        line = fifo.readline()
    return {"ok": bool(line), "line": line.strip()}


def run_journal(matches: list[str], cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd``, then wait for the first journal entry after it matching ``matches``."""
    cursor = journal_tail()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result: dict[str, Any] = {"rc": proc.returncode, "stderr": proc.stderr}
    if proc.returncode == 0:
        result["journal"] = wait_journal(cursor, matches, timeout)
    return result


def agent_sync(steps: list[tuple[list[str], list[str]]], timeout: float) -> dict[str, Any]:
    """Run each (command, journal matches) pair in turn, waiting for its entry.

    Used as a barrier: the agent reads udev events in order, so once it has logged its
    reaction to a marker event (a blank namespace attached, then detached), it has read
    every event before the marker.
    """
    started = time.monotonic()
    for cmd, matches in steps:
        res = run_journal(matches, cmd, timeout)
        if res["rc"] != 0 or not res.get("journal", {}).get("ok"):
            return {"ok": False, "cmd": cmd, "result": res}
    return {"ok": True, "seconds": round(time.monotonic() - started, 4)}


def snapshot(steps: list[tuple[list[str], list[str]]], settle: float) -> dict[str, Any]:
    """The agent barrier (``steps``, may be empty), then ``nvme-agent status --settle`` (no
    action queued or running) and the mounts: what the agent made of everything before."""
    result: dict[str, Any] = {"sync": agent_sync(steps, settle) if steps else {"ok": True}}
    proc = subprocess.run(
        ["nvme-agent", "status", "--settle", f"{settle:g}", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    result.update(rc=proc.returncode, stderr=proc.stderr)
    result["status"] = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result["mounts"] = _mounts()
    return result


CTRL_ATTRIBUTES = (
    "state",
    "serial",
    "model",
    "firmware_rev",
    "subsysnqn",
    "cntlid",
    "transport",
    "address",
)


def ctrl_attributes(name: str) -> dict[str, str]:
    """A controller's sysfs attributes as read now (errors kept as text)."""
    attrs = {}
    for attr in CTRL_ATTRIBUTES:
        try:
            attrs[attr] = Path(f"/sys/class/nvme/{name}/{attr}").read_text().strip()
        except OSError as exc:
            attrs[attr] = f"<{exc.strerror}>"
    return attrs


def _pipe(src: Any, dst: Any) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def tcp_gate(listen: int, target: int, release: str) -> int:
    """Forward 127.0.0.1:``listen`` to 127.0.0.1:``target``; hold the first connection (an
    ``nvme connect``'s admin queue) until a line is written to the FIFO ``release``.

    Runs as a transient service (``systemd-run -p Type=notify``): READY=1 once listening.
    """
    from systemd.daemon import notify

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen))
    server.listen(16)
    notify("READY=1")
    first = True
    while True:
        conn, _ = server.accept()
        if first:
            first = False
            with open(release) as fifo:  # the connection waits, "connecting", until released
                fifo.readline()
        upstream = socket.create_connection(("127.0.0.1", target))
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def gated_connect(
    release: str, marker: list[tuple[list[str], list[str]]], cmd: list[str], timeout: float
) -> dict[str, Any]:
    """Run ``nvme connect`` (``cmd``) through a held :func:`tcp_gate`; once udev announced
    the new controller, read its sysfs attributes (still connecting), run the ``marker``
    barrier (so the agent has read the controller's add event), then release the gate."""
    import pyudev

    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="udev")
    monitor.filter_by("nvme")
    monitor.start()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: dict[str, Any] = {}
    deadline = started + timeout
    while "ctrl" not in result and time.monotonic() < deadline:
        device = monitor.poll(timeout=max(0.0, deadline - time.monotonic()))
        if device is not None and device.action == "add" and device.sys_name.startswith("nvme"):
            result["ctrl"] = device.sys_name
            result["while_connecting"] = ctrl_attributes(device.sys_name)
    if "ctrl" in result:
        result["marker"] = agent_sync(marker, timeout)
    with open(release, "w") as fifo:
        fifo.write("go\n")
    out, err = proc.communicate(timeout=timeout)
    result.update(rc=proc.returncode, stdout=out, stderr=err)
    result["seconds"] = round(time.monotonic() - started, 4)
    return result


def _command(args: argparse.Namespace) -> list[str]:
    # Only the first "--" separates: a nested probe call keeps its own.
    command = list(getattr(args, "command", []))
    return command[1:] if command[:1] == ["--"] else command


def _pairs(text: str) -> list[tuple[list[str], list[str]]]:
    return [(list(cmd), list(matches)) for cmd, matches in json.loads(text)]


HANDLERS: dict[str, Any] = {
    "state": lambda a: state(),
    "run-wait-udev": lambda a: run_wait_udev(a.action, a.nsid, _command(a), a.timeout),
    "run-wait-mount": lambda a: run_wait_mount(a.action, a.nsid, a.target, _command(a), a.timeout),
    "wait-journal": lambda a: wait_journal(a.after, a.match, a.timeout),
    "wait-mount": lambda a: wait_mount(a.target, a.state, a.timeout),
    "capture": lambda a: capture(
        a.out, _command(a), a.timeout, a.kernel, a.until, a.ready_fifo, a.label
    ),
    "wait-fifo": lambda a: wait_fifo(a.path),
    "agent-sync": lambda a: agent_sync(_pairs(a.steps), a.timeout),
    "tcp-gate": lambda a: tcp_gate(a.listen, a.target, a.release),
    "gated-connect": lambda a: gated_connect(a.release, _pairs(a.marker), _command(a), a.timeout),
    "ctrl-attributes": lambda a: {"attributes": ctrl_attributes(a.name)},
    "snapshot": lambda a: snapshot(_pairs(a.steps), a.settle),
    "journal": lambda a: journal_entries(a.after, a.match),
}


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument("--kernel", action="store_true", help="KERNEL events too")
    p.add_argument("--until", action="append", default=[], help="action,subsystem[,devtype]")
    p.add_argument("--ready-fifo", help="write 'ready' here once the monitor is bound")
    p.add_argument("--label", help="the header's first line instead of the command")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("wait-fifo")
    p.add_argument("path")
    p = sub.add_parser("agent-sync")
    p.add_argument("--steps", required=True, help="JSON [[command, [FIELD=VALUE...]], ...]")
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("tcp-gate")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--release", required=True, help="FIFO")
    p = sub.add_parser("gated-connect")
    p.add_argument("--release", required=True, help="the gate's FIFO")
    p.add_argument("--marker", required=True, help="agent-sync steps as JSON")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("snapshot")
    p.add_argument("--steps", default="[]", help="agent-sync steps first (JSON)")
    p.add_argument("--settle", type=float, default=60.0)
    p = sub.add_parser("journal")
    p.add_argument("--after", required=True, help="journal cursor")
    p.add_argument("--match", action="append", default=[], help="FIELD=VALUE")
    p = sub.add_parser("ctrl-attributes")
    p.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand; print its JSON result."""
    args = _parser().parse_args(argv)
    result = HANDLERS[args.cmd](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    sys.exit(main())
