"""``udevadm monitor --udev --property`` text for harness events: captures of shapes no
stored capture has yet (NVMe/TCP connect and disconnect, two controllers, PCIe hotplug)."""

from __future__ import annotations

from collections.abc import Iterable

from nvme_agent.harness.layout import MINOR_BASE, Event

PREAMBLE = """\
monitor will print the received events for:
UDEV - the event which udev sends out after rule processing

"""


def monitor_text(events: Iterable[Event], command: str = "", seqnum: int = 1000) -> str:
    """The UDEV blocks a guest would print for ``events`` (silent devices print nothing).

    Device numbers are turned back into real-looking ones: replay makes its own fake ones.
    """
    out = [f"# {command}\n" if command else "", PREAMBLE]
    clock = 100.0
    for event in events:
        device = event.device
        if device.silent:
            continue
        seqnum += 1
        clock += 0.001
        props = dict(device.properties)
        if "MINOR" in props and props["MINOR"].isdigit():
            props["MINOR"] = str(int(props["MINOR"]) - MINOR_BASE)
        if device.devtype and "DEVTYPE" not in props:
            props["DEVTYPE"] = device.devtype
        out.append(
            f"UDEV  [{clock:.6f}] {event.action:<8} {device.devpath} ({device.subsystem})\n"
            f"ACTION={event.action}\nDEVPATH={device.devpath}\nSUBSYSTEM={device.subsystem}\n"
            f"SEQNUM={seqnum}\nUSEC_INITIALIZED={int(clock * 1e6)}\n"
            + "".join(f"{k}={v}\n" for k, v in props.items())
            + "\n"
        )
    return "".join(out)
