"""The fake-udev harness: a umockdev test bed, realistic NVMe device layouts, scenarios.

It fakes the kernel and the hardware, never the agent: events reach the daemon through the
real pyudev netlink monitor (redirected by umockdev's preload library), and enumeration,
attributes and parents come from a fake ``/sys`` tree.

* :mod:`.layout` builds sysfs attributes and udev properties shaped on real captures.
* :mod:`.bedctl` is the bed controller program (runs under ``umockdev-wrapper``).
* :mod:`.bed` is the client side: :class:`~nvme_agent.harness.bed.Bed`.
* :mod:`.scenario` loads the YAML scenario format.
* :mod:`.simulate` runs the real daemon against a bed; :mod:`.replay` replays captures.
"""
