"""Shared fixtures: the fake-udev test bed (umockdev) for integration tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from nvme_agent.harness.bed import Bed, unavailable_reason


@pytest.fixture(autouse=True)
def switch_interval() -> Iterator[None]:
    """A test that runs ``nvme-agent run`` in this process (which sets the interpreter's
    thread switch interval, as the daemon's program) leaves the next test CPython's."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.fixture(scope="session")
def bed_support() -> None:
    """Skip (with the reason) when umockdev or Debian's python3-gi is missing."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"umockdev test bed unavailable: {reason}")


@pytest.fixture(params=[True, False], ids=["multipath", "no-multipath"])
def bed(request: pytest.FixtureRequest, bed_support: None) -> Iterator[Bed]:
    """A fresh fake guest per test, in both devpath layouts."""
    with Bed(multipath=request.param) as b:
        yield b


@pytest.fixture
def mp_bed(bed_support: None) -> Iterator[Bed]:
    """A fresh fake guest with native multipath (the kernel default)."""
    with Bed(multipath=True) as b:
        yield b
