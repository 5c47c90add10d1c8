"""NVMe/TCP in the guest: an nvmet target on loopback, two paths, the loss of one, disconnect.

One scenario per multipath mode runs in the single-controller guest (the `tcp` fixture: the
steps of shapes.TCP, recorded with their udev captures); the tests assert on what it
recorded.  Issue 12.2 (a connecting fabrics controller announced with ``(efault)``
placeholders, then removed and added again) and issue 12.3 (one namespace behind two
controllers is one namespace with two paths, in both multipath modes) are asserted plainly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nvme_agent.outputs.journal import MSG_EJECTED
from nvme_agent.topology.changes import ChangeType

from . import agentctl, compare_fresh
from .agentctl import MOUNT_ROOT
from .guest import PROBE, Guest
from .guestimage import GuestImage
from .recorder import Marker, Recorder, StepResult
from .shapes import TCP
from .vm import GUEST_SUBSYS_NQN

NQN = "nqn.2014-08.org.nvmexpress:nvme-agent-e2e-tcp"
NVMET = "/sys/kernel/config/nvmet"
SUBSYS = f"{NVMET}/subsystems/{NQN}"
FILES = "/var/lib/nvme-agent-e2e/nvmet"
#: port number in configfs -> TCP port
PORTS = {1: 4420, 2: 4421}
GATE_PORT = 4430
GATE_FIFO = "/run/e2e-tcp-gate-release"
GATE_UNIT = "e2e-tcp-gate"
#: A lost path is given up after 2 s of failed reconnects (the default is 600 s).
CONNECT_OPTS = ("--ctrl-loss-tmo=2", "--reconnect-delay=1")
#: The single-controller guest's blank namespace: the agent barrier's marker.
MARKER_NSID = 3
MOUNT1, MOUNT2 = f"{MOUNT_ROOT}/nstcp1", f"{MOUNT_ROOT}/nstcp2"


@dataclass(frozen=True)
class TargetNs:
    nsid: int
    label: str
    uuid: str
    nguid: str
    enabled: bool


def _target_ns(nsid: int, enabled: bool) -> TargetNs:
    uuid = f"5b1c5a1e-7c90-4e2e-8a00-{nsid:012x}"
    return TargetNs(nsid, f"nstcp{nsid}", uuid, uuid.replace("-", ""), enabled)


#: device_uuid and device_nguid set on the target: real identities, unlike QEMU's.
TARGET_NAMESPACES = (_target_ns(1, True), _target_ns(2, False))


def _target_script() -> str:
    """configfs: the subsystem, its file-backed namespaces (ext4 with 4 KiB blocks: nvmet
    exposes 4096-byte logical blocks for files), ports 4420 and 4421 exporting it."""
    lines = [
        "set -e",
        "modprobe nvmet",
        "modprobe nvmet-tcp",
        "modprobe nvme-tcp",
        f"mkdir -p {FILES}",
        f"mkdir {SUBSYS}",
        f"echo 1 > {SUBSYS}/attr_allow_any_host",
    ]
    for ns in TARGET_NAMESPACES:
        img, d = f"{FILES}/ns{ns.nsid}.img", f"{SUBSYS}/namespaces/{ns.nsid}"
        lines += [
            f"truncate -s 64M {img}",
            f"mkfs.ext4 -q -F -b 4096 -L {ns.label} {img}",
            f"mkdir {d}",
            f"echo {img} > {d}/device_path",
            f"echo {ns.uuid} > {d}/device_uuid",
            f"echo {ns.nguid} > {d}/device_nguid",
            f"echo {int(ns.enabled)} > {d}/enable",
        ]
    for port, tcp in PORTS.items():
        p = f"{NVMET}/ports/{port}"
        lines += [
            f"mkdir {p}",
            f"echo tcp > {p}/addr_trtype",
            f"echo ipv4 > {p}/addr_adrfam",
            f"echo 127.0.0.1 > {p}/addr_traddr",
            f"echo {tcp} > {p}/addr_trsvcid",
            f"ln -s {SUBSYS} {p}/subsystems/{NQN}",
        ]
    return "\n".join(lines) + "\n"


TEARDOWN = f"""
systemctl stop {GATE_UNIT} 2>/dev/null
nvme disconnect -n {NQN} >/dev/null 2>&1
udevadm settle
for l in {NVMET}/ports/*/subsystems/*; do [ -L "$l" ] && rm "$l"; done
for d in {NVMET}/ports/*; do [ -d "$d" ] && rmdir "$d"; done
for d in {SUBSYS}/namespaces/*; do [ -d "$d" ] && rmdir "$d"; done
[ -d {SUBSYS} ] && rmdir {SUBSYS}
rm -rf {FILES} {GATE_FIFO}
true
"""


def _link(port: int) -> str:
    return f"{NVMET}/ports/{port}/subsystems/{NQN}"


def _connect(port: int) -> list[str]:
    return ["nvme", "connect", "-t", "tcp", "-a", "127.0.0.1", "-s", str(port), "-n", NQN,
            *CONNECT_OPTS]  # fmt: skip


@dataclass
class TcpRun:
    """What the scenario recorded in one guest."""

    g: Guest
    rec: Recorder
    #: controller name -> TCP port, as connected (gated: the gate's port)
    ctrls: dict[str, int] = field(default_factory=dict)
    #: controller name -> sysfs serial once live
    serials: dict[str, str] = field(default_factory=dict)
    #: the two path controllers (ports 4420, 4421), the one lost, the one that remained
    paths: list[str] = field(default_factory=list)
    lost: str = ""
    remaining: str = ""
    write_after_loss: int | None = None
    gated: dict[str, Any] = field(default_factory=dict)

    def step(self, slug: str) -> StepResult:
        return self.rec.results[slug]

    @property
    def multipath(self) -> bool:
        return self.g.multipath


def _tcp_controllers(g: Guest) -> dict[str, tuple[int, str]]:
    """Fabrics controllers of our subsystem now: name -> (TCP port, serial)."""
    out = g.sh(
        "for c in /sys/class/nvme/nvme*; do "
        'echo "${c##*/} $(cat $c/subsysnqn) $(cat $c/address) $(cat $c/serial)"; done'
    ).stdout
    found = {}
    for line in out.splitlines():
        name, nqn, address, serial = [*line.split(), "", "", ""][:4]
        if nqn == NQN and "trsvcid=" in address:
            port = int(address.split("trsvcid=")[1].split(",")[0])
            found[name] = (port, serial)
    return found


def _new_ctrl(run: TcpRun, port: int) -> str:
    now = _tcp_controllers(run.g)
    new = [name for name in now if name not in run.ctrls]
    assert len(new) == 1, f"expected one new controller on port {port}: {now} (had {run.ctrls})"
    run.ctrls[new[0]] = port
    run.serials[new[0]] = now[new[0]][1]
    return new[0]


def _mount_device(step: StepResult) -> str | None:
    mounts = step.after.mounted(MOUNT1)
    return mounts[0].source if len(mounts) == 1 else None


def _lost_path(run: TcpRun) -> str:
    """The path to lose: the first one; without native multipath the one whose device does
    not carry the mount (a lost non-multipath device takes its mount with it)."""
    first, second = run.paths
    if run.multipath:
        return first
    device = _mount_device(run.step("connect-path2")) or ""
    return second if device.startswith(f"/dev/{first}n") else first


def _scenario(run: TcpRun) -> None:
    rec, g = run.rec, run.g
    rec.run("connect-path1", _connect(PORTS[1]), until=["add,nvme", "add,block,disk,ID_NSID=1"])
    run.paths.append(_new_ctrl(run, PORTS[1]))
    rec.run("enable-ns2", ["sh", "-c", f"echo 1 > {SUBSYS}/namespaces/2/enable"],
            until=["add,block,disk,ID_NSID=2"])  # fmt: skip
    rec.run("disable-ns2", ["sh", "-c", f"echo 0 > {SUBSYS}/namespaces/2/enable"],
            until=["remove,block,disk"])  # fmt: skip
    path2 = ["add,nvme"] + ([] if run.multipath else ["add,block,disk,ID_NSID=1"])
    rec.run("connect-path2", _connect(PORTS[2]), until=path2)
    run.paths.append(_new_ctrl(run, PORTS[2]))
    run.lost = _lost_path(run)
    run.remaining = next(c for c in run.paths if c != run.lost)
    lose = ["remove,nvme"] + ([] if run.multipath else ["remove,block,disk"])
    port = next(p for p, tcp in PORTS.items() if tcp == run.ctrls[run.lost])
    rec.run("lose-path", ["rm", _link(port)], until=lose)
    # I/O goes on through the remaining path: a synchronous write to the mount succeeds.
    res = g.sh(f"echo after-loss > {MOUNT1}/probe && sync -f {MOUNT1}/probe", check=False)
    run.write_after_loss = res.exitcode
    device = _mount_device(run.step("lose-path")) or f"/dev/{run.lost}n1"
    rec.run("eject-ns1", ["nvme-agent", "eject", device])
    rec.run("disconnect", ["nvme", "disconnect", "-n", NQN],
            until=["remove,nvme", "remove,block,disk"])  # fmt: skip
    run.ctrls.clear()
    _gated_connect(run)


def _gated_connect(run: TcpRun) -> None:
    g = run.g
    g.sh(f"[ -e {_link(1)} ] || ln -s {SUBSYS} {_link(1)}")
    g.sh(f"rm -f {GATE_FIFO} && mkfifo {GATE_FIFO}")
    g.sh(
        f"systemd-run --unit={GATE_UNIT} -p Type=notify python3 {PROBE} tcp-gate "
        f"--listen {GATE_PORT} --target {PORTS[1]} --release {GATE_FIFO}"
    )
    marker = json.dumps(run.rec.marker.steps())
    cmd = ["python3", PROBE, "gated-connect", "--release", GATE_FIFO, "--marker", marker,
           "--", *_connect(GATE_PORT)]  # fmt: skip
    step = run.rec.run("gated-connect", cmd, until=["add,block,disk,ID_NSID=1"])
    run.gated = json.loads(step.probe["stdout"])
    attrs = run.gated.get("while_connecting", {})
    run.rec.state(
        "state-08-ctrl-attributes-while-connecting.txt",
        "".join(f"{k}={v}\n" for k, v in attrs.items()),
    )
    _new_ctrl(run, GATE_PORT)


@pytest.fixture(scope="module")
def tcp(
    guest: Guest, captures_out: Path, guest_image: GuestImage, timings: dict[str, object]
) -> Iterator[TcpRun]:
    """The NVMe/TCP scenario, run once per multipath mode in the single-controller guest."""
    g = guest
    g.ensure_running()
    agentctl.stop(g)
    g.sh(TEARDOWN, check=False)
    g.reset()
    g.sh(_target_script(), timeout=300)
    agentctl.start(g)
    rec = Recorder(g, TCP, Marker("/dev/nvme0", MARKER_NSID, 0, GUEST_SUBSYS_NQN), captures_out)
    rec.export_db()
    run = TcpRun(g, rec)
    try:
        _scenario(run)
        yield run
    finally:
        g.sh(TEARDOWN, check=False, timeout=180)
        qemu = g.vm.qmp().execute("query-version")["qemu"]
        rec.finish(guest_image.kernel_version, f"{qemu['major']}.{qemu['minor']}")
        timings[f"tcp:{g.mode}:steps_s"] = rec.timings()


def _log(step: StepResult) -> str:
    return f"step {step.step.filename}:\n{step.journal_text()}"


def test_tcp_connect_mounts_namespace_with_its_real_identity(tcp: TcpRun) -> None:
    s = tcp.step("connect-path1")
    assert s.probe["rc"] == 0, s.probe
    added = s.changes(ChangeType.NAMESPACE_ADDED, NVME_SUBSYSNQN=NQN)
    assert [e["NVME_NSID"] for e in added] == ["1"], _log(s)
    ns = TARGET_NAMESPACES[0]
    entry = added[0]
    assert entry["NVME_IDENTITY"] == f"uuid:{ns.uuid}", _log(s)
    assert entry["NVME_IDENTITY_WEAK"] == "0"
    assert entry["NVME_NS_UUID"] == ns.uuid
    assert entry["NVME_NGUID"].replace("-", "") == ns.nguid
    assert (entry["ID_FS_TYPE"], entry["ID_FS_LABEL"]) == ("ext4", ns.label)
    (mount,) = s.after.mounted(MOUNT1)
    assert (mount.source, mount.fstype) == (entry["DEVNAME"], "ext4")
    (status,) = s.after.namespaces(NQN, 1)
    assert status["transport"] == "tcp" and status["identity_weak"] is False


def test_tcp_namespace_enable_and_disable_on_the_target(tcp: TcpRun) -> None:
    enabled, disabled = tcp.step("enable-ns2"), tcp.step("disable-ns2")
    added = enabled.changes(ChangeType.NAMESPACE_ADDED, NVME_SUBSYSNQN=NQN)
    assert [e["NVME_NSID"] for e in added] == ["2"], _log(enabled)
    assert len(enabled.after.mounted(MOUNT2)) == 1
    removed = disabled.changes(ChangeType.NAMESPACE_REMOVED, NVME_SUBSYSNQN=NQN)
    assert [e["NVME_NSID"] for e in removed] == ["2"], _log(disabled)
    assert disabled.after.mounted(MOUNT2) == []
    # Namespace 1 is not touched by either: the same mount throughout.
    assert disabled.after.mounted(MOUNT1) == tcp.step("connect-path1").after.mounted(MOUNT1)


def test_tcp_second_path_adds_no_namespace_and_no_mount(tcp: TcpRun) -> None:
    s = tcp.step("connect-path2")
    assert s.probe["rc"] == 0, s.probe
    assert s.changes(ChangeType.CONTROLLER_ADDED, NVME_SUBSYSNQN=NQN), _log(s)
    assert s.changes(ChangeType.NAMESPACE_ADDED) == [], _log(s)
    assert s.changes(ChangeType.NAMESPACE_REMOVED) == [], _log(s)
    # The same mount (same mount ID and device), not a new one.
    assert s.after.mounted(MOUNT1) == s.before.mounted(MOUNT1) != [], _log(s)


def test_tcp_namespace_lists_its_paths(tcp: TcpRun) -> None:
    """With two paths: one namespace, reachable through both controllers (and, without
    native multipath, both block devices named); after the loss of one: the other only."""
    both = tcp.step("connect-path2").after.namespaces(NQN, 1)
    assert len(both) == 1, both
    assert sorted(both[0]["controllers"]) == sorted(tcp.paths), both
    if not tcp.multipath:
        text = json.dumps(both[0])
        assert all(f"/dev/{c}n1" in text for c in tcp.paths), both
    one = tcp.step("lose-path").after.namespaces(NQN, 1)
    assert len(one) == 1 and one[0]["controllers"] == [tcp.remaining], one


def test_tcp_losing_one_path_keeps_namespace_and_mount(tcp: TcpRun) -> None:
    s = tcp.step("lose-path")
    removed = s.changes(ChangeType.CONTROLLER_REMOVED)
    assert [e["NVME_CTRL"] for e in removed] == [tcp.lost], _log(s)
    assert s.changes(ChangeType.NAMESPACE_REMOVED) == [], _log(s)
    assert len(s.after.namespaces(NQN, 1)) == 1
    assert s.after.mounted(MOUNT1) == s.before.mounted(MOUNT1) != [], _log(s)
    assert tcp.write_after_loss == 0, "a synchronous write after the loss of one path failed"


def test_tcp_eject_then_disconnect(tcp: TcpRun) -> None:
    ejected, gone = tcp.step("eject-ns1"), tcp.step("disconnect")
    assert ejected.probe["rc"] == 0, ejected.probe
    assert ejected.after.mounted(MOUNT1) == []
    assert any(e.get("MESSAGE_ID") == MSG_EJECTED for e in ejected.entries), _log(ejected)
    removed = gone.changes(ChangeType.NAMESPACE_REMOVED, NVME_SUBSYSNQN=NQN)
    assert [e["NVME_NSID"] for e in removed] == ["1"], _log(gone)
    ctrls = [e["NVME_CTRL"] for e in gone.changes(ChangeType.CONTROLLER_REMOVED)]
    assert ctrls == [tcp.remaining], _log(gone)
    assert gone.after.namespaces(NQN) == []
    assert [c for c in gone.after.controllers() if c.get("subsysnqn") == NQN] == []


def test_tcp_gate_holds_the_controller_connecting(tcp: TcpRun) -> None:
    """The premise of the next test: while the gate holds the admin queue, udev has announced
    the controller and its attributes are placeholders (kernel behaviour, not the agent's)."""
    attrs = tcp.gated.get("while_connecting", {})
    assert attrs.get("state") == "connecting", tcp.gated
    assert attrs.get("serial") == "(efault)", tcp.gated
    assert tcp.gated["marker"]["ok"], tcp.gated
    assert tcp.gated["rc"] == 0, tcp.gated


def test_tcp_controller_is_announced_once_with_real_values(tcp: TcpRun) -> None:
    for slug in ("connect-path1", "connect-path2", "gated-connect"):
        s = tcp.step(slug)
        assert not any("(efault)" in json.dumps(e) for e in s.entries), _log(s)
        added = s.changes(ChangeType.CONTROLLER_ADDED)
        assert len(added) == 1, _log(s)
        name = added[0]["NVME_CTRL"]
        assert added[0].get("NVME_SERIAL") == tcp.serials.get(name), _log(s)
        assert added[0].get("NVME_SUBSYSNQN") == NQN, _log(s)
        assert s.changes(ChangeType.CONTROLLER_REMOVED) == [], _log(s)


def test_tcp_captures_match_the_stored_ones(tcp: TcpRun) -> None:
    problems = compare_fresh.against_stored(TCP, tcp.g.mode, tcp.rec.outdir)
    assert not problems, "\n".join(problems)
