"""Boot the guest image in QEMU with an emulated NVMe subsystem and drive it.

The topology mirrors the one the shared captures were recorded in: one ``nvme-subsys``, one
``nvme`` controller (cntlid 0, PCI slot 4) and namespaces backed by files made on the host
(ext4 and xfs with labels, a blank one, a GPT one), some present but ``detached=on``.  The
root disk is the cached image opened with ``snapshot=on`` so the cache is never written.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .guestimage import GuestImage
from .qga import QgaClient

log = logging.getLogger(__name__)

SUBSYS_NQN = "nvme-rig-subsys0"
#: What the guest kernel shows as subsysnqn for the QEMU subsystem above.
GUEST_SUBSYS_NQN = f"nqn.2019-08.org.qemu:{SUBSYS_NQN}"
CTRL_SERIAL = "RIGCTRL0"
#: NSID of a drive defined at boot but never given a namespace: the QMP hotplug probe uses it.
SPARE_NSID = 9

Content = Literal["ext4", "xfs", "blank", "gpt"]


class VmError(RuntimeError):
    """QEMU failed to start, or the guest did not come up."""


@dataclass(frozen=True)
class NamespaceSpec:
    """One ``nvme-ns`` device: its NSID, backing-file size and content, attached at boot?

    ``fs_uuid`` fixes the filesystem UUID (two namespaces carrying one filesystem, as a
    cloned image does); ``block_size`` is mkfs's block size (4096 for nvmet targets, whose
    file-backed namespaces have 4096-byte logical blocks).
    """

    nsid: int
    size_mib: int
    content: Content
    label: str | None = None
    attached: bool = False
    fs_uuid: str | None = None
    block_size: int | None = None


@dataclass(frozen=True)
class ControllerSpec:
    """One QEMU ``nvme`` controller on the root PCI bus; ``subsys`` links it to subsys0."""

    id: str
    serial: str
    slot: int
    subsys: bool = True


#: The capture rig's controller: slot 4, so devpaths have the captures' shape.
DEFAULT_CONTROLLERS: tuple[ControllerSpec, ...] = (ControllerSpec("ctrl0", CTRL_SERIAL, 4),)


#: Same layout as the captures (shared/captures/README.md), so fresh captures compare 1:1.
DEFAULT_NAMESPACES: tuple[NamespaceSpec, ...] = (
    NamespaceSpec(1, 256, "ext4", "nsext4", attached=True),
    NamespaceSpec(2, 512, "xfs", "nsxfs"),
    NamespaceSpec(3, 128, "blank"),
    NamespaceSpec(4, 256, "gpt"),
)
#: The GPT namespace's partitions: p1 ext4 labelled nspart1 (PARTLABEL rig-data), p2 blank.
GPT_P1_LABEL = "nspart1"
GPT_P1_PARTLABEL = "rig-data"


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VmError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _mkfs_ext4_args(spec: NamespaceSpec) -> list[str]:
    args = ["mkfs.ext4", "-q", "-F", "-L", spec.label or ""]
    if spec.fs_uuid:
        args += ["-U", spec.fs_uuid]
    if spec.block_size:
        args += ["-b", str(spec.block_size)]
    return args


def make_namespace_file(spec: NamespaceSpec, path: Path) -> None:
    """Create the sparse backing file of ``spec`` with its filesystem or partition table."""
    with open(path, "wb") as fh:
        fh.truncate(spec.size_mib * 2**20)
    if spec.content == "ext4":
        _run([*_mkfs_ext4_args(spec), str(path)])
    elif spec.content == "xfs":
        _run(["mkfs.xfs", "-q", "-f", "-L", spec.label or "", str(path)])
    elif spec.content == "gpt":
        half = spec.size_mib // 2
        table = f"label: gpt\nstart=2048, size={half}MiB, name={GPT_P1_PARTLABEL}\nname=rig-blank\n"
        proc = subprocess.run(
            ["sfdisk", "--quiet", str(path)], input=table, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise VmError(f"sfdisk {path}: {proc.stderr.strip()}")
        # mke2fs writes the partition's filesystem in place: no loop device needed.
        _run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                GPT_P1_LABEL,
                "-E",
                f"offset={2048 * 512}",
                str(path),
                f"{half}M",
            ]
        )


#: prctl(2) option: signal this process when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the QEMU child before exec: if pytest is killed (CI timeout, kill -9), the
    guest goes too instead of running on as an orphan holding CPU and the cache image."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def kvm_usable() -> bool:
    """True only where KVM really runs a stock kernel.

    A software nested-virtualisation KVM (``kvm_pvm``) opens fine but never boots a Debian
    kernel, and without a vmx/svm CPU flag there is no hardware KVM to speak of.
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists() or not os.access(kvm, os.R_OK | os.W_OK):
        return False
    if Path("/sys/module/kvm_pvm").exists():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


def accel_args() -> tuple[str, list[str]]:
    """The accelerator to use (``$NVME_AGENT_E2E_ACCEL`` = kvm|tcg overrides detection)."""
    forced = os.environ.get("NVME_AGENT_E2E_ACCEL", "").strip().lower()
    if forced == "kvm" or (not forced and kvm_usable()):
        return "kvm", ["-accel", "kvm", "-cpu", "host"]
    return "tcg", ["-accel", "tcg,thread=multi", "-cpu", "max"]


class QmpClient:
    """Minimal QMP client: capabilities negotiation, then one command at a time.

    Asynchronous events that arrive while a reply is awaited are kept in :attr:`events`,
    so :meth:`wait_event` also finds an event that came before it was called.
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no QMP message")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise VmError("QMP socket closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def _read(self) -> dict[str, Any]:
        while True:
            try:
                msg = self._read_message(self._timeout)
            except TimeoutError:
                raise VmError(f"QMP: no reply within {self._timeout:.0f}s") from None
            if "event" not in msg:
                return msg
            self.events.append(msg)

    def wait_event(self, name: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The first event ``name`` whose data contains ``data``, kept or arriving within
        ``timeout`` (e.g. ``DEVICE_DELETED`` once the guest has released a device)."""

        def matches(msg: dict[str, Any]) -> bool:
            got = msg.get("data", {})
            return msg.get("event") == name and all(got.get(k) == v for k, v in data.items())

        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.events):
                if matches(msg):
                    return self.events.pop(i)
            try:
                self.events.append(self._read_message(deadline - time.monotonic()))
            except TimeoutError:
                raise VmError(f"no QMP event {name} {data} within {timeout:.0f}s") from None

    def request(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command, return the whole reply (``return`` or ``error``)."""
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self._sock.settimeout(self._timeout)
        self._sock.sendall(json.dumps(req).encode() + b"\n")
        return self._read()

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result; raise VmError on a QMP error."""
        reply = self.request(command, arguments)
        if "error" in reply:
            raise VmError(f"QMP {command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()


@dataclass
class VmConfig:
    """How to boot: the image, the namespaces, which ones QEMU creates at boot, extras."""

    image: GuestImage
    workdir: Path
    namespaces: tuple[NamespaceSpec, ...] = DEFAULT_NAMESPACES
    multipath: bool = True
    memory_mib: int = 1024
    cpus: int = 2
    payload: Path | None = None
    #: NSIDs that get an ``nvme-ns`` device at boot (the rest only a drive, for QMP hotplug);
    #: ``None`` means all, with ``detached=on`` for the ones not attached.
    devices_at_boot: frozenset[int] | None = None
    extra_append: Sequence[str] = field(default_factory=tuple)
    #: ``pc`` like the capture rig; ``q35`` where PCIe root ports are needed (hotplug).
    machine: str = "pc"
    controllers: tuple[ControllerSpec, ...] = DEFAULT_CONTROLLERS
    #: Empty ``pcie-root-port``s (ids ``rp1``...) a whole controller can be hot-added to.
    root_ports: int = 0


class Vm:
    """A running guest: the QEMU process, its guest agent and QMP connections."""

    def __init__(self, config: VmConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        self.qga_path = self.workdir / "qga.sock"
        self.qmp_path = self.workdir / "qmp.sock"
        self.console = self.workdir / "console.log"
        self.accel, self._accel_args = accel_args()
        self.proc: subprocess.Popen[bytes] | None = None
        self.qga = QgaClient(self.qga_path)
        self.boot_seconds: float | None = None
        self.system_running_seconds: float | None = None
        self._qmp: QmpClient | None = None

    def namespace_file(self, nsid: int) -> Path:
        """Backing file of namespace ``nsid`` on the host."""
        return self.workdir / f"ns{nsid}.img"

    def argv(self) -> list[str]:
        """The qemu-system-x86_64 command line."""
        cfg = self.config
        append = ["root=/dev/vda", "rw", "console=ttyS0", "panic=-1", "quiet", "loglevel=4"]
        if not cfg.multipath:
            append.append("nvme_core.multipath=N")
        append += list(cfg.extra_append)
        argv = [
            "qemu-system-x86_64",
            "-name",
            "nvme-agent-e2e",
            "-machine",
            cfg.machine,
            *self._accel_args,
            "-m",
            str(cfg.memory_mib),
            "-smp",
            str(cfg.cpus),
            "-nodefaults",
            "-no-user-config",
            "-vga",
            "none",
            "-display",
            "none",
            "-nic",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{self.console}",
            "-kernel",
            str(cfg.image.kernel),
            "-initrd",
            str(cfg.image.initrd),
            "-append",
            " ".join(append),
            # Root first so it is /dev/vda; snapshot=on keeps the cached image pristine.
            "-drive",
            f"file={cfg.image.root},format=raw,if=none,id=root,snapshot=on",
            "-device",
            "virtio-blk-pci,drive=root",
        ]
        if cfg.payload is not None:
            argv += [
                "-drive",
                f"file={cfg.payload},format=raw,if=none,id=payload,readonly=on",
                "-device",
                "virtio-blk-pci,drive=payload",
            ]
        argv += ["-device", f"nvme-subsys,id=subsys0,nqn={SUBSYS_NQN}"]
        for ctrl in cfg.controllers:
            dev = f"nvme,id={ctrl.id},serial={ctrl.serial},addr={ctrl.slot:#x}"
            argv += ["-device", dev + (",subsys=subsys0" if ctrl.subsys else "")]
        for port in range(1, cfg.root_ports + 1):
            argv += [
                "-device",
                f"pcie-root-port,id=rp{port},chassis={port},slot={port},addr={0x10 + port:#x}",
            ]
        for spec in cfg.namespaces:
            argv += [
                "-drive",
                f"file={self.namespace_file(spec.nsid)},format=raw,if=none,id=nsdrv{spec.nsid}",
            ]
            if cfg.devices_at_boot is None or spec.nsid in cfg.devices_at_boot:
                dev = f"nvme-ns,id=ns{spec.nsid},drive=nsdrv{spec.nsid},nsid={spec.nsid}"
                if cfg.devices_at_boot is None and not spec.attached:
                    dev += ",detached=on"
                argv += ["-device", dev]
        argv += [
            "-drive",
            f"file={self.namespace_file(SPARE_NSID)},format=raw,if=none,id=nsdrv{SPARE_NSID}",
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            f"socket,id=qga0,path={self.qga_path},server=on,wait=off",
            "-device",
            "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
        ]
        return argv

    def prepare(self) -> None:
        """Create the work directory and the namespace backing files."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for spec in self.config.namespaces:
            make_namespace_file(spec, self.namespace_file(spec.nsid))
        make_namespace_file(NamespaceSpec(SPARE_NSID, 64, "blank"), self.namespace_file(SPARE_NSID))

    def start(self, timeout: float = 300.0) -> None:
        """Start QEMU and wait until the guest agent answers and systemd finished booting."""
        self.prepare()
        argv = self.argv()
        log.info("starting %s", " ".join(argv))
        started = time.monotonic()
        stderr = open(self.workdir / "qemu.stderr", "wb")  # noqa: SIM115 - lives with the VM
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            # preexec_fn is unsafe only with other threads running; the suite starts none.
            preexec_fn=_die_with_parent,
        )
        stderr.close()
        deadline = started + timeout
        # QEMU creates the chardev socket itself: wait for the file (or an early exit).
        while not self.qga_path.exists():
            if self.proc.poll() is not None:
                raise VmError(f"qemu exited {self.proc.returncode}: {self.diagnostics()}")
            if time.monotonic() > deadline:
                raise VmError(f"qemu created no socket in {timeout:.0f}s: {self.diagnostics()}")
            time.sleep(0.05)
        try:
            self.qga.wait_ready(timeout=deadline - time.monotonic())
        except Exception as exc:
            raise VmError(f"guest agent did not come up: {exc}\n{self.diagnostics()}") from exc
        self.boot_seconds = time.monotonic() - started
        # Wait for the end of boot (degraded is fine: the payload of interest is udev/agent).
        self.qga.exec(
            ["systemctl", "is-system-running", "--wait"],
            timeout=max(30.0, deadline - time.monotonic()),
        )
        self.system_running_seconds = time.monotonic() - started
        log.info(
            "guest up (%s): agent %.1fs, system running %.1fs",
            self.accel,
            self.boot_seconds,
            self.system_running_seconds,
        )

    def qmp(self) -> QmpClient:
        """The QMP connection (opened on first use)."""
        if self._qmp is None:
            self._qmp = QmpClient(self.qmp_path)
        return self._qmp

    def diagnostics(self) -> str:
        """QEMU's stderr and the tail of the serial console, for error messages."""
        parts = []
        for path in (self.workdir / "qemu.stderr", self.console):
            if path.exists():
                parts.append(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """Power the guest off (QMP quit; terminate as a fallback) and close connections."""
        self.qga.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.qmp().execute("quit")
            except (OSError, VmError) as exc:
                log.warning("QMP quit failed (%s); terminating qemu", exc)
                self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def cleanup(self) -> None:
        """Remove the namespace files and sockets (they can be large)."""
        shutil.rmtree(self.workdir, ignore_errors=True)
