"""Record a scenario step by step: the udev capture, the agent's journal, mounts and status.

Each step runs one command in the guest (or one host action over QMP) inside ``udevadm
monitor``; then an *agent barrier* (a blank namespace attached and detached, and the agent's
journal entries for both awaited: it reads udev events in order, so it has read every event
of the step), then ``nvme-agent status --settle`` (no action queued or running).  What the
agent did is then complete, and tests assert on the recorded :class:`StepResult`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvme_agent.outputs.journal import CHANGE_MESSAGE_IDS
from nvme_agent.topology.changes import ChangeType

from .guest import PROBE, Guest
from .shapes import CaptureSet, Step, readme

#: Journal fields every agent entry carries (native entries and its stderr lines alike).
AGENT_UNIT = "nvme-agent.service"


@dataclass(frozen=True)
class Mount:
    """One line of the guest's mountinfo."""

    mount_id: int
    target: str
    source: str
    fstype: str
    majmin: str


@dataclass(frozen=True)
class Snapshot:
    """The guest after a step: mounts, and the agent's ``status --json`` objects."""

    mounts: tuple[Mount, ...]
    status: tuple[dict[str, Any], ...]

    def mounted(self, target: str) -> list[Mount]:
        return [m for m in self.mounts if m.target == target]

    def namespaces(self, subsysnqn: str | None = None, nsid: int | None = None) -> list[Any]:
        """Namespace objects of the status, optionally of one subsystem and NSID."""
        return [
            o
            for o in self.status
            if o.get("type") == "namespace"
            and (subsysnqn is None or o.get("subsysnqn") == subsysnqn)
            and (nsid is None or o.get("nsid") == nsid)
        ]

    def controllers(self) -> list[dict[str, Any]]:
        return [o for o in self.status if o.get("type") == "controller"]


@dataclass(frozen=True)
class Marker:
    """The agent barrier: a blank namespace that no rule matches, on a PCI controller."""

    ctrl_dev: str
    nsid: int
    cntlid: int
    subsysnqn: str

    def steps(self) -> list[tuple[list[str], list[str]]]:
        """agent-sync steps: attach, the agent's namespace-added; detach, namespace-removed."""
        ns = ["-n", str(self.nsid), "-c", str(self.cntlid)]
        fields = [f"NVME_NSID={self.nsid}", f"NVME_SUBSYSNQN={self.subsysnqn}"]
        added = CHANGE_MESSAGE_IDS[ChangeType.NAMESPACE_ADDED]
        removed = CHANGE_MESSAGE_IDS[ChangeType.NAMESPACE_REMOVED]
        return [
            (["nvme", "attach-ns", self.ctrl_dev, *ns], [f"MESSAGE_ID={added}", *fields]),
            (["nvme", "detach-ns", self.ctrl_dev, *ns], [f"MESSAGE_ID={removed}", *fields]),
        ]

    def owns(self, entry: dict[str, Any]) -> bool:
        """True for the agent's journal entries about the marker namespace."""
        return (
            entry.get("NVME_NSID") == str(self.nsid)
            and entry.get("NVME_SUBSYSNQN") == self.subsysnqn
        )


@dataclass
class StepResult:
    """What one step did: the command's result, the capture, the agent's journal entries
    (the marker's own excluded), the guest before and after."""

    step: Step
    command: list[str]
    probe: dict[str, Any]
    capture: str
    entries: list[dict[str, Any]]
    before: Snapshot
    after: Snapshot
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def changes(self, kind: ChangeType, **fields: str) -> list[dict[str, Any]]:
        """The agent's journal entries for changes of ``kind`` with these field values."""
        wanted = CHANGE_MESSAGE_IDS[kind]
        return [
            e
            for e in self.entries
            if e.get("MESSAGE_ID") == wanted and all(e.get(k) == v for k, v in fields.items())
        ]

    def messages(self) -> list[str]:
        return [str(e.get("MESSAGE", "")) for e in self.entries]

    def journal_text(self) -> str:
        """The agent's messages, one per line (for assertion messages)."""
        return "\n".join(self.messages())


def _mounts(raw: Iterable[dict[str, Any]]) -> tuple[Mount, ...]:
    return tuple(
        Mount(int(m["id"]), m["target"], m["source"], m["fstype"], m["majmin"]) for m in raw
    )


def snapshot(g: Guest, marker: Marker | None = None, settle: float = 60.0) -> Snapshot:
    """The agent barrier (with ``marker``), then wait until the agent has no action queued
    or running, then look: one guest process for all three."""
    steps = json.dumps(marker.steps() if marker else [])
    res = g.probe("snapshot", "--steps", steps, "--settle", f"{settle:g}", timeout=settle * 4)
    assert res["sync"]["ok"], f"agent barrier failed in {g.name}: {res['sync']}"
    assert res["rc"] == 0, f"nvme-agent status failed in {g.name}: {res['stderr']}"
    return Snapshot(_mounts(res["mounts"]), tuple(res["status"]))


class Recorder:
    """Runs the steps of one :class:`CaptureSet` in one guest and keeps their results."""

    def __init__(self, g: Guest, capture_set: CaptureSet, marker: Marker, out_root: Path):
        self.g = g
        self.set = capture_set
        self.marker = marker
        self.out_root = out_root
        self.outdir = out_root / capture_set.directory / g.mode
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, StepResult] = {}
        self.last = snapshot(g)
        self.started = time.monotonic()

    def state(self, name: str, text: str) -> None:
        """Store a state file of this capture set (listed in its ``states``)."""
        assert name in dict(self.set.states), f"{name} is not a state file of {self.set}"
        (self.outdir / name).write_text(text)

    def export_db(self) -> None:
        """state-00: the udev database of the NVMe devices, before step 01."""
        out = self.g.sh("udevadm info --export-db").stdout
        blocks = [b for b in out.split("\n\n") if _is_nvme_block(b)]
        self.state("state-00-udev-export-db.txt", "\n\n".join(blocks) + "\n\n")

    def run(
        self,
        slug: str,
        command: list[str],
        *,
        until: Iterable[str] = (),
        host_action: Callable[[], dict[str, Any] | None] | None = None,
        label: str | None = None,
        timeout: float = 60.0,
    ) -> StepResult:
        """Run one step: ``command`` in the guest, or ``host_action`` (then ``command`` is
        what the guest runs meanwhile, usually ``true``, and ``label`` names the host's
        action in the capture's header) while ``udevadm monitor`` records."""
        step = self.set.step(slug)
        started = time.monotonic()
        guest_file = f"/run/e2e-capture-{step.filename}"
        args = ["capture", "--kernel", "--out", guest_file, "--timeout", f"{timeout:g}"]
        for spec in until:
            args += ["--until", spec]
        if label:
            args += ["--label", label]
        extra: dict[str, Any] = {}
        if host_action is None:
            probe = self.g.probe(*args, "--", *command, timeout=timeout * 3 + 60)
        else:
            probe, extra = self._with_host_action(args, command, host_action, timeout)
        assert probe.get("marker_seen") and probe.get("until_ok"), (
            f"step {step.filename} in {self.g.name}: {probe}"
        )
        capture = self.g.qga.read_file(guest_file).decode()
        (self.outdir / step.filename).write_text(capture)
        after = snapshot(self.g, self.marker)
        found = self.g.probe(
            "journal", "--after", probe["cursor"], "--match", f"_SYSTEMD_UNIT={AGENT_UNIT}"
        )
        entries = [e for e in found["entries"] if not self.marker.owns(e)]
        self._keep_journal(step, entries)
        result = StepResult(
            step, command, probe, capture, entries, self.last, after,
            round(time.monotonic() - started, 2), extra,
        )  # fmt: skip
        self.last = after
        self.results[slug] = result
        return result

    def _with_host_action(
        self,
        args: list[str],
        command: list[str],
        host_action: Callable[[], dict[str, Any] | None],
        timeout: float,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # The guest must be listening before the host acts: the capture writes "ready" to
        # a FIFO once its monitor is bound, and a second guest process waits on that FIFO.
        fifo = "/run/e2e-capture-ready"
        self.g.sh(f"rm -f {fifo} && mkfifo {fifo}")
        argv = ["python3", PROBE, *args, "--ready-fifo", fifo, "--", *command]
        pid = self.g.qga.start(argv)
        self.g.probe("wait-fifo", fifo, timeout=timeout)
        extra = host_action() or {}
        res = self.g.qga.wait(pid, argv, timeout=timeout * 3 + 60).check()
        return dict(json.loads(res.stdout)), extra

    def _keep_journal(self, step: Step, entries: list[dict[str, Any]]) -> None:
        # The agent's side of each step, next to the guest's console log (not a fixture).
        path = self.g.workdir / "journal" / self.set.directory / f"{step.filename[:-4]}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{e.get('MESSAGE', '')}\n" for e in entries))

    def finish(self, kernel: str, qemu: str) -> None:
        """Write the capture set's README (the same for both modes)."""
        path = self.out_root / self.set.directory / "README.md"
        path.write_text(readme(self.set, kernel, qemu))

    def timings(self) -> dict[str, float]:
        """Seconds per step, and in all."""
        out = {r.step.slug: r.seconds for r in self.results.values()}
        out["all_steps"] = round(time.monotonic() - self.started, 1)
        return out


def _is_nvme_block(block: str) -> bool:
    first = block.strip().split("\n", 1)[0]
    return first.startswith("P: ") and ("/nvme" in first or "/ng" in first)
