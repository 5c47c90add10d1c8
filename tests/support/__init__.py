"""Helpers shared by the tests (not collected: no ``test_`` modules here).

``actions`` (loop devices with real filesystems, FIFO gates, result collectors), ``daemon``
(the real daemon in a bed, with predicates on its event stream), ``policy`` (value-object
factories for pure policy tests), ``packaging`` (unit-file and package checks), ``listener``
(a pyudev listener run as a child inside the bed) and ``bedlisten`` (its client).
"""
