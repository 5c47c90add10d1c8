"""Compare udev events recorded in a guest with the harness's synthetic ones.

The fake-udev harness (nvme_agent/harness/layout.py) is only useful while it looks like a real
guest.  For the operations in :data:`OPERATIONS` (from the boot layout, ns1 attached) this
builds the harness's events and reduces both sides to comparable shapes: per operation the
events (action, subsystem, DEVTYPE, devpath shape, PARTN), their order where udev guarantees
one, and the set of property keys of each event.  Values (SEQNUM, minors, DISKSEQ,
timestamps) are ignored.  Used by the e2e suite on fresh captures and by the fast suite on the
stored ones (tests/fixtures/captures).
"""

from __future__ import annotations

from collections import Counter

from nvme_agent.harness import layout as layout_mod

from .monitor import MonitorEvent, devpath_shape
from .vm import CTRL_SERIAL, DEFAULT_NAMESPACES, GPT_P1_LABEL, GPT_P1_PARTLABEL, GUEST_SUBSYS_NQN

#: The subsystems both sides describe (the harness has no ``nvme`` controller events here).
SUBSYSTEMS = {"block", "nvme-generic", "bdi"}
#: Keys the event itself carries (the harness keeps them out of Device.properties); udevd
#: stamps USEC_INITIALIZED on every event it processed.
EVENT_KEYS = {"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "USEC_INITIALIZED"}
#: The operations compared, from the boot layout (ns1 attached), like the shared captures.
OPERATIONS = (("attach", 2), ("attach", 4), ("detach", 4), ("detach", 2))

Key = tuple[str, str, str | None, str, str | None]
Reduced = list[tuple[Key, set[str]]]


def _key(action: str, subsystem: str, props: dict[str, str], devpath: str) -> Key:
    # Partitions share a devpath shape; their number tells them apart.
    return (action, subsystem, props.get("DEVTYPE"), devpath_shape(devpath), props.get("PARTN"))


def namespace_config(nsid: int) -> layout_mod.NamespaceConfig:
    """The harness's description of the guest's namespace ``nsid`` (see vm.py)."""
    spec = next(ns for ns in DEFAULT_NAMESPACES if ns.nsid == nsid)
    size = spec.size_mib * 2**20
    partitions: tuple[layout_mod.PartitionConfig, ...] = ()
    fs = spec.content if spec.content in ("ext4", "xfs") else None
    if spec.content == "gpt":
        half = size // 2
        partitions = (
            layout_mod.PartitionConfig(
                1, half, fs="ext4", label=GPT_P1_LABEL, partlabel=GPT_P1_PARTLABEL
            ),
            layout_mod.PartitionConfig(2, half - 2 * 2**20, partlabel="rig-blank"),
        )
    return layout_mod.NamespaceConfig(
        ctrl="nvme0", nsid=nsid, size_bytes=size, fs=fs, label=spec.label, partitions=partitions
    )


def _props(device: layout_mod.Device) -> dict[str, str]:
    props = dict(device.properties)
    if device.devtype:
        props.setdefault("DEVTYPE", device.devtype)
    return props


def synthetic(multipath: bool) -> list[Reduced]:
    """The harness's events for OPERATIONS, per operation: (key, property keys)."""
    layout = layout_mod.Layout(multipath=multipath)
    layout.add_controller(
        layout_mod.ControllerConfig(name="nvme0", serial=CTRL_SERIAL, subsysnqn=GUEST_SUBSYS_NQN)
    )
    for ns in DEFAULT_NAMESPACES:
        if ns.attached:
            layout.attach(namespace_config(ns.nsid))
    out = []
    for verb, nsid in OPERATIONS:
        events = (
            layout.attach(namespace_config(nsid))
            if verb == "attach"
            else layout.detach("nvme0", nsid)
        )
        out.append(
            [
                (
                    _key(e.action, e.device.subsystem, _props(e.device), e.device.devpath),
                    set(e.device.properties) | EVENT_KEYS,
                )
                for e in events
                if not e.device.silent and e.device.subsystem in SUBSYSTEMS
            ]
        )
    return out


def real(events: list[MonitorEvent]) -> Reduced:
    """Recorded UDEV events reduced like :func:`synthetic`."""
    return [
        (_key(e.action, e.subsystem, e.props, e.devpath), set(e.props))
        for e in events
        if e.source == "UDEV" and e.subsystem in SUBSYSTEMS
    ]


def _block_order(seq: Reduced) -> list[Key]:
    # udev serialises events of a disk and its partitions (parent/child devpaths), so that
    # order is guaranteed; sibling partitions, bdi and ngXnY are processed in parallel, so
    # partitions are compared as one group and bdi/ng only as members of the set.
    return [(*k[:4], None) for k, _ in seq if k[1] == "block"]


def differences(recorded: list[list[MonitorEvent]], multipath: bool, mode: str) -> list[str]:
    """What differs between ``recorded`` (one event list per operation of OPERATIONS) and the
    harness; empty when they agree."""
    expected = synthetic(multipath)
    problems: list[str] = []
    for (verb, nsid), rec, syn in zip(OPERATIONS, recorded, expected, strict=True):
        got = real(rec)
        op = f"{verb} ns{nsid} ({mode})"
        got_keys, syn_keys = Counter(k for k, _ in got), Counter(k for k, _ in syn)
        if got_keys != syn_keys:
            problems.append(
                f"{op}: events differ\n  real only: {sorted((got_keys - syn_keys).elements())}"
                f"\n  harness only: {sorted((syn_keys - got_keys).elements())}"
            )
            continue
        if _block_order(got) != _block_order(syn):
            problems.append(
                f"{op}: block event order\n  real: {_block_order(got)}"
                f"\n  harness: {_block_order(syn)}"
            )
        real_props = dict(got)
        for key, props in syn:
            missing, extra = real_props[key] - props, props - real_props[key]
            if missing or extra:
                problems.append(
                    f"{op} {key}: property keys\n  real only: {sorted(missing)}"
                    f"\n  harness only: {sorted(extra)}"
                )
    return problems
