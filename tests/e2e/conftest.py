"""Fixtures of the end-to-end suite: the cached image, one booted guest per multipath mode.

The suite only runs when asked for (``-m e2e``, as ``make e2e`` does): it boots QEMU guests
and takes minutes, so a plain ``pytest`` run of the repository skips it with that reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import hostside
from .guest import MODES, Guest, Payload, build_payload
from .guestimage import GuestImage, ImageBuildError, ensure_image

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TOOLS = ("qemu-system-x86_64", "debootstrap", "mkfs.ext4", "mkfs.xfs", "sfdisk")
#: Timings measured during the run, printed at the end (``timings`` fixture).
TIMINGS_KEY = pytest.StashKey[dict[str, object]]()


def missing_prerequisites() -> str | None:
    """Why the suite cannot run here, or None."""
    if os.geteuid() != 0:
        return "e2e needs root (debootstrap, chroot, mkfs of image files)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"e2e needs {', '.join(missing)} (run `make e2e` to install E2E_APT_PACKAGES)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything here ``e2e``; skip it unless selected, or without the prerequisites."""
    selected = "e2e" in (config.option.markexpr or "")
    reason = missing_prerequisites()
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if not selected:
            item.add_marker(
                pytest.mark.skip(
                    reason="e2e boots QEMU guests (minutes): run `make e2e` or `pytest -m e2e`"
                )
            )
        elif reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_configure(config: pytest.Config) -> None:
    """A place for timings, shared by the fixtures and tests of this run."""
    config.stash[TIMINGS_KEY] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Print the measured timings (and write them to $NVME_AGENT_E2E_TIMINGS if set)."""
    found = session.config.stash.get(TIMINGS_KEY, {})
    if not found:
        return
    text = json.dumps(found, indent=1, sort_keys=True)
    log.warning("e2e timings: %s", text)
    out = os.environ.get("NVME_AGENT_E2E_TIMINGS")
    if out:
        Path(out).write_text(text + "\n")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("e2e timings: " + json.dumps(found, sort_keys=True))


@pytest.fixture(scope="session")
def timings(pytestconfig: pytest.Config) -> dict[str, object]:
    """Timings of this run: tests add their measurements here."""
    return pytestconfig.stash[TIMINGS_KEY]


@pytest.fixture(scope="session")
def guest_image(timings: dict[str, object]) -> GuestImage:
    """The cached guest image (built on first use; see guestimage.py)."""
    try:
        image = ensure_image()
    except ImageBuildError as exc:
        pytest.fail(f"guest image build failed: {exc}")
    timings["image_key"] = image.key
    timings["image_build_cold_s"] = image.manifest.get("build_seconds")
    if image.build_seconds is None:
        timings["image_cached"] = True
    return image


@pytest.fixture(scope="session")
def workroot() -> Iterator[Path]:
    """Scratch space for namespace files, sockets and payloads (removed afterwards)."""
    keep = os.environ.get("NVME_AGENT_E2E_KEEP")
    path = Path(tempfile.mkdtemp(prefix="nvme-agent-e2e-"))
    yield path
    if not keep:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def payload(workroot: Path) -> Payload:
    """The agent as a user gets it (.deb, or sources + unit until packaging exists)."""
    return build_payload(workroot / "payload")


@pytest.fixture(scope="session", params=MODES)
def guest(
    request: pytest.FixtureRequest,
    guest_image: GuestImage,
    payload: Payload,
    workroot: Path,
    timings: dict[str, object],
) -> Iterator[Guest]:
    """One booted guest per multipath mode, shared by every test of that mode."""
    mode: str = request.param
    step = hostside.from_env()
    g = Guest.boot(mode, guest_image, step, payload, workroot / mode)
    timings[f"{mode}:accel"] = g.vm.accel
    timings.update({f"{mode}:{k}": v for k, v in g.timings.items()})
    try:
        yield g
    finally:
        timings.update({f"{mode}:{k}": v for k, v in g.timings.items()})
        if os.environ.get("NVME_AGENT_E2E_KEEP"):
            log.warning("console log kept: %s", g.vm.console)
        g.vm.stop()


@pytest.fixture
def bare_guest(guest: Guest) -> Guest:
    """The guest without a running agent, in its boot layout (for kernel/udev-only tests)."""
    if guest.agent_installed:
        guest.sh("systemctl stop nvme-agent")
    guest.reset()
    return guest
