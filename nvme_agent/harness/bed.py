"""The test bed client: starts the umockdev bed controller and drives it.

A :class:`Bed` owns one fake guest: a umockdev testbed (in the controller process
``umockdev-wrapper /usr/bin/python3 bedctl.py``) and the :class:`~.layout.Layout` that says
which devices exist.  Processes started with :meth:`Bed.env` see the fake ``/sys`` and
``/dev`` and receive the bed's uevents on their ``pyudev`` monitors::

    with Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SN0001"))
        daemon = subprocess.Popen([...], env=bed.env(os.environ))
        ...  # wait for readiness: events sent before the monitor is bound are lost
        bed.add_namespace(NamespaceConfig("nvme0", nsid=1, fs="ext4", label="data"))

Every event is sent by the controller's blocking sender: a listener that does not read
makes :meth:`apply` fail after ``timeout`` seconds instead of killing the bed.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from nvme_agent.harness.layout import (
    MINOR_BASE,
    ControllerConfig,
    Event,
    Layout,
    NamespaceConfig,
)

log = logging.getLogger(__name__)

PRELOAD = "libumockdev-preload.so.0"
WRAPPER = "umockdev-wrapper"
#: The interpreter for the controller: Debian's, which has python3-gi.
DEFAULT_PYTHON = "/usr/bin/python3"
PYTHON_ENV = "NVME_AGENT_BED_PYTHON"
#: Seconds a bed may take per device it writes before an answer counts as lost.
PER_DEVICE = 0.25


class BedError(RuntimeError):
    """The bed controller failed, or is not available on this machine."""


def bedctl_path() -> Path:
    """The controller script, next to this module (also in an installed package)."""
    return Path(__file__).with_name("bedctl.py")


def bed_python() -> str:
    return os.environ.get(PYTHON_ENV, DEFAULT_PYTHON)


def unavailable_reason() -> str | None:
    """Why a bed cannot start here (``None`` when it can)."""
    if shutil.which(WRAPPER) is None:
        return (
            f"{WRAPPER} not found: install the Debian packages umockdev, "
            "gir1.2-umockdev-1.0 and python3-gi"
        )
    python = bed_python()
    if not os.access(python, os.X_OK):
        return f"{python} not found (set {PYTHON_ENV} to a Python with python3-gi)"
    probe = subprocess.run(
        [python, "-c", "import gi; gi.require_version('UMockdev', '1.0')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"{python} cannot load gi's UMockdev 1.0: {probe.stderr.strip()[-200:]}"
    return None


class Bed:
    """A fake NVMe guest.  Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        multipath: bool = True,
        *,
        timeout: float = 20.0,
        minor_base: int = MINOR_BASE,
        python: str | None = None,
    ) -> None:
        self.layout = Layout(multipath=multipath, minor_base=minor_base)
        self.timeout = timeout
        self.python = python or bed_python()
        self.root: str | None = None
        self.remove_emits: bool | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._next_id = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Bed:
        """Start the controller (see :func:`unavailable_reason` for a friendly check first)."""
        if shutil.which(WRAPPER) is None:
            raise BedError(unavailable_reason() or f"{WRAPPER} not found")
        env = {k: v for k, v in os.environ.items() if k not in ("UMOCKDEV_DIR", "LD_PRELOAD")}
        # kept open for the bed's life, closed in stop()
        self._stderr = tempfile.TemporaryFile("w+", prefix="nvme-agent-bed-", encoding="utf-8")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [WRAPPER, self.python, str(bedctl_path())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            bufsize=1,
        )
        self._selector = selectors.DefaultSelector()
        assert self._proc.stdout is not None
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        hello = self._read(self.timeout)
        self.root = str(hello["root"])
        self.remove_emits = bool(self.request("probe")["remove_emits"])
        log.debug("bed %s started (umockdev remove_device emits: %s)", self.root, self.remove_emits)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(json.dumps({"id": -1, "op": "quit"}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            if self._selector is not None:
                self._selector.close()
            if self._stderr is not None:
                self._stderr.close()
            # The testbed's destructor removes its tree; make sure after a kill, too.
            if self.root and os.path.isdir(self.root):
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Bed:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def alive(self) -> bool:
        """Whether the controller still runs (a refused request leaves it serving)."""
        return self._proc is not None and self._proc.poll() is None

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that must live in the bed.

        Both variables are set explicitly: ``UMOCKDEV_DIR`` is set by the testbed with C
        ``setenv`` and a child started with a copied environment would silently see the
        real ``/sys`` and real netlink.
        """
        if self.root is None:
            raise BedError("bed not started")
        env = dict(base if base is not None else os.environ)
        preload = env.get("LD_PRELOAD", "")
        if PRELOAD not in preload.split(":"):
            env["LD_PRELOAD"] = f"{PRELOAD}:{preload}" if preload else PRELOAD
        env["UMOCKDEV_DIR"] = self.root
        return env

    # ----------------------------------------------------------------- protocol
    def stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        assert self._selector is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BedError(f"bed controller did not answer within {timeout}s")
            if self._selector.select(remaining):
                line = self._proc.stdout.readline()
                if not line:
                    code = self._proc.wait()
                    raise BedError(
                        f"bed controller exited with {code}: {self.stderr_tail().strip()}"
                    )
                try:
                    reply: dict[str, Any] = json.loads(line)
                except ValueError:
                    # umockdev's own assertions print to stdout, then abort the controller.
                    try:
                        status: int | str = self._proc.wait(timeout=10.0)
                    except subprocess.TimeoutExpired:
                        status = "still running"
                    raise BedError(
                        f"bed controller said {line.strip()!r} ({status}): "
                        f"{self.stderr_tail().strip()}"
                    ) from None
                return reply

    def request(
        self, op: str, timeout: float | None = None, *, work: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """Send one request and wait for its answer; raise :class:`BedError` on failure.

        ``timeout`` bounds each event send (a listener that does not read); the answer may
        take that plus :data:`PER_DEVICE` seconds for each of ``work`` devices to write
        (umockdev's preload makes every sysfs write slow on a loaded machine).
        """
        if self._proc is None or self._proc.stdin is None:
            raise BedError("bed not started")
        self._next_id += 1
        rid = self._next_id
        wait = self.timeout if timeout is None else timeout
        self._proc.stdin.write(json.dumps({"id": rid, "op": op, "timeout": wait, **fields}) + "\n")
        self._proc.stdin.flush()
        reply = self._read(wait + 5.0 + PER_DEVICE * work)
        if reply.get("id") != rid:
            raise BedError(f"bed controller answered {reply.get('id')} to request {rid}")
        if not reply.get("ok"):
            raise BedError(f"bed {op} failed: {reply.get('error')}")
        return reply

    def apply(self, events: Iterable[Event], *, quiet: bool = False) -> list[int]:
        """Materialise/remove/change devices and send their uevents, in order.

        ``quiet`` builds the tree without sending anything (coldplug before a daemon starts).
        Returns the SEQNUM of each event sent.
        """
        wire = [e.wire() for e in events]
        if not wire:
            return []
        reply = self.request("apply", events=wire, quiet=quiet, work=len(wire))
        return [int(s) for s in reply["seqnums"]]

    def listeners(self) -> list[str]:
        """The monitor sockets currently bound in the bed (one per pyudev Monitor)."""
        return [str(x) for x in self.request("listeners")["listeners"]]

    # ----------------------------------------------------------------- high level
    def add_controller(self, cfg: ControllerConfig, *, quiet: bool = False) -> list[Event]:
        """The controller appears; a connecting one (fabrics) stays at ``(efault)`` until
        :meth:`connect` (``quiet``: connected at once, as at boot)."""
        events = self.layout.add_controller(cfg)
        if quiet:
            events += self.layout.connect(cfg.name)
        self.apply(events, quiet=quiet)
        return events

    def connect(self, name: str) -> list[Event]:
        """A connecting controller goes live (``change`` with ``NVME_EVENT=connected``)."""
        events = self.layout.connect(name)
        self.apply(events)
        return events

    def remove_controller(self, name: str) -> list[Event]:
        events = self.layout.remove_controller(name)
        self.apply(events)
        return events

    def add_path(self, ctrl: str, nsid: int, *, quiet: bool = False) -> list[Event]:
        events = self.layout.add_path(ctrl, nsid)
        self.apply(events, quiet=quiet)
        return events

    def remove_path(self, ctrl: str, nsid: int) -> list[Event]:
        events = self.layout.remove_path(ctrl, nsid)
        self.apply(events)
        return events

    def add_namespace(self, cfg: NamespaceConfig, *, quiet: bool = False) -> list[Event]:
        events = self.layout.attach(cfg)
        self.apply(events, quiet=quiet)
        return events

    def remove_namespace(self, ctrl: str, nsid: int) -> list[Event]:
        events = self.layout.detach(ctrl, nsid)
        self.apply(events)
        return events

    def resize_namespace(self, ctrl: str, nsid: int, size_bytes: int) -> list[Event]:
        events = self.layout.resize(ctrl, nsid, size_bytes)
        self.apply(events)
        return events

    def change_namespace(
        self, ctrl: str, nsid: int, *, fs: str | None, label: str | None = None
    ) -> list[Event]:
        events = self.layout.change(ctrl, nsid, fs=fs, label=label)
        self.apply(events)
        return events

    def burst(self, configs: Iterable[NamespaceConfig]) -> list[Event]:
        """Attach many namespaces in one rescan: all their events in one blocking stream."""
        events: list[Event] = []
        for cfg in configs:
            events += self.layout.attach(cfg)
        self.apply(events)
        return events
