"""Plans: what the policy engine decides and the action runner executes.

A :class:`Plan` is the pure output of ``nvme_agent.policy.decide(change, topology, policy)``.
Every value in an action spec is already rendered and sanitised: the runner never sees a
template and never builds a path from device data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

from nvme_agent.policy.spec import (
    DEFAULT_ALLOWED_FILESYSTEMS,
    DEFAULT_MOUNT_OPTIONS,
    OnBusy,
    SignalAction,
    Timeouts,
    UnmountAction,
)
from nvme_agent.topology.changes import Change

# The defaults of a spec are the policy's (nvme_agent.policy.spec): decide always sets them,
# the defaults only serve code that builds specs by hand (the daemon's cleanups, tests).
_T = Timeouts()
_UNMOUNT = UnmountAction()
_SIGNAL = SignalAction()


@dataclass(frozen=True, slots=True)
class MountSpec:
    """Mount ``source`` at ``target`` (an absolute path below ``mount_root``)."""

    source: str
    target: str
    mount_root: str
    fstype: str | None = None
    options: tuple[str, ...] = DEFAULT_MOUNT_OPTIONS
    fsck: bool = False
    read_only: bool = False
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    timeout: float = _T.mount
    #: The policy's ``allowed_filesystems``: checked again against what the device holds.
    allowed_fstypes: tuple[str, ...] = DEFAULT_ALLOWED_FILESYSTEMS
    #: An existing, empty directory not created by the agent may be mounted on.
    allow_existing_dir: bool = False
    kind: Literal["mount"] = "mount"


@dataclass(frozen=True, slots=True)
class UnmountSpec:
    """Unmount what the agent mounted from ``source`` (at ``target`` when given).

    ``device_gone`` is true on hot-remove: the block device has already vanished, so there is
    nothing to flush and the mount is lazily detached.  Otherwise the unmount is graceful:
    holders are found, handled per ``on_busy``, waited for up to ``timeout``, then unmounted.
    """

    source: str
    target: str | None
    mount_root: str
    device_gone: bool = False
    timeout: float = _T.unmount
    on_busy: OnBusy = _UNMOUNT.on_busy
    signal: str = _UNMOUNT.signal
    lazy_fallback: bool = _UNMOUNT.lazy_fallback
    remove_mountpoint: bool = True
    kind: Literal["unmount"] = "unmount"


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """Run ``argv`` (no shell) with extra environment ``env``."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = _T.exec
    user: str | None = None
    kind: Literal["exec"] = "exec"


@dataclass(frozen=True, slots=True)
class SystemdSpec:
    """``systemctl VERB UNIT`` (unit name already escaped)."""

    verb: Literal["start", "stop", "restart", "reload"]
    unit: str
    timeout: float = _T.systemd
    kind: Literal["systemd"] = "systemd"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Send ``signal`` to the processes named by exactly one of pidfile / process / unit."""

    signal: str = _SIGNAL.signal
    pidfile: str | None = None
    process: str | None = None
    unit: str | None = None
    kind: Literal["signal"] = "signal"


@dataclass(frozen=True, slots=True)
class GrowSpec:
    """Grow the filesystem on ``source`` (mounted at ``target`` for xfs) to the device size."""

    source: str
    fstype: str
    target: str | None = None
    timeout: float = _T.grow
    kind: Literal["grow"] = "grow"


ActionSpec = MountSpec | UnmountSpec | ExecSpec | SystemdSpec | SignalSpec | GrowSpec


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered actions for one change, and why.

    ``key`` groups plans that must run in order (one namespace: its identity string);
    ``env`` is the hook environment (``NVME_AGENT_EVENT``, ``NVME_NSID``, ...) computed by the
    policy engine, merged into every ``exec`` action by the runner.
    """

    change: Change
    key: str
    rule: str | None = None
    actions: tuple[ActionSpec, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    explanation: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "plan",
            "nsid": self.change.nsid,
            "ctrl": self.change.ctrl,
            "change": self.change.type.value,
            "key": self.key,
            "rule": self.rule,
            "actions": [spec_to_dict(a) for a in self.actions],
            "explanation": list(self.explanation),
        }


def spec_to_dict(spec: ActionSpec) -> dict[str, Any]:
    """A JSON-friendly dict of an action spec.

    What ``dataclasses.asdict`` gives, without its deep copy of every value: a spec holds
    only immutable values (strings, numbers, tuples of them), and this runs for every plan
    streamed."""
    return {f.name: getattr(spec, f.name) for f in fields(spec)}


class Status(StrEnum):
    """Outcome of one action."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    DRY_RUN = "dry-run"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What happened when the runner executed (or skipped) one action of a plan."""

    plan_key: str
    action: str
    status: Status
    nsid: int | None
    ctrl: str | None
    rule: str | None
    change: str
    message: str = ""
    error: str | None = None
    duration: float = 0.0
    details: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "action-result",
            "action": self.action,
            "status": self.status.value,
            "nsid": self.nsid,
            "ctrl": self.ctrl,
            "rule": self.rule,
            "change": self.change,
            "key": self.plan_key,
            "message": self.message,
            "error": self.error,
            "duration": round(self.duration, 6),
            "details": dict(self.details),
        }
