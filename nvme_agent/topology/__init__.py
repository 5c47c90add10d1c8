"""Stage 1 of the pipeline: udev records in, typed topology changes out.

``records`` (what udev says), ``model`` and ``changes`` (immutable value objects),
``tracker`` (the one mutable model: records -> changes), ``intake`` (the pyudev monitor and
coldplug enumeration), ``capture`` and ``snapshot_io`` (reading captures and snapshots).
"""
