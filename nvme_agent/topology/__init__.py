"""Stage 1 of the pipeline: udev records in, typed topology changes out.

``records`` (what udev says), ``model`` and ``changes`` (immutable value objects), ``names``
(kernel device names and devpaths), ``build`` (value objects from records), ``tracker`` (the
one mutable model: records -> changes), ``diff`` (the changes between two snapshots),
``intake`` (the pyudev monitor and coldplug enumeration), ``capture`` and ``snapshot_io``
(reading captures and snapshots).
"""
