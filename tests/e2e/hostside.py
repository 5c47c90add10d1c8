"""The pluggable step that makes a namespace appear or disappear in the guest.

* :class:`AttachDetach` (default): every namespace exists in QEMU from boot, the detached ones
  with ``detached=on``; ``nvme attach-ns`` / ``detach-ns`` run inside the guest.  QEMU answers
  with the Namespace-Attribute-Changed AEN, so the guest kernel rescans exactly as after a
  hotplug.  Works with Debian 12's QEMU 7.2.
* :class:`QmpHotplug`: only the namespaces attached at boot exist; ``device_add`` /
  ``device_del`` of ``nvme-ns`` over QMP add and remove the others.  Needs a QEMU with nvme-ns
  hotplug (7.2 refuses: "Bus 'subsys0' does not support hotplugging").

Choose with ``$NVME_AGENT_E2E_HOSTSTEP`` = ``attach-detach`` | ``qmp-hotplug``.
"""

from __future__ import annotations

import os
from typing import Protocol

from .vm import Vm, VmConfig


class HostStep(Protocol):
    """Hot-add / hot-remove a namespace of the running guest."""

    name: str

    def configure(self, config: VmConfig) -> None:
        """Adjust the VM configuration before boot (which nvme-ns devices exist)."""

    def attach(self, vm: Vm, nsid: int) -> None:
        """Make namespace ``nsid`` appear in the guest."""

    def detach(self, vm: Vm, nsid: int) -> None:
        """Make namespace ``nsid`` disappear from the guest."""


class AttachDetach:
    """NVMe Namespace Attachment from inside the guest (nvme-cli), controller 0."""

    name = "attach-detach"

    def configure(self, config: VmConfig) -> None:
        """All namespaces exist at boot; the detached ones carry ``detached=on``."""
        config.devices_at_boot = None

    def attach(self, vm: Vm, nsid: int) -> None:
        """``nvme attach-ns /dev/nvme0 -n NSID -c 0`` in the guest."""
        vm.qga.exec(["nvme", "attach-ns", "/dev/nvme0", "-n", str(nsid), "-c", "0"], check=True)

    def detach(self, vm: Vm, nsid: int) -> None:
        """``nvme detach-ns /dev/nvme0 -n NSID -c 0`` in the guest."""
        vm.qga.exec(["nvme", "detach-ns", "/dev/nvme0", "-n", str(nsid), "-c", "0"], check=True)


class QmpHotplug:
    """``device_add`` / ``device_del`` of ``nvme-ns`` devices over QMP."""

    name = "qmp-hotplug"

    def configure(self, config: VmConfig) -> None:
        """Only namespaces attached at boot get a device; the others just a drive."""
        config.devices_at_boot = frozenset(ns.nsid for ns in config.namespaces if ns.attached)

    def attach(self, vm: Vm, nsid: int) -> None:
        """Plug ``nvme-ns`` NSID into the subsystem (drive ``nsdrvNSID`` exists from boot)."""
        vm.qmp().execute(
            "device_add",
            {"driver": "nvme-ns", "id": f"ns{nsid}", "drive": f"nsdrv{nsid}", "nsid": nsid},
        )

    def detach(self, vm: Vm, nsid: int) -> None:
        """Unplug device ``nsNSID``."""
        vm.qmp().execute("device_del", {"id": f"ns{nsid}"})


STEPS: dict[str, type[AttachDetach] | type[QmpHotplug]] = {
    AttachDetach.name: AttachDetach,
    QmpHotplug.name: QmpHotplug,
}


def from_env() -> HostStep:
    """The host step named by ``$NVME_AGENT_E2E_HOSTSTEP`` (default attach-detach)."""
    name = os.environ.get("NVME_AGENT_E2E_HOSTSTEP", AttachDetach.name)
    try:
        return STEPS[name]()
    except KeyError:
        raise ValueError(
            f"NVME_AGENT_E2E_HOSTSTEP={name!r}: expected one of {sorted(STEPS)}"
        ) from None
