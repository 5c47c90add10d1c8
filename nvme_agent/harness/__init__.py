"""The fake-udev harness: a umockdev test bed, realistic NVMe device layouts, scenarios.

It fakes the kernel and the hardware, never the agent: events reach the daemon through the
real pyudev netlink monitor (redirected by umockdev's preload library), and enumeration,
attributes and parents come from a fake ``/sys`` tree.

* :mod:`.layout` models controllers (PCIe, fabrics), subsystems, namespaces and their paths;
  :mod:`.devices` has its vocabulary (devices, events, configurations), :mod:`.kernel` what
  the kernel shows for each device, :mod:`.udevrules` what udev's rules add on top.
* :mod:`.bedctl` is the bed controller program (runs under ``umockdev-wrapper``).
* :mod:`.bed` is the client side: :class:`~nvme_agent.harness.bed.Bed`.
* :mod:`.scenario` is the YAML scenario format: :mod:`.steps` says what each step kind does,
  :mod:`.scenario_parse` reads each kind (one parser per kind, on the policy's checker).
* :mod:`.simulate` runs the real daemon against a bed (:mod:`.expect` judges, :mod:`.real`
  backs namespaces with loop devices); :mod:`.replay` replays captures; :mod:`.timeline`
  prints stream records; :mod:`.agent` runs the daemon and follows its event stream.
"""
