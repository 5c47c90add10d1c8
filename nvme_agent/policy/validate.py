"""Validation and compilation of a parsed policy document into a :class:`Policy`.

One pass over the data checks shape (unknown keys, wrong types, as ``schema.json`` does for
editors) and meaning (globs, units, absolute paths, signal names, mount paths under the mount
root, templates) and compiles at the same time.  Every problem is collected, with the
position and key path of the offending node, so an operator sees all of them at once.
"""

from __future__ import annotations

import difflib
import os
import re
import signal as signal_module
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

from nvme_agent.policy.errors import PolicyError, PolicyIssue, Severity, keypath
from nvme_agent.policy.loader import Document, Path
from nvme_agent.policy.matchers import (
    FLAG_KEYS,
    GLOB_KEYS,
    All,
    Any_,
    Flag,
    Glob,
    Matcher,
    Not,
    Nsid,
    Property,
    Size,
    glob_problem,
)
from nvme_agent.policy.plan import OnBusy
from nvme_agent.policy.spec import (
    DEFAULT_ALLOWED_FILESYSTEMS,
    DEFAULT_MOUNT_OPTIONS,
    Action,
    Defaults,
    ExecAction,
    GrowAction,
    MountAction,
    Policy,
    Rule,
    SignalAction,
    SystemdAction,
    Timeouts,
    UnmountAction,
)
from nvme_agent.policy.templates import (
    FIELDS,
    Template,
    TemplateError,
    check_unit_name,
    compile_template,
)
from nvme_agent.policy.units import parse_size

TOP_KEYS = ("version", "defaults", "rules")
DEFAULT_KEYS = (
    "mount_root",
    "mount_options",
    "timeouts",
    "reconcile_on_reload",
    "unmount_on_stop",
    "allowed_filesystems",
    "admin_group",
)
TIMEOUT_KEYS = ("mount", "unmount", "exec", "systemd", "grow")
RULE_KEYS = ("name", "match", "ignore", "on_add", "on_remove", "on_resize", "implied_unmount")
MATCH_KEYS = (
    "nsid",
    *GLOB_KEYS,
    *FLAG_KEYS,
    "size_min",
    "size_max",
    "property",
    "any",
    "not",
)
HOOKS = ("on_add", "on_remove", "on_resize")
ACTION_KINDS = ("mount", "unmount", "exec", "systemd", "signal", "grow")
#: Which hook each action kind may appear in (exec/systemd/signal: any).
ACTION_HOOKS: dict[str, tuple[str, ...]] = {
    "mount": ("on_add",),
    "unmount": ("on_remove",),
    "grow": ("on_resize",),
}
MOUNT_KEYS = (
    "path",
    "options",
    "fstype",
    "fsck",
    "read_only",
    "mode",
    "owner",
    "group",
    "timeout",
    "allow_existing_dir",
)
UNMOUNT_KEYS = ("timeout", "on_busy", "signal", "lazy_fallback")
EXEC_KEYS = ("argv", "env", "timeout", "user")
SYSTEMD_VERBS = ("start", "stop", "restart", "reload")
SYSTEMD_KEYS = (*SYSTEMD_VERBS, "timeout")
SIGNAL_KEYS = ("signal", "pidfile", "process", "unit")
GROW_KEYS = ("timeout",)
ON_BUSY = ("fail", "signal", "lazy")
#: Mount options that change what mount does rather than how the filesystem behaves.
FORBIDDEN_OPTIONS = frozenset({"bind", "rbind", "move", "remount", "defaults"})
#: Options that undo the protections we warn about.
SAFETY_OPTIONS = ("nodev", "nosuid")
#: A mount root may not be one of these trees or lie inside one: a device label would pick a
#: directory of the system or of a user (``/home/{label}`` with a disk labelled ``alice``).
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run/user",
    "/sbin",
    "/sys",
    "/usr",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/mail",
    "/var/spool",
)
#: Directories that hold other things than our mounts: a mount root may lie below them
#: (``/run/media/nvme-agent``, ``/mnt/nvme``), never be one of them.
#: World-writable sticky trees (/tmp) are not refused here: the mount action refuses a mount
#: root with an ancestor that someone other than root owns or may write to.
SHARED_TOPS = (
    "/",
    "/run",
    "/var",
    "/mnt",
    "/media",
    "/srv",
    "/opt",
    "/run/media",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")
_FSTYPE = re.compile(r"^[A-Za-z0-9_.-]+$")
_OPTION = re.compile(r"^[^\s,]+$")
_PROPERTY = re.compile(r"^[A-Za-z0-9_.-]+$")


class Checker:
    """Collects issues against a :class:`Document`'s positions."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[PolicyIssue] = list(doc.issues)

    def report(
        self, path: Path, message: str, *, key: bool = False, severity: Severity = "error"
    ) -> None:
        pos = self.doc.position(path, key=key)
        line, col = pos if pos is not None else (None, None)
        self.issues.append(
            PolicyIssue(self.doc.origin, line, col, keypath(path), message, severity)
        )

    def warn(self, path: Path, message: str) -> None:
        self.report(path, message, severity="warning")

    # --- shape helpers ------------------------------------------------------------------

    def mapping(self, value: Any, path: Path, what: str = "a mapping") -> dict[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.report(path, f"expected {what}, got {_kind(value)}")
            return None
        return value

    def keys(
        self,
        mapping: dict[str, Any],
        path: Path,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> None:
        allowed = tuple(allowed)
        for k in mapping:
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.report(
                    (*path, k),
                    f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}",
                    key=True,
                )
        for k in required:
            if k not in mapping:
                self.report((*path, k), "required key missing")

    def boolean(self, value: Any, path: Path, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.report(path, f"expected true or false, got {_kind(value)}")
            return default
        return value

    def seconds(self, value: Any, path: Path, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.report(path, f"expected a positive number of seconds, got {_kind(value)}")
            return default
        return float(value)

    def string(self, value: Any, path: Path, what: str = "a string") -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            quote = " (quote it)" if isinstance(value, int | float | bool) else ""
            self.report(path, f"expected {what}, got {_kind(value)}{quote}")
            return None
        return value

    def template(self, value: Any, path: Path, allowed: frozenset[str] = FIELDS) -> Template | None:
        text = self.string(value, path, "a string template")
        if text is None:
            return None
        try:
            return compile_template(text, allowed)
        except TemplateError as exc:
            self.report(path, str(exc))
            return None

    def abspath(self, value: Any, path: Path, what: str = "an absolute path") -> str | None:
        text = self.string(value, path, what)
        if text is None:
            return None
        if not text.startswith("/"):
            self.report(path, f"{text!r} is a relative path; expected {what}")
            return None
        if "\0" in text:
            self.report(path, "a path cannot contain NUL")
            return None
        return text

    def signal(self, value: Any, path: Path, default: str) -> str:
        if value is None:
            return default
        return canonical_signal(value, lambda msg: self.report(path, msg)) or default

    def globs(self, value: Any, path: Path) -> tuple[str, ...] | None:
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            self.report(path, "expected a glob or a non-empty list of globs")
            return None
        out: list[str] = []
        for i, item in enumerate(items):
            p = (*path, i) if isinstance(value, list) else path
            text = self.string(item, p, "a glob string")
            if text is None:
                continue
            problem = glob_problem(text)
            if problem:
                self.report(p, f"bad glob: {problem}")
                continue
            out.append(text)
        return tuple(out) if len(out) == len(items) else None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


def canonical_signal(value: Any, report: Callable[[str], None]) -> str | None:
    """``HUP``/``sighup``/``SIGHUP``/``1`` -> ``SIGHUP``; None (after ``report``) if unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal_module.Signals(value).name
        except ValueError:
            report(f"unknown signal number {value}")
            return None
    if not isinstance(value, str):
        report(f"expected a signal name such as SIGTERM, got {_kind(value)}")
        return None
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name in signal_module.Signals.__members__ and not name.startswith("SIG_"):
        return name
    report(f"unknown signal {value!r} (e.g. SIGTERM, SIGHUP, SIGUSR1)")
    return None


def mount_root_problem(root: str) -> str | None:
    """Why ``root`` (normalised, absolute) cannot be a mount root, or None."""
    if root in SHARED_TOPS:
        return f"mount_root cannot be {root} itself; use a directory of its own below it"
    for tree in SYSTEM_TREES:
        if root == tree or root.startswith(tree + "/"):
            return (
                f"mount_root {root} is inside {tree}, a system or home tree: a disk's label "
                "could pick a directory that belongs to the system or to a user"
            )
    return None


def _under(path: str, root: str) -> bool:
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path != root and os.path.commonpath([path, root]) == root


class Compiler(Checker):
    """Builds the :class:`Policy`, reporting problems as it goes."""

    def policy(self) -> Policy:
        data = self.doc.data
        if data is None and not self.issues:
            self.report((), "the policy is empty; it needs at least 'version: 1'")
        top = self.mapping(data, (), "a mapping with version, defaults and rules") if data else None
        top = top or {}
        self.keys(top, (), TOP_KEYS, required=("version",) if data else ())
        version = top.get("version", 1)
        if "version" in top and (version != 1 or isinstance(version, bool)):
            self.report(
                ("version",), f"unsupported version {version!r}; this agent reads version 1"
            )
        defaults = self.defaults(top.get("defaults"), ("defaults",))
        rules = self.rules(top.get("rules"), ("rules",), defaults)
        # Report in file order; issues without a position (inline mappings) keep their order.
        self.issues.sort(key=lambda i: (i.line or 0, i.column or 0))
        errors = [i for i in self.issues if i.severity == "error"]
        if errors:
            raise PolicyError(self.issues)
        return Policy(
            version=1,
            defaults=defaults,
            rules=rules,
            source=self.doc.origin,
            warnings=tuple(i for i in self.issues if i.severity == "warning"),
        )

    # --- defaults ----------------------------------------------------------------------

    def defaults(self, value: Any, path: Path) -> Defaults:
        d = self.mapping(value, path)
        if d is None:
            return Defaults()
        self.keys(d, path, DEFAULT_KEYS)
        root = Defaults().mount_root
        if "mount_root" in d:
            given = self.abspath(d["mount_root"], (*path, "mount_root"))
            if given is not None:
                norm = os.path.normpath(given)
                problem = mount_root_problem(norm)
                if problem:
                    self.report((*path, "mount_root"), problem)
                else:
                    root = norm
        options = DEFAULT_MOUNT_OPTIONS
        if "mount_options" in d:
            options = self.options(d["mount_options"], (*path, "mount_options")) or options
        t = self.mapping(d.get("timeouts"), (*path, "timeouts")) or {}
        tp = (*path, "timeouts")
        self.keys(t, tp, TIMEOUT_KEYS)
        base = Timeouts()
        timeouts = Timeouts(
            **{k: self.seconds(t.get(k), (*tp, k), getattr(base, k)) for k in TIMEOUT_KEYS}
        )
        return Defaults(
            mount_root=root,
            mount_options=options,
            timeouts=timeouts,
            reconcile_on_reload=self.boolean(
                d.get("reconcile_on_reload"), (*path, "reconcile_on_reload"), False
            ),
            unmount_on_stop=self.boolean(
                d.get("unmount_on_stop"), (*path, "unmount_on_stop"), False
            ),
            allowed_filesystems=self.filesystems(
                d.get("allowed_filesystems"), (*path, "allowed_filesystems")
            ),
            admin_group=self.owner(d.get("admin_group"), (*path, "admin_group")),
        )

    def filesystems(self, value: Any, path: Path) -> tuple[str, ...]:
        if value is None:
            return DEFAULT_ALLOWED_FILESYSTEMS
        if not isinstance(value, list) or not value:
            self.report(path, f"expected a non-empty list of filesystem types, got {_kind(value)}")
            return DEFAULT_ALLOWED_FILESYSTEMS
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.string(item, (*path, i), "a filesystem type")
            if text is None:
                continue
            if not _FSTYPE.match(text):
                self.report((*path, i), f"bad filesystem type {text!r}")
                continue
            out.append(text)
        return tuple(out) if len(out) == len(value) else DEFAULT_ALLOWED_FILESYSTEMS

    def options(self, value: Any, path: Path) -> tuple[str, ...] | None:
        if isinstance(value, str):
            items: list[Any] = [o.strip() for o in value.split(",") if o.strip()]
            located = [path] * len(items)
        elif isinstance(value, list):
            items = value
            located = [(*path, i) for i in range(len(value))]
        else:
            self.report(path, f"expected a list of mount options, got {_kind(value)}")
            return None
        out: list[str] = []
        ok = True
        for item, p in zip(items, located, strict=True):
            text = self.string(item, p, "a mount option")
            if text is None or not _OPTION.match(text):
                if text is not None:
                    self.report(p, f"bad mount option {text!r} (no spaces or commas)")
                ok = False
                continue
            if text.split("=", 1)[0] in FORBIDDEN_OPTIONS:
                self.report(p, f"mount option {text!r} is not allowed here")
                ok = False
                continue
            out.append(text)
        return tuple(out) if ok else None

    # --- rules -------------------------------------------------------------------------

    def rules(self, value: Any, path: Path, defaults: Defaults) -> tuple[Rule, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.report(path, f"expected a list of rules, got {_kind(value)}")
            return ()
        out: list[Rule] = []
        names: dict[str, int] = {}
        catch_all: int | None = None
        for i, item in enumerate(value):
            rp = (*path, i)
            rule = self.rule(item, rp, i, defaults)
            if rule is None:
                continue
            if rule.name is not None:
                if rule.name in names:
                    self.report(
                        (*rp, "name"),
                        f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])",
                    )
                names.setdefault(rule.name, i)
            if catch_all is not None:
                self.warn(rp, f"unreachable: rules[{catch_all}] before it matches every device")
            elif isinstance(item, dict) and not item.get("match"):
                catch_all = i
            out.append(rule)
        return tuple(out)

    def rule(self, value: Any, path: Path, index: int, defaults: Defaults) -> Rule | None:
        r = self.mapping(value, path, "a rule (a mapping)")
        if r is None:
            return None
        self.keys(r, path, RULE_KEYS)
        name = self.string(r.get("name"), (*path, "name"))
        match = self.matcher(r.get("match"), (*path, "match"))
        ignore = self.boolean(r.get("ignore"), (*path, "ignore"), False)
        hooks: dict[str, tuple[Action, ...]] = {}
        has_mount = self._declares_mount(r.get("on_add"))
        for hook in HOOKS:
            hooks[hook] = self.actions(r.get(hook), (*path, hook), hook, defaults, has_mount)
            if ignore and r.get(hook):
                self.report((*path, hook), "an 'ignore: true' rule cannot have actions")
        mounts = [a for a in hooks["on_add"] if isinstance(a, MountAction)]
        if len(mounts) > 1:
            self.report((*path, "on_add"), "a rule can mount only once")
        line = self.doc.position(path)
        return Rule(
            index=index,
            name=name,
            match=match or All(()),
            ignore=ignore,
            on_add=hooks["on_add"],
            on_remove=hooks["on_remove"],
            on_resize=hooks["on_resize"],
            implied_unmount=self.boolean(
                r.get("implied_unmount"), (*path, "implied_unmount"), True
            ),
            line=line[0] if line else None,
        )

    @staticmethod
    def _declares_mount(on_add: Any) -> bool:
        return isinstance(on_add, list) and any(
            isinstance(a, dict) and "mount" in a for a in on_add
        )

    # --- matchers ------------------------------------------------------------------------

    def matcher(self, value: Any, path: Path) -> Matcher | None:
        m = self.mapping(value, path, "a mapping of conditions")
        if m is None:
            return None
        self.keys(m, path, MATCH_KEYS)
        items: list[Matcher] = []
        for key, raw in m.items():
            p = (*path, key)
            if key == "nsid":
                nsids = self.nsids(raw, p)
                if nsids:
                    items.append(Nsid(nsids))
            elif key in GLOB_KEYS:
                getter, casefold = GLOB_KEYS[key]
                pats = self.globs(raw, p)
                if pats is not None:
                    items.append(Glob(key, getter, pats, casefold))
            elif key in FLAG_KEYS:
                if not isinstance(raw, bool):
                    self.report(p, f"expected true or false, got {_kind(raw)}")
                else:
                    items.append(Flag(key, FLAG_KEYS[key], raw))
            elif key == "property":
                items.extend(self.properties(raw, p))
            elif key == "any":
                if not isinstance(raw, list) or not raw:
                    self.report(p, f"expected a non-empty list of conditions, got {_kind(raw)}")
                    continue
                alts = [self.matcher(alt, (*p, i)) for i, alt in enumerate(raw)]
                items.append(Any_(tuple(a for a in alts if a is not None)))
            elif key == "not":
                inner = self.matcher(raw, p)
                if inner is not None:
                    items.append(Not(inner))
        size = self.sizes(m, path)
        if size is not None:
            items.append(size)
        return All(tuple(items))

    def nsids(self, raw: Any, path: Path) -> frozenset[int] | None:
        values = raw if isinstance(raw, list) else [raw]
        out: set[int] = set()
        for i, v in enumerate(values):
            p = (*path, i) if isinstance(raw, list) else path
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 0xFFFFFFFE:
                self.report(p, f"expected a namespace ID (1..4294967294), got {_kind(v)}")
            else:
                out.add(v)
        if not values:
            self.report(path, "expected an nsid or a non-empty list of them")
        return frozenset(out) if len(out) and len(out) == len(set(values)) else None

    def properties(self, raw: Any, path: Path) -> list[Matcher]:
        props = self.mapping(raw, path, "a mapping of udev property name to glob")
        out: list[Matcher] = []
        for name, pat in (props or {}).items():
            if not _PROPERTY.match(name):
                self.report((*path, name), f"bad udev property name {name!r}", key=True)
                continue
            pats = self.globs(pat, (*path, name))
            if pats is not None:
                out.append(Property(name, pats))
        return out

    def sizes(self, m: dict[str, Any], path: Path) -> Size | None:
        bounds: dict[str, int | None] = {"size_min": None, "size_max": None}
        for key in bounds:
            if key in m:
                try:
                    bounds[key] = parse_size(m[key])
                except ValueError as exc:
                    self.report((*path, key), str(exc))
        lo, hi = bounds["size_min"], bounds["size_max"]
        if lo is not None and hi is not None and lo > hi:
            self.report((*path, "size_max"), "size_max is smaller than size_min")
        if lo is None and hi is None:
            return None
        return Size(lo, hi)

    # --- actions -------------------------------------------------------------------------

    def actions(
        self, value: Any, path: Path, hook: str, defaults: Defaults, has_mount: bool
    ) -> tuple[Action, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.report(path, f"expected a list of actions, got {_kind(value)}")
            return ()
        out: list[Action] = []
        for i, item in enumerate(value):
            action = self.action(item, (*path, i), hook, defaults, has_mount)
            if action is not None:
                out.append(action)
        return tuple(out)

    def action(
        self, value: Any, path: Path, hook: str, defaults: Defaults, has_mount: bool
    ) -> Action | None:
        if not isinstance(value, dict) or len(value) != 1:
            kinds = ", ".join(ACTION_KINDS)
            self.report(path, f"an action is a mapping with exactly one of: {kinds}")
            if isinstance(value, dict):
                self.keys(value, path, ACTION_KINDS)
            return None
        ((kind, body),) = value.items()
        p = (*path, kind)
        if kind not in ACTION_KINDS:
            self.keys(value, path, ACTION_KINDS)
            return None
        hooks = ACTION_HOOKS.get(kind)
        if hooks is not None and hook not in hooks:
            self.report(p, f"'{kind}' is only allowed in {' and '.join(hooks)}", key=True)
            return None
        b = self.mapping(body, p)
        if b is None:
            return None
        t = defaults.timeouts
        fields = FIELDS if has_mount else FIELDS - {"mountpoint"}
        if kind == "mount":
            return self.mount(b, p, defaults)
        if kind == "unmount":
            if not has_mount:
                self.report(p, "unmount needs a mount action in this rule's on_add", key=True)
            self.keys(b, p, UNMOUNT_KEYS)
            on_busy = b.get("on_busy", "signal")
            if on_busy not in ON_BUSY:
                self.report(
                    (*p, "on_busy"), f"expected one of {', '.join(ON_BUSY)}, got {_kind(on_busy)}"
                )
                on_busy = "signal"
            return UnmountAction(
                timeout=self.seconds(b.get("timeout"), (*p, "timeout"), t.unmount),
                on_busy=cast(OnBusy, on_busy),
                signal=self.signal(b.get("signal"), (*p, "signal"), "SIGTERM"),
                lazy_fallback=self.boolean(b.get("lazy_fallback"), (*p, "lazy_fallback"), True),
            )
        if kind == "exec":
            return self.exec_(b, p, t.exec, fields)
        if kind == "systemd":
            return self.systemd(b, p, t.systemd, fields)
        if kind == "signal":
            return self.signal_action(b, p, fields)
        self.keys(b, p, GROW_KEYS)
        return GrowAction(timeout=self.seconds(b.get("timeout"), (*p, "timeout"), t.grow))

    def mount(self, b: dict[str, Any], p: Path, defaults: Defaults) -> MountAction | None:
        self.keys(b, p, MOUNT_KEYS)
        root = defaults.mount_root
        path_value = b.get("path", root + "/{label}")
        tpl = self.template(path_value, (*p, "path"), FIELDS - {"mountpoint"})
        if tpl is not None and not self.mount_path_ok(tpl, root, (*p, "path")):
            tpl = None
        options = defaults.mount_options
        if "options" in b:
            options = self.options(b["options"], (*p, "options")) or options
        missing = [o for o in SAFETY_OPTIONS if o not in options]
        if missing:
            self.warn(
                (*p, "options"),
                f"mount options lack {', '.join(missing)}: device special files or setuid "
                "programs on a hot-plugged filesystem would be honoured",
            )
        fstype = self.string(b.get("fstype"), (*p, "fstype"))
        if fstype is not None and not _FSTYPE.match(fstype):
            self.report((*p, "fstype"), f"bad filesystem type {fstype!r}")
        elif fstype is not None and fstype not in defaults.allowed_filesystems:
            self.report(
                (*p, "fstype"),
                f"filesystem type {fstype!r} is not in defaults.allowed_filesystems "
                f"({', '.join(defaults.allowed_filesystems)})",
            )
        allow_existing = self.boolean(
            b.get("allow_existing_dir"), (*p, "allow_existing_dir"), False
        )
        if allow_existing:
            self.warn(
                (*p, "allow_existing_dir"),
                "mounts on an existing empty directory the agent did not create: make sure "
                "nobody but root can create directories below mount_root",
            )
        return MountAction(
            path=tpl or compile_template(root + "/{nsid}"),
            options=options,
            fstype=fstype,
            fsck=self.boolean(b.get("fsck"), (*p, "fsck"), False),
            read_only=self.boolean(b.get("read_only"), (*p, "read_only"), False),
            mode=self.mode(b.get("mode"), (*p, "mode")),
            owner=self.owner(b.get("owner"), (*p, "owner")),
            group=self.owner(b.get("group"), (*p, "group")),
            timeout=self.seconds(b.get("timeout"), (*p, "timeout"), defaults.timeouts.mount),
            allow_existing_dir=allow_existing,
        )

    def mount_path_ok(self, tpl: Template, root: str, path: Path) -> bool:
        probe = tpl.render({}, lambda _f, _v: "x")
        if not probe.startswith("/"):
            self.report(path, f"{tpl.source!r} is a relative path; mount paths are absolute")
            return False
        if any(part in (".", "..") for part in tpl.source.split("/")):
            self.report(path, f"{tpl.source!r} has . or .. components")
            return False
        if not _under(probe, root):
            self.report(path, f"{tpl.source!r} is not below mount_root {root}")
            return False
        if not tpl.fields:
            self.warn(path, "a fixed mount path: a second matching device will find it occupied")
        return True

    def mode(self, value: Any, path: Path) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value):
            return int(value, 8)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
            # YAML 1.1 reads an unquoted 0750 as octal already.
            return value
        self.report(path, f"expected an octal mode such as '0750', got {_kind(value)}")
        return None

    def owner(self, value: Any, path: Path) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and _USER_NAME.match(value):
            return value
        self.report(path, f"expected a user/group name or number, got {_kind(value)}")
        return None

    def exec_(
        self, b: dict[str, Any], p: Path, default_timeout: float, fields: frozenset[str]
    ) -> ExecAction | None:
        self.keys(b, p, EXEC_KEYS, required=("argv",))
        raw = b.get("argv")
        if "argv" in b and (not isinstance(raw, list) or not raw):
            hint = " (a list, never a shell string)" if isinstance(raw, str) else ""
            self.report((*p, "argv"), f"expected a non-empty list of arguments{hint}")
            raw = None
        argv: list[Template] = []
        for i, arg in enumerate(raw or []):
            ap = (*p, "argv", i)
            tpl = self.template(arg, ap, fields)
            if tpl is None:
                continue
            if i == 0 and (tpl.fields or not tpl.source.startswith("/")):
                self.report(ap, f"{tpl.source!r}: the program must be a fixed absolute path")
                continue
            argv.append(tpl)
        env: list[tuple[str, Template]] = []
        for name, val in (self.mapping(b.get("env"), (*p, "env")) or {}).items():
            if not _ENV_NAME.match(name):
                self.report((*p, "env", name), f"bad environment variable name {name!r}", key=True)
                continue
            tpl = self.template(val, (*p, "env", name), fields)
            if tpl is not None:
                env.append((name, tpl))
        user = self.owner(b.get("user"), (*p, "user"))
        if raw is None or len(argv) != len(raw):
            return None
        return ExecAction(
            argv=tuple(argv),
            env=tuple(env),
            timeout=self.seconds(b.get("timeout"), (*p, "timeout"), default_timeout),
            user=user,
        )

    def unit(self, value: Any, path: Path, fields: frozenset[str]) -> Template | None:
        tpl = self.template(value, path, fields)
        if tpl is None:
            return None
        try:
            check_unit_name(tpl.render({}, lambda _f, _v: "x"))
        except TemplateError as exc:
            self.report(path, str(exc))
            return None
        return tpl

    def systemd(
        self, b: dict[str, Any], p: Path, default_timeout: float, fields: frozenset[str]
    ) -> SystemdAction | None:
        self.keys(b, p, SYSTEMD_KEYS)
        verbs = [v for v in SYSTEMD_VERBS if v in b]
        if len(verbs) != 1:
            self.report(p, "expected exactly one of start, stop, restart, reload")
            return None
        verb = verbs[0]
        unit = self.unit(b[verb], (*p, verb), fields)
        timeout = self.seconds(b.get("timeout"), (*p, "timeout"), default_timeout)
        if unit is None:
            return None
        return SystemdAction(
            verb=cast(Literal["start", "stop", "restart", "reload"], verb),
            unit=unit,
            timeout=timeout,
        )

    def signal_action(
        self, b: dict[str, Any], p: Path, fields: frozenset[str]
    ) -> SignalAction | None:
        self.keys(b, p, SIGNAL_KEYS)
        sig = self.signal(b.get("signal"), (*p, "signal"), "SIGHUP")
        targets = [k for k in ("pidfile", "process", "unit") if k in b]
        if len(targets) != 1:
            self.report(p, "expected exactly one of pidfile, process, unit")
            return None
        pidfile = process = None
        unit: Template | None = None
        if "pidfile" in b:
            pidfile = self.abspath(b["pidfile"], (*p, "pidfile"), "an absolute pidfile path")
            if pidfile is None:
                return None
        elif "process" in b:
            process = self.string(b["process"], (*p, "process"), "a process name")
            if process is None or not process or "/" in process:
                if process is not None:
                    self.report((*p, "process"), "a process name has no '/' and is not empty")
                return None
        else:
            unit = self.unit(b["unit"], (*p, "unit"), fields)
            if unit is None:
                return None
        return SignalAction(signal=sig, pidfile=pidfile, process=process, unit=unit)


def compile_document(doc: Document) -> Policy:
    """Validate and compile ``doc``; raise :class:`PolicyError` listing every error."""
    return Compiler(doc).policy()
