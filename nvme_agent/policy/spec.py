"""The compiled policy: frozen dataclasses the decision engine reads.

Nothing here is a raw YAML value any more: sizes are bytes, globs are checked, templates are
compiled, signal names are canonical (``SIGTERM``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nvme_agent.policy.errors import PolicyIssue
from nvme_agent.policy.matchers import All, Matcher
from nvme_agent.policy.plan import OnBusy
from nvme_agent.policy.templates import Template

#: Where mounts go unless ``defaults.mount_root`` says otherwise.  Under /run (a tmpfs), like
#: udisks' /run/media: a mountpoint left behind by a crash is gone after a reboot.
DEFAULT_MOUNT_ROOT = "/run/media/nvme-agent"
DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = ("nodev", "nosuid", "noatime")
#: Filesystem types mounted unless ``defaults.allowed_filesystems`` says otherwise.  The type
#: comes from the disk (blkid), and the kernel loads whatever module a type names: only
#: widely used, well-fuzzed filesystems are mounted by default.
DEFAULT_ALLOWED_FILESYSTEMS: tuple[str, ...] = ("ext4", "xfs", "btrfs", "vfat")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Default timeouts in seconds per action kind."""

    mount: float = 60.0
    unmount: float = 30.0
    exec: float = 30.0
    systemd: float = 60.0
    grow: float = 300.0


@dataclass(frozen=True, slots=True)
class Defaults:
    """The ``defaults:`` block."""

    mount_root: str = DEFAULT_MOUNT_ROOT
    mount_options: tuple[str, ...] = DEFAULT_MOUNT_OPTIONS
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: On ``reload``, apply the new policy to namespaces already present (mount what it now
    #: mounts).  Off: a new policy only affects later changes.
    reconcile_on_reload: bool = False
    #: Unmount what the agent mounted when the daemon stops.  Off: mounts outlive the agent.
    unmount_on_stop: bool = False
    #: Filesystem types the agent mounts; anything else a disk reports is refused.
    allowed_filesystems: tuple[str, ...] = DEFAULT_ALLOWED_FILESYSTEMS
    #: A group whose members may use the commands that act (eject, reload), besides root.
    #: None: only root.  Members of the ``nvme-agent`` group can always read (status, history,
    #: watch).
    admin_group: str | None = None


@dataclass(frozen=True, slots=True)
class MountAction:
    path: Template
    options: tuple[str, ...]
    fstype: str | None = None
    fsck: bool = False
    read_only: bool = False
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    timeout: float = 60.0
    #: Mount on an existing, empty directory the agent did not create (never a non-empty one).
    allow_existing_dir: bool = False
    kind: Literal["mount"] = "mount"


@dataclass(frozen=True, slots=True)
class UnmountAction:
    timeout: float = 30.0
    on_busy: OnBusy = "signal"
    signal: str = "SIGTERM"
    lazy_fallback: bool = True
    kind: Literal["unmount"] = "unmount"


@dataclass(frozen=True, slots=True)
class ExecAction:
    argv: tuple[Template, ...]
    env: tuple[tuple[str, Template], ...] = ()
    timeout: float = 30.0
    user: str | None = None
    kind: Literal["exec"] = "exec"


@dataclass(frozen=True, slots=True)
class SystemdAction:
    verb: Literal["start", "stop", "restart", "reload"]
    unit: Template
    timeout: float = 60.0
    kind: Literal["systemd"] = "systemd"


@dataclass(frozen=True, slots=True)
class SignalAction:
    signal: str = "SIGHUP"
    pidfile: str | None = None
    process: str | None = None
    unit: Template | None = None
    kind: Literal["signal"] = "signal"


@dataclass(frozen=True, slots=True)
class GrowAction:
    timeout: float = 300.0
    kind: Literal["grow"] = "grow"


Action = MountAction | UnmountAction | ExecAction | SystemdAction | SignalAction | GrowAction


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``rules:``.  ``label`` is how explanations name it."""

    index: int
    name: str | None
    match: Matcher = field(default_factory=lambda: All(()))
    ignore: bool = False
    on_add: tuple[Action, ...] = ()
    on_remove: tuple[Action, ...] = ()
    on_resize: tuple[Action, ...] = ()
    implied_unmount: bool = True
    line: int | None = None

    @property
    def label(self) -> str:
        return f"rules[{self.index}]" + (f" {self.name!r}" if self.name else "")

    @property
    def ident(self) -> str:
        """What ``Plan.rule`` carries: the name, else ``rules[i]``."""
        return self.name or f"rules[{self.index}]"

    @property
    def mount(self) -> MountAction | None:
        """The rule's (first) mount action: what on_remove's implied unmount undoes."""
        for a in self.on_add:
            if isinstance(a, MountAction):
                return a
        return None


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded, validated policy (the daemon counts reload generations itself)."""

    version: int = 1
    defaults: Defaults = field(default_factory=Defaults)
    rules: tuple[Rule, ...] = ()
    source: str = "<default>"
    warnings: tuple[PolicyIssue, ...] = ()
    #: SHA-256 of the text it was loaded from: tells a restarted daemon whether the namespaces
    #: it handled before were handled under this very policy.
    digest: str = ""
