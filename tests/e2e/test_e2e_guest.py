"""The guest itself: boot, guest agent, NVMe topology, attach/detach and udev (no agent)."""

from __future__ import annotations

import re

import pytest

from .guest import Guest
from .guestimage import GuestImage
from .vm import GUEST_SUBSYS_NQN, SPARE_NSID, VmError


def test_guest_boots_offline_with_its_kernel(bare_guest: Guest, guest_image: GuestImage) -> None:
    g = bare_guest
    assert g.sh("uname -r").stdout.strip() == guest_image.kernel_version
    # -nic none: nothing but loopback.
    assert g.sh("ls /sys/class/net").stdout.split() == ["lo"]
    mp = g.sh("cat /sys/module/nvme_core/parameters/multipath").stdout.strip()
    assert mp == ("Y" if g.multipath else "N")
    assert g.sh("cat /sys/class/nvme/nvme0/subsysnqn").stdout.strip() == GUEST_SUBSYS_NQN


def test_boot_layout_has_only_the_attached_namespace(bare_guest: Guest) -> None:
    attached = bare_guest.attached()
    assert sorted(attached) == [1]
    assert attached[1]["name"] == "nvme0n1"


def _shape(guest: Guest, name: str) -> str:
    if guest.multipath:
        return f"/devices/virtual/nvme-subsystem/nvme-subsys0/{name}"
    return f"/devices/pci0000:00/0000:00:04.0/nvme/nvme0/{name}"


def test_attach_detach_round_trip(bare_guest: Guest, timings: dict[str, object]) -> None:
    g = bare_guest
    latencies: dict[str, float] = {}
    # Attach order 2, 4, 3.  Block names are allocated in attach order, not by NSID; which
    # instance numbers are free depends on the boot's history (a namespace detached while
    # mounted keeps its instance until the dead mount goes), so only uniqueness is checked.
    names: dict[int, str] = {}
    for nsid in (2, 4, 3):
        result = g.attach(nsid)
        latencies[f"attach_ns{nsid}"] = result["latency"]
        names[nsid] = result["name"]
        assert re.fullmatch(r"nvme0n\d+", names[nsid])
        assert result["devpath"] == _shape(g, names[nsid])
    assert len(set(names.values())) == 3
    g.settle()
    attached = g.attached()
    assert sorted(attached) == [1, 2, 3, 4]
    assert {n: attached[n]["name"] for n in names} == names
    assert attached[4]["partitions"] == [f"{names[4]}p1", f"{names[4]}p2"]
    assert attached[3]["partitions"] == []
    for nsid in (4, 3, 2):
        result = g.detach(nsid)
        latencies[f"detach_ns{nsid}"] = result["latency"]
    g.settle()
    assert sorted(g.attached()) == [1]
    timings[f"{g.mode}:udev_latency_s"] = latencies


def test_namespace_contents_seen_by_udev(bare_guest: Guest) -> None:
    g = bare_guest
    g.attach(2)
    g.attach(4)
    g.settle()
    attached = g.attached()
    n1, n2, n4 = (attached[n]["name"] for n in (1, 2, 4))
    props = {}
    for name in (n1, n2, f"{n4}p1"):
        out = g.sh(f"udevadm info --query=property --name=/dev/{name}").stdout
        props[name] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert (props[n1]["ID_FS_TYPE"], props[n1]["ID_FS_LABEL"]) == ("ext4", "nsext4")
    assert (props[n2]["ID_FS_TYPE"], props[n2]["ID_FS_LABEL"]) == ("xfs", "nsxfs")
    assert props[f"{n4}p1"]["ID_FS_LABEL"] == "nspart1"
    assert props[f"{n4}p1"]["ID_PART_ENTRY_NAME"] == "rig-data"
    assert props[n2]["ID_NSID"] == "2"
    # QEMU's IDs carry the kernel's bogus-identifier quirk: wwid synthesised, no uuid/nguid.
    sysfs = f"/sys/class/block/{n2}"
    assert re.fullmatch(
        r"nvme\.1b36-[0-9a-f]+-[0-9a-f]+-00000002\n", g.sh(f"cat {sysfs}/wwid").stdout
    )
    assert g.sh(f"ls {sysfs}/uuid {sysfs}/nguid", check=False).exitcode != 0
    # The xfs filesystem really mounts (module from the root filesystem, not the initramfs).
    # nouuid: after the agent tests of this boot an earlier, detached instance of this same
    # filesystem may still be known to xfs (same UUID), which refuses a second mount.
    g.sh(f"mkdir -p /mnt/x && mount -o nouuid /dev/{n2} /mnt/x && test -w /mnt/x && umount /mnt/x")


def test_attaching_an_attached_namespace_fails(bare_guest: Guest) -> None:
    res = bare_guest.qga.exec(["nvme", "attach-ns", "/dev/nvme0", "-n", "1", "-c", "0"])
    assert res.exitcode != 0
    assert sorted(bare_guest.attached()) == [1]


def test_qmp_nvme_ns_hotplug(bare_guest: Guest) -> None:
    """Probe whether this QEMU hotplugs nvme-ns; if so, the guest sees it come and go."""
    g = bare_guest
    qmp = g.vm.qmp()
    version = qmp.execute("query-version")["qemu"]
    reply = qmp.request(
        "device_add",
        {
            "driver": "nvme-ns",
            "id": f"ns{SPARE_NSID}",
            "drive": f"nsdrv{SPARE_NSID}",
            "nsid": SPARE_NSID,
        },
    )
    if "error" in reply:
        desc = reply["error"]["desc"]
        assert "does not support hotplugging" in desc, desc
        pytest.skip(
            f"QEMU {version['major']}.{version['minor']} refuses nvme-ns hotplug ({desc}); "
            "the suite drives attach/detach instead (NVME_AGENT_E2E_HOSTSTEP=qmp-hotplug "
            "needs a QEMU with nvme-ns hotplug)"
        )
    try:
        g.sh("udevadm settle --timeout=30")
        assert SPARE_NSID in g.attached()
    finally:
        try:
            qmp.execute("device_del", {"id": f"ns{SPARE_NSID}"})
        except VmError as exc:
            pytest.fail(f"device_del after a successful device_add failed: {exc}")
    g.sh("udevadm settle --timeout=30")
    assert SPARE_NSID not in g.attached()
