"""nvme-agent: turn NVMe namespace hotplug udev events into policy-driven actions."""

__version__ = "0.1.0"
