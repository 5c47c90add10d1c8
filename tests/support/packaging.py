"""Helpers for the unit-file and packaging tests: systemd tools against a temporary root.

``systemd-analyze verify`` needs every unit the checked unit refers to (sysinit.target,
systemd-udevd.service...) and its ExecStart= binary; this machine's systemd is installed but
not PID 1, so the tests assemble a root directory with a copy of the host's unit directory,
the unit under test and the binary, and pass ``--root``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT_NAME = "nvme-agent.service"
HOST_UNIT_DIR = Path("/usr/lib/systemd/system")


def require_tools(*tools: str) -> None:
    """Skip the test, naming the Debian package to install, when a tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools {missing} (make setup installs them)")


def require_root() -> None:
    """Skip unless running as root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to the nvme-agent group in a temporary root)")


def add_host_units(root: Path) -> None:
    """Copy the host's systemd units into ``root`` so dependencies resolve."""
    if not (HOST_UNIT_DIR / "sysinit.target").exists():
        pytest.skip(f"no systemd units in {HOST_UNIT_DIR}")
    dest = root / HOST_UNIT_DIR.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HOST_UNIT_DIR, dest, symlinks=True, dirs_exist_ok=True)


def systemd_analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``systemd-analyze ARGS --root=ROOT``, capturing output."""
    require_tools("systemd-analyze")
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verify_unit(root: Path, unit: str = UNIT_NAME) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit`` inside ``root`` (no man page lookups)."""
    return systemd_analyze(root, "verify", "--man=no", unit)
