"""Marks shared by test modules that run the real daemon in the umockdev bed as root."""

from __future__ import annotations

import os

import pytest

from nvme_agent.harness.bed import unavailable_reason


def bed_as_root(why_root: str = "real mounts need root") -> list[pytest.MarkDecorator]:
    """A module's ``pytestmark``: the umockdev bed (skipped where it cannot run, with its
    reason) and root (``why_root``: what needs it)."""
    return [
        pytest.mark.umockdev,
        pytest.mark.root,
        pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
        pytest.mark.skipif(os.geteuid() != 0, reason=why_root),
    ]
