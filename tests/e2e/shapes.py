"""The machine shapes the suite boots, and the steps recorded in each.

One boot per shape and multipath mode; several steps in it.  The step tables are the one
source of the capture files' names and of the README that describes them
(tests/fixtures/captures/<capture dir>/README.md): the recorder writes both from here, and
the fast suite checks that the stored files and the README agree with these tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .vm import (
    CTRL_SERIAL,
    DEFAULT_CONTROLLERS,
    DEFAULT_NAMESPACES,
    ControllerSpec,
    NamespaceSpec,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "captures"
MODES = ("multipath", "no-multipath")


@dataclass(frozen=True)
class Shape:
    """A machine: QEMU machine type, controllers, namespaces, empty PCIe root ports."""

    name: str
    machine: str
    controllers: tuple[ControllerSpec, ...]
    namespaces: tuple[NamespaceSpec, ...]
    root_ports: int = 0


#: The capture rig: one controller, the shared captures' namespaces (tests of
#: test_e2e_guest/agent/captures, and NVMe/TCP with an nvmet target inside the guest).
SINGLE = Shape("single", "pc", DEFAULT_CONTROLLERS, DEFAULT_NAMESPACES)

#: ext4 UUID of ns1 in the dual shape, and of its clone ns3.
CLONED_FS_UUID = "0c10ed00-5eed-4e2e-9000-00000000c10e"
#: The dual shape's blank namespace: the agent-sync marker (no rule matches it).
DUAL_MARKER_NSID = 4
DUAL_NAMESPACES: tuple[NamespaceSpec, ...] = (
    NamespaceSpec(1, 128, "ext4", "nsext4", attached=True, fs_uuid=CLONED_FS_UUID),
    NamespaceSpec(2, 128, "ext4", "nsdual"),
    NamespaceSpec(3, 128, "ext4", "nsclone", fs_uuid=CLONED_FS_UUID),
    NamespaceSpec(DUAL_MARKER_NSID, 64, "blank"),
)
#: Two QEMU controllers on one nvme-subsys (same serial), plus a PCIe root port (q35) for a
#: whole controller to be hot-added to.
DUAL = Shape(
    "dual",
    "q35",
    (ControllerSpec("ctrl0", CTRL_SERIAL, 4), ControllerSpec("ctrl1", CTRL_SERIAL, 5)),
    DUAL_NAMESPACES,
    root_ports=1,
)
#: The hot-added controller's own namespace (its own subsystem: no ``subsys=``).
HOT_SERIAL = "SNHOT"
HOT_NAMESPACE = NamespaceSpec(1, 64, "ext4", "nshot")


@dataclass(frozen=True)
class Step:
    """One recorded step: its number and slug make the capture's file name."""

    number: int
    slug: str
    what: str

    @property
    def filename(self) -> str:
        return f"{self.number:02d}-{self.slug}.udev-monitor.txt"


@dataclass(frozen=True)
class CaptureSet:
    """A capture directory (tests/fixtures/captures/<directory>/<mode>/): its steps, the
    state snapshots recorded with them, and the words of its README."""

    directory: str
    title: str
    shape: Shape
    module: str
    setup: str
    steps: tuple[Step, ...]
    states: tuple[tuple[str, str], ...] = ()

    def step(self, slug: str) -> Step:
        return next(s for s in self.steps if s.slug == slug)

    def files(self) -> list[tuple[str, str]]:
        """(file name, what it holds) for one mode's folder, in order."""
        return [(name, what) for name, what in self.states] + [
            (s.filename, s.what) for s in self.steps
        ]


EXPORT_DB = (
    "state-00-udev-export-db.txt",
    "`udevadm info --export-db`, NVMe devices only, before step 01",
)

TCP = CaptureSet(
    directory="tcp",
    title="NVMe/TCP: an nvmet target on the guest's loopback",
    shape=SINGLE,
    module="tests/e2e/test_e2e_tcp.py",
    setup=(
        "The single-controller guest (QEMU PCI controller `nvme0`, ns1 attached) loads "
        "`nvmet`, `nvmet-tcp` and `nvme-tcp` and exports subsystem `nqn.2014-08.org."
        "nvmexpress:nvme-agent-e2e-tcp` on 127.0.0.1 ports 4420 and 4421: namespace 1 "
        "(64 MiB file, ext4 `nstcp1`, 4 KiB blocks) enabled, namespace 2 (ext4 `nstcp2`) "
        "disabled, both with a device_uuid and device_nguid. Controllers connect with "
        "`--ctrl-loss-tmo=2 --reconnect-delay=1`."
    ),
    steps=(
        Step(1, "connect-path1", "`nvme connect` to port 4420: a fabrics controller "
             "(`/devices/virtual/nvme-fabrics/ctl/nvmeN`), its subsystem and namespace 1"),
        Step(2, "enable-ns2", "namespace 2 enabled on the target: the AEN, the rescan, "
             "namespace 2 appears"),
        Step(3, "disable-ns2", "namespace 2 disabled on the target while mounted: it goes"),
        Step(4, "connect-path2", "a second `nvme connect`, to port 4421: a second controller "
             "(path) to the same subsystem"),
        Step(5, "lose-path", "the target stops exporting the subsystem on one port: that "
             "controller reconnects, gives up after ctrl-loss-tmo and is removed (native "
             "multipath: the first path; without it: the path not carrying the mount)"),
        Step(6, "eject-ns1", "`nvme-agent eject` of namespace 1 (no uevents: the agent "
             "unmounts)"),
        Step(7, "disconnect", "`nvme disconnect -n NQN`: the remaining controller, the "
             "subsystem and namespace 1 go"),
        Step(8, "gated-connect", "`nvme connect` to port 4430, a TCP gate in front of 4420 "
             "that holds the admin queue: while the controller is `connecting` (its "
             "attributes read `(efault)`) ns3 of the PCI controller is attached and detached "
             "as a marker that the agent has read the controller's add, then the gate opens"),
    ),
    states=(
        EXPORT_DB,
        ("state-08-ctrl-attributes-while-connecting.txt",
         "sysfs attributes of the gated controller read right after its udev `add` (step 08)"),
    ),
)  # fmt: skip

TWO_CONTROLLERS = CaptureSet(
    directory="two-controllers",
    title="Two QEMU controllers on one NVMe subsystem",
    shape=DUAL,
    module="tests/e2e/test_e2e_dual.py",
    setup=(
        "q35 guest with two `nvme` controllers (`ctrl0` slot 4, `ctrl1` slot 5, serial "
        "`RIGCTRL0`) on one `nvme-subsys` (`nvme-rig-subsys0`): cntlid 0 and 1. ns1 (ext4 "
        "`nsext4`) is attached to both at boot; ns2 (ext4 `nsdual`), ns3 (ext4 `nsclone`, "
        "the same filesystem UUID as ns1, as a cloned image has) and ns4 (blank) are "
        "`detached=on`. Steps run `nvme attach-ns|detach-ns /dev/nvmeX -n N -c CNTLID` "
        "in the guest, one controller at a time."
    ),
    steps=(
        Step(1, "attach-ns2-ctrl0", "namespace 2 attached to cntlid 0"),
        Step(2, "attach-ns2-ctrl1", "namespace 2 attached to cntlid 1 too: a second path "
             "(native multipath: only the hidden `nvmeXcYnZ`, no uevent)"),
        Step(3, "detach-ns2-one-path", "namespace 2 detached from one controller only (the "
             "one whose device does not carry the mount; cntlid 1 with native multipath)"),
        Step(4, "detach-ns2-last-path", "namespace 2 detached from the other controller: "
             "its last path"),
        Step(5, "attach-clone-ns3", "namespace 3, a clone of ns1's filesystem, attached to "
             "cntlid 0"),
        Step(6, "detach-clone-ns3", "namespace 3 detached"),
    ),
    states=(EXPORT_DB,),
)  # fmt: skip

PCIE_HOTPLUG = CaptureSet(
    directory="pcie-hotplug",
    title="PCIe hot-add and hot-remove of a whole NVMe controller",
    shape=DUAL,
    module="tests/e2e/test_e2e_dual.py",
    setup=(
        "The two-controller q35 guest has an empty `pcie-root-port` (`rp1`). Over QMP: "
        "`blockdev-add` of a raw file (64 MiB, ext4 `nshot`) and `device_add nvme,bus=rp1,"
        "serial=SNHOT,drive=...`: a controller with its own subsystem and namespace 1 (a "
        "private namespace: a plain disk under the controller even with native multipath); "
        "`device_del` removes it (the capture ends after QEMU's DEVICE_DELETED)."
    ),
    steps=(
        Step(1, "hot-add-controller", "`device_add` of the controller"),
        Step(2, "eject", "`nvme-agent eject /dev/nvmeXn1` (no uevents: the agent unmounts)"),
        Step(3, "hot-remove-after-eject", "`device_del` after the eject"),
        Step(4, "hot-add-controller-again", "`device_add` of the same controller again"),
        Step(5, "surprise-remove-under-mount", "`device_del` while its filesystem is mounted "
             "and was written to"),
    ),
    states=(EXPORT_DB,),
)  # fmt: skip

CAPTURE_SETS: tuple[CaptureSet, ...] = (TCP, TWO_CONTROLLERS, PCIE_HOTPLUG)


def readme(capture_set: CaptureSet, kernel: str, qemu: str) -> str:
    """The README of ``capture_set``'s directory: one line per file and mode."""
    cs = capture_set
    lines = [
        f"# {cs.title}",
        "",
        f"Recorded by the real-guest suite (`{cs.module}`) in a Debian 12 guest, kernel "
        f"`{kernel}`, QEMU {qemu}: `udevadm monitor --kernel --udev --property` around each "
        "step (header: the command, its monotonic start and return; the capture ends after "
        "the events the step waits for, udev's queue drained and a marker event).",
        "",
        cs.setup,
        "",
        "`multipath/` is the kernel default (`nvme_core.multipath=Y`), `no-multipath/` was "
        "booted with `nvme_core.multipath=N`. Re-record (as root, one guest at a time):",
        "",
        "```sh",
        "NVME_AGENT_E2E_CAPTURES_OUT=$PWD/tests/fixtures/captures \\",
        f"  flock /tmp/nvme-agent-e2e.lock .venv/bin/python -m pytest -m e2e {cs.module}",
        "```",
        "",
    ]
    for mode in MODES:
        for name, what in cs.files():
            lines.append(f"- `{mode}/{name}`: {what} (kernel `{kernel}`)")
    return "\n".join(lines) + "\n"
