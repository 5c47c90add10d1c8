"""The policy language and the compiled policy: frozen dataclasses the decision engine reads.

Every key of the policy file is a field below annotated ``Annotated[type, Key(...)]``: its
default is the field's, :class:`Key` gives its shape (:mod:`nvme_agent.policy.shapes`) and
what it means.  These declarations are the one
source of truth of the language: the validator's key tables (``validate.py``), ``schema.json``
(``schema.py``) and the ``nvme-agent.policy(5)`` man page (``nvme_agent.cli.policyman``) are
derived from them, and tests check that the shipped copies equal what is generated.

Nothing here is a raw YAML value any more: sizes are bytes, globs are checked, templates are
compiled, signal names are canonical (``SIGTERM``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from nvme_agent.policy.errors import PolicyIssue
from nvme_agent.policy.facts import Facts
from nvme_agent.policy.matchers import Matcher, compile_match
from nvme_agent.policy.shapes import Shape
from nvme_agent.policy.templates import Template

OnBusy = Literal["fail", "signal", "lazy"]

#: Hooks of changes to a device: it appears, goes, grows.
DEVICE_HOOKS = ("on_add", "on_remove", "on_resize")
#: Hooks of changes to the paths of a namespace that stays.
PATH_HOOKS = ("on_path_added", "on_path_lost")
#: Where hooks (exec, systemd, signal) may run: everywhere.
_EVERY_HOOK = (*DEVICE_HOOKS, *PATH_HOOKS)


@dataclass(frozen=True, slots=True)
class Key:
    """What the policy file says about a field: ``Annotated[type, Key(...)]`` on a field of the
    dataclasses below makes it a key of the file.

    ``name``: the YAML key when the field cannot be called that (``not``); ``default_text``: how
    the default reads when it is not the field's default (it comes from another key);
    ``casefold``: a glob matched regardless of case; ``section``: the dataclass of a nested
    mapping; ``fact``: the :class:`~nvme_agent.policy.facts.Facts` attribute a condition reads
    when it is not called like the key (``size_min`` reads ``size``).
    """

    doc: str
    shape: Shape
    name: str | None = None
    required: bool = False
    default_text: str | None = None
    casefold: bool = False
    section: type | None = None
    fact: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of a section, as the validator, the schema and the man page read it."""

    name: str
    attr: str
    doc: str
    shape: Shape
    default: Any
    default_text: str | None
    required: bool
    casefold: bool
    section: type | None
    fact: str

    @property
    def has_default(self) -> bool:
        return self.default is not dataclasses.MISSING


@functools.cache
def keys_of(cls: type) -> tuple[KeyInfo, ...]:
    """The policy keys of the dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[KeyInfo] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        meta = next(
            (m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Key)),
            None,
        )
        if meta is None:
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(
            KeyInfo(
                name=meta.name or f.name,
                attr=f.name,
                doc=meta.doc,
                shape=meta.shape,
                default=default,
                default_text=meta.default_text,
                required=meta.required,
                casefold=meta.casefold,
                section=meta.section,
                fact=meta.fact or meta.name or f.name,
            )
        )
    return tuple(out)


@functools.cache
def key_names(cls: type) -> tuple[str, ...]:
    """The YAML keys of ``cls``, in declaration order."""
    return tuple(k.name for k in keys_of(cls))


def key_info(cls: type, name: str) -> KeyInfo:
    """The key ``name`` of ``cls`` (KeyError if it has none)."""
    return _key_index(cls)[name]


@functools.cache
def _key_index(cls: type) -> dict[str, KeyInfo]:
    return {k.name: k for k in keys_of(cls)}


def default_of(cls: type, name: str) -> Any:
    """The default value of key ``name`` of ``cls``."""
    return key_info(cls, name).default


# --- defaults ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Default timeouts in seconds per action kind (an action's own ``timeout`` wins)."""

    SUMMARY: ClassVar[str] = (
        "How long each kind of action may take, in seconds, when the action does not say. "
        "A timed-out hook's whole process group gets SIGTERM, then SIGKILL."
    )

    mount: Annotated[float, Key("Mount actions, including fsck.", Shape.SECONDS)] = 60.0
    unmount: Annotated[
        float, Key("Unmount actions: waiting for holders and the unmount itself.", Shape.SECONDS)
    ] = 30.0
    exec: Annotated[float, Key("Exec actions (hooks).", Shape.SECONDS)] = 30.0
    systemd: Annotated[float, Key("Systemd actions (systemctl).", Shape.SECONDS)] = 60.0
    grow: Annotated[float, Key("Grow actions (resize2fs, xfs_growfs).", Shape.SECONDS)] = 300.0


_TIMEOUTS = Timeouts()


@dataclass(frozen=True, slots=True)
class Defaults:
    """The ``defaults:`` block."""

    SUMMARY: ClassVar[str] = "Settings for the whole policy."

    mount_root: Annotated[
        str,
        Key(
            "The directory below which every mountpoint is created; a rendered mount path may "
            "never leave it.  It may not be /, /run, /var, /mnt, /media, /srv, /opt or /run/media "
            "itself, nor lie in a system or home tree (/etc, /usr, /home, /var/lib, /tmp, ...).  "
            "The default is on tmpfs, like udisks' /run/media, so a mountpoint left behind by a "
            "crash is gone after a reboot.",
            Shape.ABSPATH,
        ),
    ] = "/run/media/nvme-agent"
    mount_options: Annotated[
        tuple[str, ...],
        Key(
            "Options of every mount action without its own.  bind, rbind, move, remount and "
            "defaults are refused; check warns when nodev or nosuid is missing.",
            Shape.OPTIONS,
        ),
    ] = ("nodev", "nosuid", "noatime")
    timeouts: Annotated[
        Timeouts,
        Key("Default timeouts per action kind (see TIMEOUTS).", Shape.SECTION, section=Timeouts),
    ] = field(default_factory=Timeouts)
    reconcile_on_reload: Annotated[
        bool,
        Key(
            "On reload, apply the new policy to the namespaces already present (mount what it now "
            "mounts).  Off: a new policy only affects later changes.",
            Shape.BOOL,
        ),
    ] = False
    unmount_on_stop: Annotated[
        bool,
        Key(
            "Unmount what the agent mounted when the daemon stops.  Off: mounts outlive the agent.",
            Shape.BOOL,
        ),
    ] = False
    allowed_filesystems: Annotated[
        tuple[str, ...],
        Key(
            "Filesystem types the agent mounts.  The type is what the disk says, and the kernel "
            "loads whatever module a type names: a plan for a disk of any other type is refused.",
            Shape.FSTYPES,
        ),
    ] = ("ext4", "xfs", "btrfs", "vfat")
    admin_group: Annotated[
        str | None,
        Key(
            "A group whose members may use the commands that act (eject, reload), besides root.  "
            "Members of the nvme-agent group can always read (status, history, watch).",
            Shape.ID,
            default_text="none: only root",
        ),
    ] = None


_DEFAULTS = Defaults()
#: Where mounts go unless ``defaults.mount_root`` says otherwise.
DEFAULT_MOUNT_ROOT: str = _DEFAULTS.mount_root
DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = _DEFAULTS.mount_options
DEFAULT_ALLOWED_FILESYSTEMS: tuple[str, ...] = _DEFAULTS.allowed_filesystems


# --- match -------------------------------------------------------------------------------


def _glob(what: str, *, casefold: bool = False) -> Key:
    return Key(what, Shape.GLOBS, casefold=casefold)


@dataclass(frozen=True, slots=True)
class Match:
    """The ``match:`` mapping of a rule: every condition given must hold."""

    SUMMARY: ClassVar[str] = (
        "Every condition given must hold; no condition (or no match: at all) matches every "
        "device.  A glob is an fnmatch pattern (*, ?, [...]); a list of globs matches when one "
        "of them does.  The facts are those of the target: the partition for a partition "
        "change, the whole disk otherwise; namespace facts (identifiers, controller, paths) are "
        "the namespace's for both.  Conditions are evaluated on the namespace as it is at the "
        "change (as it was last seen, for a removal)."
    )

    nsid: Annotated[
        frozenset[int] | None, Key("The namespace ID is one of these.", Shape.NSIDS)
    ] = None
    ctrl: Annotated[
        tuple[str, ...] | None,
        _glob("The (first) controller the namespace is reached through (nvme0)."),
    ] = None
    serial: Annotated[tuple[str, ...] | None, _glob("The controller's serial number.")] = None
    model: Annotated[tuple[str, ...] | None, _glob("The controller's model (QEMU NVMe Ctrl).")] = (
        None
    )
    subsysnqn: Annotated[tuple[str, ...] | None, _glob("The NVMe subsystem NQN.")] = None
    transport: Annotated[
        tuple[str, ...] | None,
        Key(
            "The transport of a path the namespace is reached through (pcie, tcp, rdma, fc, "
            "loop), whatever the path's state.  A namespace reached over several transports "
            "matches each of them: transport: tcp holds for one with a tcp and an rdma path; "
            "not: {transport: rdma} requires that none of its paths is rdma.",
            Shape.GLOBS,
            fact="transports",
        ),
    ] = None
    uuid: Annotated[tuple[str, ...] | None, _glob("The namespace UUID.", casefold=True)] = None
    nguid: Annotated[tuple[str, ...] | None, _glob("The namespace NGUID.", casefold=True)] = None
    eui64: Annotated[tuple[str, ...] | None, _glob("The namespace EUI-64.", casefold=True)] = None
    wwid: Annotated[
        tuple[str, ...] | None,
        _glob(
            "The namespace WWID (QEMU: nvme.1b36-..., synthesised from the slot).", casefold=True
        ),
    ] = None
    fs_type: Annotated[
        tuple[str, ...] | None, _glob("The filesystem type blkid found (ext4, xfs).")
    ] = None
    fs_label: Annotated[tuple[str, ...] | None, _glob("The filesystem label.")] = None
    fs_uuid: Annotated[tuple[str, ...] | None, _glob("The filesystem UUID.", casefold=True)] = None
    partlabel: Annotated[
        tuple[str, ...] | None, _glob("The GPT partition name (partitions only).")
    ] = None
    partition: Annotated[
        bool | None, Key("true: partitions only; false: whole disks only.", Shape.BOOL)
    ] = None
    identity_weak: Annotated[
        bool | None,
        Key(
            "The namespace identity is weak: nothing tells a swapped image at the same NSID from "
            "the old one (QEMU's slot-derived WWID, or no identifier at all).",
            Shape.BOOL,
        ),
    ] = None
    size_min: Annotated[
        int | None,
        Key(
            "The target is at least this large.  Units: B, kB, MB, GB, TB, PB (powers of 1000), "
            "KiB, MiB, GiB, TiB, PiB (powers of 1024); a bare K, M or G is refused as ambiguous.",
            Shape.SIZE,
            fact="size",
        ),
    ] = None
    size_max: Annotated[
        int | None,
        Key("The target is at most this large (units as size_min).", Shape.SIZE, fact="size"),
    ] = None
    paths_min: Annotated[
        int | None,
        Key(
            "The namespace has at least this many live paths: paths whose controller's state "
            "is live (without native multipath, each controller's disk of it is a path).  The "
            "count changes while the namespace stays, so a device rule that depends on it can "
            "stop matching a namespace it handled, whose removal another rule then decides "
            "(check warns); use it in path rules (only on_path_added and on_path_lost actions).",
            Shape.COUNT,
            fact="paths_live",
        ),
    ] = None
    paths_max: Annotated[
        int | None,
        Key(
            "The namespace has at most this many live paths (as paths_min): paths_max: 1 in "
            "a rule with on_path_lost says redundancy is gone.",
            Shape.COUNT,
            fact="paths_live",
        ),
    ] = None
    property: Annotated[
        tuple[tuple[str, tuple[str, ...]], ...],
        Key(
            "udev properties of the target (ID_PART_TABLE_TYPE, ...) match these globs.",
            Shape.PROPERTIES,
        ),
    ] = ()
    any: Annotated[
        tuple[Match, ...], Key("At least one of these condition mappings holds.", Shape.MATCH_LIST)
    ] = ()
    not_: Annotated[
        Match | None, Key("This condition mapping does not hold.", Shape.MATCH, name="not")
    ] = None


# --- actions -----------------------------------------------------------------------------


def _timeout(kind: str) -> Key:
    return Key(
        "How long this action may take, in seconds.",
        Shape.SECONDS,
        default_text=f"defaults.timeouts.{kind}",
    )


@dataclass(frozen=True, slots=True)
class MountAction:
    KIND: ClassVar[str] = "mount"
    HOOKS: ClassVar[tuple[str, ...]] = ("on_add",)
    ONE_OF: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = (
        "Mount the target's filesystem.  The mountpoint is created below mount_root without "
        "following symlinks, and verified in /proc/self/mountinfo afterwards.  Not done without "
        "a mountable filesystem of an allowed type (a blank disk, a partition table, LUKS or "
        "LVM); a read-only namespace is mounted read-only; a rule mounts at most once.  Never "
        "touched: the root filesystem's disk, devices held by dm or md, anything /etc/fstab "
        "names."
    )

    path: Annotated[
        Template,
        Key(
            "Where to mount; every substituted value becomes one safe path component, and the "
            "result must stay below mount_root.",
            Shape.PATH_TEMPLATE,
            default_text="<mount_root>/{label}",
        ),
    ]
    options: Annotated[
        tuple[str, ...], Key("Mount options.", Shape.OPTIONS, default_text="defaults.mount_options")
    ]
    fstype: Annotated[
        str | None,
        Key(
            "The filesystem type to mount as; must be in allowed_filesystems.",
            Shape.FSTYPE,
            default_text="what blkid found",
        ),
    ] = None
    fsck: Annotated[
        bool, Key("Check the filesystem first (e2fsck -p, xfs_repair -n).", Shape.BOOL)
    ] = False
    read_only: Annotated[bool, Key("Mount read-only.", Shape.BOOL)] = False
    mode: Annotated[
        int | None, Key("Mode of the mountpoint directory.", Shape.MODE, default_text="unchanged")
    ] = None
    owner: Annotated[
        str | None, Key("Owner of the mountpoint directory.", Shape.ID, default_text="unchanged")
    ] = None
    group: Annotated[
        str | None, Key("Group of the mountpoint directory.", Shape.ID, default_text="unchanged")
    ] = None
    timeout: Annotated[float, _timeout("mount")] = _TIMEOUTS.mount
    allow_existing_dir: Annotated[
        bool,
        Key(
            "Mount on an existing, empty directory the agent did not create (never a non-empty "
            "one).  check warns: make sure nobody but root can create directories below "
            "mount_root.",
            Shape.BOOL,
        ),
    ] = False
    kind: Literal["mount"] = "mount"


@dataclass(frozen=True, slots=True)
class UnmountAction:
    KIND: ClassVar[str] = "unmount"
    HOOKS: ClassVar[tuple[str, ...]] = ("on_remove",)
    ONE_OF: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = (
        "Unmount what this rule's mount action mounted (only mounts the agent made).  Without "
        "one, on_remove ends with an implied unmount (see implied_unmount).  On hot-remove the "
        "device is already gone: the mount is lazily detached at once.  On eject, and when a "
        "rule change undoes a mount of a present device, the unmount is graceful: holders are "
        "found and handled per on_busy, then the filesystem is synced and unmounted."
    )

    timeout: Annotated[float, _timeout("unmount")] = _TIMEOUTS.unmount
    on_busy: Annotated[
        OnBusy,
        Key(
            "What to do with processes that hold the mount: fail (name them, unmount nothing), "
            "signal (send them signal, wait, then unmount), lazy (detach at once).",
            Shape.ON_BUSY,
        ),
    ] = "signal"
    signal: Annotated[str, Key("The signal for on_busy: signal.", Shape.SIGNAL)] = "SIGTERM"
    lazy_fallback: Annotated[
        bool, Key("Detach lazily when the holders outlive the timeout.", Shape.BOOL)
    ] = True
    kind: Literal["unmount"] = "unmount"


@dataclass(frozen=True, slots=True)
class ExecAction:
    KIND: ClassVar[str] = "exec"
    HOOKS: ClassVar[tuple[str, ...]] = _EVERY_HOOK
    ONE_OF: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = (
        "Run a program, never a shell: cwd /, stdin /dev/null, an environment of PATH, LANG, "
        "the hook variables (see HOOK ENVIRONMENT) and env; output is logged line by line."
    )

    argv: Annotated[
        tuple[Template, ...],
        Key(
            "The program (a fixed absolute path) and its arguments; each substituted value stays "
            "inside its own argument and never starts with -.",
            Shape.ARGV,
            required=True,
        ),
    ]
    env: Annotated[
        tuple[tuple[str, Template], ...], Key("Extra environment variables.", Shape.ENV)
    ] = ()
    timeout: Annotated[float, _timeout("exec")] = _TIMEOUTS.exec
    user: Annotated[
        str | None, Key("Run as this user (and its group).", Shape.ID, default_text="root")
    ] = None
    kind: Literal["exec"] = "exec"


def _verb(what: str) -> Key:
    return Key(
        f"{what} this unit; substituted values are escaped exactly like systemd-escape.",
        Shape.UNIT_TEMPLATE,
    )


@dataclass(frozen=True, slots=True)
class SystemdAction:
    KIND: ClassVar[str] = "systemd"
    HOOKS: ClassVar[tuple[str, ...]] = _EVERY_HOOK
    ONE_OF: ClassVar[tuple[str, ...]] = ("start", "stop", "restart", "reload")
    SUMMARY: ClassVar[str] = (
        "systemctl start, stop, restart or reload a unit (exactly one of them).  A clear error "
        "when systemd is not PID 1."
    )

    start: Annotated[Template | None, _verb("Start")] = None
    stop: Annotated[Template | None, _verb("Stop")] = None
    restart: Annotated[Template | None, _verb("Restart")] = None
    reload: Annotated[Template | None, _verb("Reload")] = None
    timeout: Annotated[float, _timeout("systemd")] = _TIMEOUTS.systemd
    kind: Literal["systemd"] = "systemd"

    @property
    def verb(self) -> Literal["start", "stop", "restart", "reload"]:
        """The one verb given (the validator makes sure there is exactly one)."""
        for verb in ("start", "stop", "restart", "reload"):
            if getattr(self, verb) is not None:
                return verb
        raise ValueError("a systemd action without a verb")

    @property
    def unit(self) -> Template:
        unit: Template = getattr(self, self.verb)
        return unit


@dataclass(frozen=True, slots=True)
class SignalAction:
    KIND: ClassVar[str] = "signal"
    HOOKS: ClassVar[tuple[str, ...]] = _EVERY_HOOK
    ONE_OF: ClassVar[tuple[str, ...]] = ("pidfile", "process", "unit")
    SUMMARY: ClassVar[str] = (
        "Send a signal to the processes named by exactly one of pidfile, process or unit.  "
        "No such process: skipped."
    )

    signal: Annotated[str, Key("The signal.", Shape.SIGNAL)] = "SIGHUP"
    pidfile: Annotated[str | None, Key("The process whose PID this file holds.", Shape.ABSPATH)] = (
        None
    )
    process: Annotated[
        str | None, Key("Every process of this name (as in /proc/PID/comm).", Shape.PROCESS)
    ] = None
    unit: Annotated[Template | None, Key("The main PID of this unit.", Shape.UNIT_TEMPLATE)] = None
    kind: Literal["signal"] = "signal"


@dataclass(frozen=True, slots=True)
class GrowAction:
    KIND: ClassVar[str] = "grow"
    HOOKS: ClassVar[tuple[str, ...]] = ("on_resize",)
    ONE_OF: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = (
        "Grow the filesystem to the new size of the namespace: ext4 online (resize2fs), xfs "
        "while mounted (xfs_growfs).  Other filesystems: skipped."
    )

    timeout: Annotated[float, _timeout("grow")] = _TIMEOUTS.grow
    kind: Literal["grow"] = "grow"


Action = MountAction | UnmountAction | ExecAction | SystemdAction | SignalAction | GrowAction
#: Every action kind, in the order the documentation lists them.
ACTION_TYPES: tuple[type[Action], ...] = (
    MountAction,
    UnmountAction,
    ExecAction,
    SystemdAction,
    SignalAction,
    GrowAction,
)
ACTIONS_BY_KIND: dict[str, type[Action]] = {cls.KIND: cls for cls in ACTION_TYPES}


# --- rules and the policy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``rules:``.  ``label`` is how explanations name it."""

    SUMMARY: ClassVar[str] = (
        "Rules are tried top to bottom; the first whose match holds decides.  on_add runs when "
        "a namespace or partition appears; on_remove when it goes (or is ejected); on_resize "
        "when a namespace grows.  A namespace-changed event (a filesystem appeared or changed "
        "on a present namespace) runs on_add of the rule that matches now; when another rule "
        "matched before, that rule is undone first (its on_remove, with a graceful unmount).  "
        "A path change (path-added, path-lost: a controller more or fewer reaches a namespace "
        "that stays) runs on_path_added or on_path_lost of the first matching rule that has "
        "such actions (or stops at a matching ignore: true rule); its target is the whole "
        "disk, never a partition, and it never mounts, unmounts or undoes anything.  A rule "
        "whose only actions are path hooks is a path rule: device changes pass over it, so it "
        "may stand anywhere, for example after the rule that mounts.  The path facts are the "
        "namespace's after the change."
    )
    HOOKS: ClassVar[tuple[str, ...]] = _EVERY_HOOK

    index: int
    name: Annotated[
        str | None,
        Key(
            "How logs, the journal (NVME_RULE) and hooks (NVME_AGENT_RULE) name the rule; unique.",
            Shape.STRING,
            default_text="rules[INDEX]",
        ),
    ] = None
    match: Annotated[
        Match, Key("The conditions (see MATCH).", Shape.MATCH, default_text="every device")
    ] = field(default_factory=Match)
    ignore: Annotated[
        bool,
        Key(
            "Stop here: matching devices get no actions (they are still logged and streamed).",
            Shape.BOOL,
        ),
    ] = False
    on_add: Annotated[
        tuple[Action, ...], Key("Actions when the target appears.", Shape.ACTIONS)
    ] = ()
    on_remove: Annotated[
        tuple[Action, ...], Key("Actions when the target goes or is ejected.", Shape.ACTIONS)
    ] = ()
    on_resize: Annotated[
        tuple[Action, ...], Key("Actions when the namespace changes size.", Shape.ACTIONS)
    ] = ()
    on_path_added: Annotated[
        tuple[Action, ...],
        Key(
            "Actions when one more controller reaches the namespace (exec, systemd, signal).  "
            "Without native multipath a namespace shared by two controllers appears with its "
            "first disk, and each further disk is a path-added right after.",
            Shape.ACTIONS,
        ),
    ] = ()
    on_path_lost: Annotated[
        tuple[Action, ...],
        Key(
            "Actions when a controller no longer reaches the namespace but it stays (exec, "
            "systemd, signal), e.g. to warn an application that redundancy is gone; nothing is "
            "unmounted.  The namespace's last path going is its removal (on_remove).",
            Shape.ACTIONS,
        ),
    ] = ()
    implied_unmount: Annotated[
        bool,
        Key(
            "End on_remove with an unmount of on_add's mount when on_remove has no unmount.",
            Shape.BOOL,
        ),
    ] = True
    line: int | None = None
    matcher: Matcher = field(init=False, repr=False, compare=False)
    #: ``matcher.holds``, one attribute away from the loop in ``decide`` that tries the rules.
    holds: Callable[[Facts], bool] = field(init=False, repr=False, compare=False)

    #: Only path hooks: a path rule, which device changes pass over.
    path_only: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        matcher = compile_match(self.match, keys_of(Match))
        object.__setattr__(self, "matcher", matcher)
        object.__setattr__(self, "holds", matcher.holds)
        device = self.ignore or self.on_add or self.on_remove or self.on_resize
        path_only = not device and bool(self.on_path_added or self.on_path_lost)
        object.__setattr__(self, "path_only", path_only)

    def tried_by(self, hook: str) -> bool:
        """A change whose hook is ``hook`` tries this rule: a device change every rule but a
        path rule, a path change the ignore rules and those with actions for it."""
        if hook in PATH_HOOKS:
            return self.ignore or bool(getattr(self, hook))
        return not self.path_only

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

    SUMMARY: ClassVar[str] = "The top level of the file."

    version: Annotated[
        int, Key("The policy language version; this agent reads 1.", Shape.VERSION, required=True)
    ] = 1
    defaults: Annotated[
        Defaults,
        Key("Settings for the whole policy (see DEFAULTS).", Shape.SECTION, section=Defaults),
    ] = field(default_factory=Defaults)
    rules: Annotated[
        tuple[Rule, ...],
        Key(
            "The rules, tried in order (see RULES).  None: changes are only logged and streamed.",
            Shape.RULES,
        ),
    ] = ()
    source: str = "<default>"
    warnings: tuple[PolicyIssue, ...] = ()
    #: SHA-256 of the text it was loaded from: tells a restarted daemon whether the namespaces
    #: it handled before were handled under this very policy.
    digest: str = ""
    #: The rules a change tries, in order, by hook: device changes (``on_add``, ``on_remove``,
    #: ``on_resize``) pass over path rules; a path change tries the ignore rules and those
    #: with actions for it.  Built once here, not per decision.
    tried: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tried = {hook: tuple(r for r in self.rules if r.tried_by(hook)) for hook in Rule.HOOKS}
        object.__setattr__(self, "tried", tried)
