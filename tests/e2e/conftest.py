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

from . import agentctl, hostside
from .guest import Guest, Payload, Slot, build_payload
from .guestimage import GuestImage, ImageBuildError, ensure_image
from .shapes import DUAL, MODES, SINGLE, Shape

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


@pytest.fixture(scope="session")
def slot() -> Slot:
    """One guest at a time: booting one stops the other."""
    return Slot()


def _guest(
    shape: Shape,
    mode: str,
    guest_image: GuestImage,
    payload: Payload,
    workroot: Path,
    timings: dict[str, object],
    slot: Slot,
) -> Iterator[Guest]:
    g = Guest.boot(
        mode, guest_image, hostside.from_env(), payload, workroot / f"{shape.name}-{mode}",
        shape=shape, slot=slot,
    )  # fmt: skip
    timings[f"{g.name}:accel"] = g.vm.accel
    try:
        yield g
    finally:
        if os.environ.get("NVME_AGENT_E2E_KEEP"):
            log.warning("console log kept: %s", g.vm.console)
        slot.release(g)
        timings.update({f"{g.name}:{k}": v for k, v in g.timings.items()})


@pytest.fixture(scope="session", params=MODES)
def guest(
    request: pytest.FixtureRequest,
    guest_image: GuestImage,
    payload: Payload,
    workroot: Path,
    timings: dict[str, object],
    slot: Slot,
) -> Iterator[Guest]:
    """The single-controller guest (the capture rig) per multipath mode, shared by every
    test of that mode."""
    yield from _guest(SINGLE, request.param, guest_image, payload, workroot, timings, slot)


@pytest.fixture(scope="session", params=MODES)
def dual_guest(
    request: pytest.FixtureRequest,
    guest_image: GuestImage,
    payload: Payload,
    workroot: Path,
    timings: dict[str, object],
    slot: Slot,
) -> Iterator[Guest]:
    """The two-controller q35 guest with an empty PCIe root port, per multipath mode."""
    yield from _guest(DUAL, request.param, guest_image, payload, workroot, timings, slot)


@pytest.fixture(scope="session")
def captures_out(workroot: Path) -> Path:
    """Where fresh captures go: ``$NVME_AGENT_E2E_CAPTURES_OUT`` or the work directory (set
    it to tests/fixtures/captures to re-record the stored ones)."""
    return Path(os.environ.get("NVME_AGENT_E2E_CAPTURES_OUT", workroot / "captures"))


@pytest.fixture
def bare_guest(guest: Guest) -> Guest:
    """The guest without a running agent, in its boot layout (for kernel/udev-only tests)."""
    guest.ensure_running()
    if guest.agent_installed:
        guest.sh("systemctl stop nvme-agent")
    guest.reset()
    return guest


@pytest.fixture
def agent(guest: Guest) -> Guest:
    """The guest with the agent installed and (re)started on the e2e policy, boot layout."""
    guest.ensure_running()
    agentctl.stop(guest)
    guest.reset()
    agentctl.start(guest)
    return guest
