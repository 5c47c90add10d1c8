"""One booted guest as the tests see it: the VM, its host step and guest-side helpers."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guestimage import GuestImage, make_payload_disk
from .hostside import HostStep
from .qga import ExecResult, QgaClient
from .shapes import SINGLE, Shape
from .vm import Vm, VmConfig

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROBE = "/usr/local/lib/nvme-agent-e2e/guest_probe.py"
PAYLOAD_MOUNT = "/mnt/e2e-payload"


@dataclass
class Payload:
    """What goes on the payload disk: the agent's .deb, or its sources plus the unit."""

    directory: Path
    kind: str  # "deb", "source" or "none"
    why: str = ""


def build_payload(directory: Path) -> Payload:
    """Put the agent into ``directory`` as a user would get it.

    Preferably the .deb from ``packaging/build-deb.sh``; while that script does not exist,
    the package sources plus the systemd unit files (installed like a wheel plus the unit).
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = REPO / "packaging" / "build-deb.sh"
    if script.is_file():
        proc = subprocess.run(
            ["bash", str(script), str(directory)], capture_output=True, text=True, check=False
        )
        debs = sorted(directory.glob("nvme-agent_*_all.deb"))
        if proc.returncode == 0 and debs:
            return Payload(directory, "deb")
        raise RuntimeError(
            f"packaging/build-deb.sh failed ({proc.returncode}): {proc.stderr[-3000:]}"
        )
    if not (REPO / "nvme_agent" / "service" / "daemon.py").is_file():
        return Payload(
            directory, "none", "the agent daemon (nvme_agent/service/daemon.py) is missing"
        )
    shutil.copytree(
        REPO / "nvme_agent",
        directory / "src" / "nvme_agent",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copytree(REPO / "systemd", directory / "systemd")
    return Payload(directory, "source", "packaging/build-deb.sh missing: installed from source")


class Slot:
    """At most one guest runs at a time (the machines are 2-core): a guest that boots claims
    the slot, which stops the guest holding it (it boots again if a test needs it again)."""

    def __init__(self) -> None:
        self.current: Guest | None = None

    def claim(self, guest: Guest) -> None:
        """Make ``guest`` the running one, stopping the previous holder."""
        if self.current is not None and self.current is not guest:
            self.current.shutdown()
        self.current = guest

    def release(self, guest: Guest) -> None:
        """Stop ``guest`` (at the end of its fixture)."""
        guest.shutdown()
        if self.current is guest:
            self.current = None


@dataclass
class Guest:
    """A booted guest of one shape in one multipath mode, shared by the tests of both."""

    shape: Shape
    mode: str
    image: GuestImage
    step: HostStep
    payload: Payload
    workdir: Path
    slot: Slot = field(default_factory=Slot)
    vm: Vm = field(init=False)
    running: bool = False
    boots: int = 0
    _up_since: float = 0.0
    agent_installed: bool = False
    #: Journal cursor taken just before the agent fixture last (re)started the agent.
    agent_cursor: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def boot(
        cls,
        mode: str,
        image: GuestImage,
        step: HostStep,
        payload: Payload,
        workdir: Path,
        shape: Shape = SINGLE,
        slot: Slot | None = None,
    ) -> Guest:
        """Create the payload disk, boot, copy the probe in, mount the payload."""
        guest = cls(shape, mode, image, step, payload, workdir, slot or Slot())
        guest.start()
        return guest

    @property
    def name(self) -> str:
        """``<shape>:<mode>``, the key of this guest's timings."""
        return f"{self.shape.name}:{self.mode}"

    def config(self, disk: Path) -> VmConfig:
        """The QEMU configuration of this shape and mode."""
        config = VmConfig(
            image=self.image,
            workdir=self.workdir,
            namespaces=self.shape.namespaces,
            multipath=self.multipath,
            payload=disk,
            machine=self.shape.machine,
            controllers=self.shape.controllers,
            root_ports=self.shape.root_ports,
        )
        self.step.configure(config)
        return config

    def start(self) -> None:
        """Boot (again): a fresh snapshot of the image, so the agent is not installed."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        disk = self.workdir / "payload.img"
        make_payload_disk(self.payload.directory, disk)
        self.vm = Vm(self.config(disk))
        self.slot.claim(self)
        self._up_since = time.monotonic()
        self.vm.start()
        self.running, self.agent_installed, self.agent_cursor = True, False, None
        self.boots += 1
        self.timings["boot_to_guest_agent_s"] = round(self.vm.boot_seconds or 0.0, 2)
        self.timings["boot_to_system_running_s"] = round(self.vm.system_running_seconds or 0.0, 2)
        self.timings["boots"] = self.boots
        self.sh(f"mkdir -p {Path(PROBE).parent} {PAYLOAD_MOUNT}")
        self.qga.write_file(PROBE, (HERE / "guest_probe.py").read_text())
        self.sh(f"mount -o ro LABEL=e2e-payload {PAYLOAD_MOUNT}")

    def ensure_running(self) -> None:
        """Boot again if the slot stopped this guest for another one."""
        if not self.running:
            self.start()

    def shutdown(self) -> None:
        """Power the guest off."""
        if self.running:
            self.vm.stop()
            self.running = False
            # Boot to power-off: what this shape and mode cost, its tests included.
            up = self.timings.get("up_s", 0.0) + time.monotonic() - self._up_since
            self.timings["up_s"] = round(up, 1)

    @property
    def qga(self) -> QgaClient:
        """The guest agent client."""
        return self.vm.qga

    @property
    def multipath(self) -> bool:
        """Native NVMe multipath on (the kernel default)?"""
        return self.mode == "multipath"

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> ExecResult:
        """Run a shell snippet in the guest."""
        return self.qga.sh(script, check=check, timeout=timeout)

    def probe(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run the guest probe and parse its JSON answer."""
        res = self.qga.exec(["python3", PROBE, *args], timeout=timeout, check=True)
        return dict(json.loads(res.stdout))

    def state(self) -> dict[str, Any]:
        """Attached namespaces and mounts in the guest."""
        return self.probe("state")

    def attached(self) -> dict[int, dict[str, Any]]:
        """Attached namespaces by NSID."""
        return {ns["nsid"]: ns for ns in self.state()["namespaces"]}

    def attach(self, nsid: int, timeout: float = 30.0) -> dict[str, Any]:
        """Hot-add ``nsid``; return once udev announced the disk (with the latency)."""
        return self._change("add", nsid, timeout)

    def detach(self, nsid: int, timeout: float = 30.0) -> dict[str, Any]:
        """Hot-remove ``nsid``; return once udev announced the removal."""
        return self._change("remove", nsid, timeout)

    def _change(self, action: str, nsid: int, timeout: float) -> dict[str, Any]:
        verb = "attach-ns" if action == "add" else "detach-ns"
        if self.step.name == "attach-detach":
            cmd = ["nvme", verb, "/dev/nvme0", "-n", str(nsid), "-c", "0"]
            result = self.probe(
                "run-wait-udev",
                "--action",
                action,
                "--nsid",
                str(nsid),
                "--timeout",
                str(timeout),
                "--",
                *cmd,
            )
            if result.get("rc") != 0 or result.get("timed_out"):
                raise AssertionError(f"{verb} nsid {nsid} in {self.mode}: {result}")
            return result
        # QMP host step: the host acts, the guest waits for the event after the fact.
        if action == "add":
            self.step.attach(self.vm, nsid)
        else:
            self.step.detach(self.vm, nsid)
        self.sh(f"udevadm settle --timeout={int(timeout)}")
        return {"rc": 0}

    def change_until_mounted(
        self, action: str, nsid: int, target: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Attach (``add``) or detach (``remove``) ``nsid`` and wait until ``target`` is
        mounted (add) or unmounted (remove).

        With the attach-detach host step both are measured in the guest from the start of
        the nvme command: ``udev_seconds`` (the disk's udev event) and ``mount_seconds``.
        With the QMP step only ``ok`` is reported (the host acts; nothing to time in-guest).
        """
        if self.step.name != "attach-detach":
            self._change(action, nsid, timeout)
            state = "present" if action == "add" else "absent"
            res = self.probe(
                "wait-mount", "--target", target, "--state", state, "--timeout", str(timeout)
            )
            return {"ok": bool(res["ok"])}
        verb = "attach-ns" if action == "add" else "detach-ns"
        result = self.probe(
            "run-wait-mount", "--action", action, "--nsid", str(nsid), "--target", target,
            "--timeout", str(timeout), "--", "nvme", verb, "/dev/nvme0", "-n", str(nsid), "-c", "0",
        )  # fmt: skip
        if result.get("rc") != 0:
            raise AssertionError(f"{verb} nsid {nsid} in {self.mode}: {result}")
        return result

    def settle(self) -> None:
        """Wait for udev's queue to drain."""
        self.sh("udevadm settle --timeout=60")

    def reset(self) -> None:
        """Back to the boot layout: the namespaces attached at boot, no others (through
        ``/dev/nvme0``, cntlid 0: the single-controller shape)."""
        wanted = {ns.nsid for ns in self.shape.namespaces if ns.attached}
        present = set(self.attached())
        for nsid in sorted(present - wanted):
            self.detach(nsid)
        for nsid in sorted(wanted - present):
            self.attach(nsid)
        self.settle()

    def journal_cursor(self) -> str:
        """The journal's current end: entries logged from now on come after this cursor."""
        out = self.sh("journalctl -b -n0 --show-cursor --no-pager").stdout
        cursors = [
            line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("-- cursor: ")
        ]
        assert cursors, f"journalctl printed no cursor: {out!r}"
        return cursors[-1]

    def wait_journal(self, after: str, timeout: float = 60.0, **match: str) -> dict[str, Any]:
        """Wait for the first entry after cursor ``after`` matching FIELD=value pairs."""
        args = ["wait-journal", "--after", after, "--timeout", str(timeout)]
        for key, value in match.items():
            args += ["--match", f"{key}={value}"]
        return self.probe(*args, timeout=timeout + 30)

    def journal(self, after: str | None = None, **match: str) -> list[dict[str, Any]]:
        """Journal entries (this boot, after cursor ``after`` if given) matching FIELD=value
        pairs, as parsed JSON objects."""
        args = ["journalctl", "-b", "-o", "json", "--no-pager"]
        if after is not None:
            # Matches are applied here, not by journalctl: systemd 252's --after-cursor skips
            # "the cursor's entry plus one", and when the cursor's entry does not match the
            # filter, that skips the first matching entry.
            args.append(f"--after-cursor={after}")
        else:
            args += [f"{k}={v}" for k, v in match.items()]
        res = self.qga.exec(args, check=False)
        entries = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        return [e for e in entries if all(e.get(k) == v for k, v in match.items())]
