"""The process's heap around large bursts of allocation: loading a policy, coldplug (issue 13).

Three things, each measured on a daemon that knows a thousand namespaces:

* :func:`paused_collector`: no cyclic garbage collection while a bounded burst builds
  objects that live (a policy being loaded, the topology of a coldplug).  Such a burst sets
  off collections of every generation, and each full one walks the whole heap: 28-49 ms per
  reload, and about 0.1 s of a 1,000-namespace coldplug, spent finding nothing.
* :func:`release_free_memory`: ``malloc_trim(0)`` once coldplug is done.  CPython returns
  what coldplug built and dropped to glibc's malloc, which keeps the freed pages mapped; the
  daemon would idle for weeks at its coldplug's peak (66 -> 52 MiB after 1,000 namespaces).
* :func:`settle_after_start`: after coldplug, one collection, then ``gc.freeze()``: what the
  start built (imported code, the policy, the topology) moves out of the collector's sight,
  so later full collections walk only what was built since.  Frozen objects are still freed
  when their last reference goes; only garbage *cycles* among them would stay, and the
  policy and topology make none (``tests/test_heap.py``).  The collector and the freeze are
  the process's: only the program that is the daemon settles, never a library caller.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    For a bounded burst of objects that live (or go with their last reference): what it
    builds holds no cycles, so pausing finds nothing later.  The pause is the process's (the
    collector is global): other threads, the daemon's loop among them, collect again when
    the block ends, however it ends, unless the collector was off before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def release_free_memory() -> bool:
    """``malloc_trim(0)`` of the C library in this process; False where there is none (a libc
    without it, such as musl): the memory is then only kept, never wrong."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: its libc's
    except (OSError, AttributeError):
        log.debug("no malloc_trim in this C library: free heap pages stay mapped")
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def settle_after_start() -> None:
    """Once coldplug is done: collect what it left in cycles, freeze what lives, give the
    free heap back (see the module docstring)."""
    gc.collect()
    gc.freeze()
    release_free_memory()
