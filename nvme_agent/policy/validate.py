"""Validation and compilation of a parsed policy document into a :class:`Policy`.

One pass over the data checks shape (unknown keys, wrong types, as ``schema.json`` does for
editors) and meaning (globs, units, absolute paths, signal names, mount paths under the mount
root, templates) and compiles at the same time.  Every problem is collected, with the
position and key path of the offending node, so an operator sees all of them at once.

The key tables below are derived from the dataclasses of :mod:`nvme_agent.policy.spec`, and
so are the defaults: a key is added, renamed or documented there and nowhere else.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Literal, cast

from nvme_agent.policy.checks import Checker, canonical_signal, kind_of
from nvme_agent.policy.errors import PolicyError
from nvme_agent.policy.loader import Document, Path
from nvme_agent.policy.shapes import ON_BUSY_CHOICES, Shape
from nvme_agent.policy.spec import (
    ACTION_TYPES,
    PATH_HOOKS,
    Action,
    Defaults,
    ExecAction,
    GrowAction,
    Match,
    MountAction,
    OnBusy,
    Policy,
    Rule,
    SignalAction,
    SystemdAction,
    Timeouts,
    UnmountAction,
    default_of,
    key_names,
    keys_of,
)
from nvme_agent.policy.templates import (
    FIELDS,
    PATH_FIELDS,
    Template,
    TemplateError,
    check_unit_name,
)
from nvme_agent.policy.units import parse_size

__all__ = ["canonical_signal", "compile_document", "mount_root_problem"]

TOP_KEYS = key_names(Policy)
DEFAULT_KEYS = key_names(Defaults)
TIMEOUT_KEYS = key_names(Timeouts)
RULE_KEYS = key_names(Rule)
MATCH_KEYS = key_names(Match)
_RULE_DEFAULTS = {k.name: k.default for k in keys_of(Rule) if k.has_default}
_MATCH_INDEX = {k.name: k for k in keys_of(Match)}
HOOKS = Rule.HOOKS
ACTION_KINDS = tuple(cls.KIND for cls in ACTION_TYPES)
#: Which hooks each action kind may appear in.
ACTION_HOOKS: dict[str, tuple[str, ...]] = {cls.KIND: cls.HOOKS for cls in ACTION_TYPES}
MOUNT_KEYS = key_names(MountAction)
UNMOUNT_KEYS = key_names(UnmountAction)
EXEC_KEYS = key_names(ExecAction)
SYSTEMD_VERBS = SystemdAction.ONE_OF
SYSTEMD_KEYS = key_names(SystemdAction)
SIGNAL_KEYS = key_names(SignalAction)
SIGNAL_TARGETS = SignalAction.ONE_OF
GROW_KEYS = key_names(GrowAction)
REQUIRED_EXEC = tuple(k.name for k in keys_of(ExecAction) if k.required)
_Verb = Literal["start", "stop", "restart", "reload"]
#: Template fields of device data (``mountpoint`` is only there in rules that mount, the
#: ``path_*`` fields only in path hooks).
_DEVICE_FIELDS = FIELDS - {"mountpoint"} - PATH_FIELDS
#: Template fields of an action by (its rule mounts, it is in a path hook).
_FIELDS_IN = {
    (mounts, path): FIELDS
    - ({"mountpoint"} if not mounts else set())
    - (PATH_FIELDS if not path else set())
    for mounts in (False, True)
    for path in (False, True)
}
#: Why a field is not known where it is not (the rest are unknown everywhere).
_NOT_HERE = {
    "mountpoint": "only a rule with a mount action has one (outside its mount path)",
    **dict.fromkeys(PATH_FIELDS, "only on_path_added and on_path_lost have a path"),
}
#: Match keys whose value changes while a namespace stays (its number of live paths).
_PATH_COUNT_KEYS = tuple(k.name for k in keys_of(Match) if k.fact == "paths_live")
#: (low, high) key pairs of a range: the low bound may not exceed the high one.
_BOUNDS = tuple(
    (k.name, k.name[: -len("_min")] + "_max")
    for k in keys_of(Match)
    if k.shape in (Shape.SIZE, Shape.COUNT) and k.name.endswith("_min")
)


def _uses(match: Match, attr: str) -> bool:
    """``match`` (or a mapping under its any: or not:) sets the condition ``attr``."""
    if getattr(match, attr) is not None:
        return True
    if match.not_ is not None and _uses(match.not_, attr):
        return True
    return any(_uses(m, attr) for m in match.any)


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


def mount_root_problem(root: str) -> str | None:
    """Why ``root`` (normalised, absolute) cannot be a mount root, or None."""
    if "{" in root or "}" in root:
        # Mount paths are templates below the root: a brace in it would be a field.
        return f"mount_root {root} has {{ or }}: it is a directory, not a template"
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
    if path == root:
        return False
    if path[:1] == root[:1] == "/" and path[:2] != "//" and root[:2] != "//":
        # what commonpath says of two normal absolute paths, at a fraction of its cost (once
        # per mount path of a policy)
        return root == "/" or path.startswith(root + "/")
    return os.path.commonpath([path, root]) == root


def _probe(_field: str, _value: str) -> str:
    return "x"


# The two checks below are pure functions of a template, cached: a large policy repeats the
# same few mount paths and unit names, and rendering and path arithmetic cost more than that.


@functools.lru_cache(maxsize=4096)
def mount_path_verdict(tpl: Template, root: str) -> tuple[str | None, str | None]:
    """(why ``tpl`` cannot be a mount path below ``root``, a warning about it), each or None."""
    probe = tpl.render({}, _probe)
    if not probe.startswith("/"):
        return f"{tpl.source!r} is a relative path; mount paths are absolute", None
    if any(part in (".", "..") for part in tpl.source.split("/")):
        return f"{tpl.source!r} has . or .. components", None
    if not _under(probe, root):
        return f"{tpl.source!r} is not below mount_root {root}", None
    if not tpl.fields:
        return None, "a fixed mount path: a second matching device will find it occupied"
    return None, None


@functools.lru_cache(maxsize=4096)
def unit_problem(tpl: Template) -> str | None:
    """Why ``tpl`` cannot render a valid unit name, or None."""
    try:
        check_unit_name(tpl.render({}, _probe))
    except TemplateError as exc:
        return str(exc)
    return None


def _frozen(value: Any) -> str:
    """A key for parsed YAML that tells apart what compiles differently (``1``, ``true``,
    ``1.0`` and ``'1'`` are equal or alike in Python, not in a policy): its ``repr``, which for
    what a YAML document holds (dicts, lists, str, int, float, bool, None, dates, bytes)
    names the type of every value."""
    return repr(value)


class Compiler(Checker):
    """Builds the :class:`Policy`, reporting problems as it goes."""

    not_here = _NOT_HERE

    def __init__(self, doc: Document) -> None:
        super().__init__(doc)
        self.known_actions: dict[Any, Action] = {}

    def policy(self, digest: str = "") -> Policy:
        data = self.doc.data
        if data is None and not self.issues:
            self.report((), "the policy is empty; it needs at least 'version: 1'")
        top = self.mapping(data, (), "a mapping with version, defaults and rules") if data else None
        top = top or {}
        required = tuple(k.name for k in keys_of(Policy) if k.required)
        self.keys(top, (), TOP_KEYS, required=required if data else ())
        version = top.get("version", 1)
        if "version" in top and (version != 1 or isinstance(version, bool)):
            self.report(
                ("version",), f"unsupported version {version!r}; this agent reads version 1"
            )
        defaults = self.defaults(top.get("defaults"), ("defaults",))
        rules = self.rules(top.get("rules"), ("rules",), defaults)
        # Report in file order; issues without a position (inline mappings) keep their order.
        self.issues.sort(key=lambda i: (i.line or 0, i.column or 0))
        if any(i.severity == "error" for i in self.issues):
            raise PolicyError(self.issues)
        return Policy(
            version=1,
            defaults=defaults,
            rules=rules,
            source=self.doc.origin,
            warnings=tuple(i for i in self.issues if i.severity == "warning"),
            digest=digest,
        )

    # --- defaults ----------------------------------------------------------------------

    def defaults(self, value: Any, path: Path) -> Defaults:
        d = self.mapping(value, path)
        if d is None:
            return Defaults()
        self.keys(d, path, DEFAULT_KEYS)
        options = default_of(Defaults, "mount_options")
        if "mount_options" in d:
            options = self.options(d["mount_options"], (*path, "mount_options")) or options
        return Defaults(
            mount_root=self.mount_root(d, path),
            mount_options=options,
            timeouts=self.timeouts(d.get("timeouts"), (*path, "timeouts")),
            reconcile_on_reload=self.opt_bool(
                d, path, "reconcile_on_reload", default_of(Defaults, "reconcile_on_reload")
            ),
            unmount_on_stop=self.opt_bool(
                d, path, "unmount_on_stop", default_of(Defaults, "unmount_on_stop")
            ),
            allowed_filesystems=self.filesystems(
                d.get("allowed_filesystems"),
                (*path, "allowed_filesystems"),
                default_of(Defaults, "allowed_filesystems"),
            ),
            admin_group=self.opt_owner(d, path, "admin_group"),
        )

    def mount_root(self, d: dict[str, Any], path: Path) -> str:
        root: str = default_of(Defaults, "mount_root")
        if "mount_root" not in d:
            return root
        given = self.abspath(d["mount_root"], (*path, "mount_root"))
        if given is None:
            return root
        norm = os.path.normpath(given)
        problem = mount_root_problem(norm)
        if problem:
            self.report((*path, "mount_root"), problem)
            return root
        return norm

    def timeouts(self, value: Any, path: Path) -> Timeouts:
        t = self.mapping(value, path) or {}
        self.keys(t, path, TIMEOUT_KEYS)
        return Timeouts(
            **{
                k.attr: self.seconds(t.get(k.name), (*path, k.name), k.default)
                for k in keys_of(Timeouts)
            }
        )

    # --- rules -------------------------------------------------------------------------

    def rules(self, value: Any, path: Path, defaults: Defaults) -> tuple[Rule, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.report(path, f"expected a list of rules, got {kind_of(value)}")
            return ()
        out: list[Rule] = []
        names: dict[str, int] = {}
        catch_all: dict[str, int] = {}  # hook -> the first rule it tries that matches everything
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
            hooks = [h for h in HOOKS if rule.tried_by(h)]
            if all(h in catch_all for h in hooks):
                first = catch_all[hooks[0]]
                self.warn(rp, f"unreachable: rules[{first}] before it matches every device")
            elif isinstance(item, dict) and not item.get("match"):
                for h in hooks:
                    catch_all.setdefault(h, i)
            out.append(rule)
        return tuple(out)

    def rule(self, value: Any, path: Path, index: int, defaults: Defaults) -> Rule | None:
        r = self.mapping(value, path, "a rule (a mapping)")
        if r is None:
            return None
        self.keys(r, path, RULE_KEYS)
        ignore = self.opt_bool(r, path, "ignore", _RULE_DEFAULTS["ignore"])
        has_mount = self._declares_mount(r.get("on_add"))
        hooks: dict[str, tuple[Action, ...]] = dict.fromkeys(HOOKS, ())
        for hook in HOOKS:
            given = r.get(hook)
            if given is None:  # most rules leave most hooks out
                continue
            hooks[hook] = self.actions(given, (*path, hook), hook, defaults, has_mount)
            if ignore and given:
                self.report((*path, hook), "an 'ignore: true' rule cannot have actions")
        if sum(isinstance(a, MountAction) for a in hooks["on_add"]) > 1:
            self.report((*path, "on_add"), "a rule can mount only once")
        line = self.doc.position(path)
        rule = Rule(
            index=index,
            name=self.opt_string(r, path, "name"),
            match=self.matcher(r.get("match"), (*path, "match")) or Match(),
            ignore=ignore,
            on_add=hooks["on_add"],
            on_remove=hooks["on_remove"],
            on_resize=hooks["on_resize"],
            on_path_added=hooks["on_path_added"],
            on_path_lost=hooks["on_path_lost"],
            implied_unmount=self.opt_bool(
                r, path, "implied_unmount", _RULE_DEFAULTS["implied_unmount"]
            ),
            line=line[0] if line else None,
        )
        if "match" in r:
            self.path_count_drift(rule, (*path, "match"))
        return rule

    def path_count_drift(self, rule: Rule, path: Path) -> None:
        """Warn about a device rule chosen by the number of live paths: that number changes
        while a namespace stays, so its removal may be decided by another rule."""
        if rule.path_only:
            return
        used = [k for k in _PATH_COUNT_KEYS if _uses(rule.match, k)]
        if used:
            self.warn(
                path,
                f"{' and '.join(used)} in a rule for device changes: the number of live paths "
                "changes while a namespace stays, so this rule can stop matching a namespace it "
                "handled and another rule decides its removal (a mount may not be undone); use "
                "it in a rule with only on_path_added/on_path_lost actions",
            )

    @staticmethod
    def _declares_mount(on_add: Any) -> bool:
        return isinstance(on_add, list) and any(
            isinstance(a, dict) and "mount" in a for a in on_add
        )

    # --- matchers ------------------------------------------------------------------------

    def matcher(self, value: Any, path: Path) -> Match | None:
        m = self.mapping(value, path, "a mapping of conditions")
        if m is None:
            return None
        self.keys(m, path, MATCH_KEYS)
        given: dict[str, Any] = {}
        for name, raw in m.items():
            info = _MATCH_INDEX.get(name)
            if info is not None:
                checked = self.condition(info.shape, raw, (*path, name))
                if checked is not None:
                    given[info.attr] = checked
        for low, high in _BOUNDS:
            lo, hi = given.get(low), given.get(high)
            if lo is not None and hi is not None and lo > hi:
                self.report((*path, high), f"{high} is smaller than {low}")
        return Match(**given)

    def condition(self, shape: Shape, raw: Any, p: Path) -> Any:
        """The checked value of one condition, or None (reported)."""
        if shape is Shape.GLOBS:
            return self.globs(raw, p)
        if shape is Shape.BOOL:
            if not isinstance(raw, bool):
                self.report(p, f"expected true or false, got {kind_of(raw)}")
                return None
            return raw
        if shape is Shape.NSIDS:
            return self.nsids(raw, p)
        if shape is Shape.SIZE:
            try:
                return parse_size(raw)
            except ValueError as exc:
                self.report(p, str(exc))
                return None
        if shape is Shape.COUNT:
            return self.count(raw, p)
        if shape is Shape.PROPERTIES:
            return self.properties(raw, p)
        if shape is Shape.MATCH_LIST:
            if not isinstance(raw, list) or not raw:
                self.report(p, f"expected a non-empty list of conditions, got {kind_of(raw)}")
                return None
            alts = [self.matcher(alt, (*p, i)) for i, alt in enumerate(raw)]
            return tuple(a for a in alts if a is not None)
        return self.matcher(raw, p)  # Shape.MATCH: not

    # --- actions -------------------------------------------------------------------------

    def actions(
        self, value: Any, path: Path, hook: str, defaults: Defaults, has_mount: bool
    ) -> tuple[Action, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.report(path, f"expected a list of actions, got {kind_of(value)}")
            return ()
        out: list[Action] = []
        for i, item in enumerate(value):
            action = self.cached_action(item, (*path, i), hook, defaults, has_mount)
            if action is not None:
                out.append(action)
        return tuple(out)

    def cached_action(
        self, value: Any, path: Path, hook: str, defaults: Defaults, has_mount: bool
    ) -> Action | None:
        """:meth:`action`, compiled once per distinct action text of the policy.

        Generated policies repeat the same few actions in hundreds of rules.  An action that
        compiled without a problem compiles to the same value wherever it appears (the
        defaults are the policy's, the hook and whether the rule mounts are in the key), so it
        is shared; one with a problem is compiled again where it appears, to be reported there.
        """
        key = (_frozen(value), hook, has_mount)
        found = self.known_actions.get(key)
        if found is not None:
            return found
        before = len(self.issues)
        action = self.action(value, path, hook, defaults, has_mount)
        if action is not None and len(self.issues) == before:
            self.known_actions[key] = action
        return action

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
        if kind not in ACTION_HOOKS:
            self.keys(value, path, ACTION_KINDS)
            return None
        hooks = ACTION_HOOKS[kind]
        if hook not in hooks:
            why = ": a path change runs hooks only" if hook in PATH_HOOKS else ""
            self.report(p, f"'{kind}' is only allowed in {' and '.join(hooks)}{why}", key=True)
            return None
        b = self.mapping(body, p)
        if b is None:
            return None
        fields = _FIELDS_IN[has_mount, hook in PATH_HOOKS]
        if kind == "mount":
            return self.mount(b, p, defaults)
        if kind == "unmount":
            return self.unmount(b, p, defaults.timeouts, has_mount)
        if kind == "exec":
            return self.exec_(b, p, defaults.timeouts.exec, fields)
        if kind == "systemd":
            return self.systemd(b, p, defaults.timeouts.systemd, fields)
        if kind == "signal":
            return self.signal_action(b, p, fields)
        self.keys(b, p, GROW_KEYS)
        return GrowAction(timeout=self.opt_seconds(b, p, "timeout", defaults.timeouts.grow))

    def unmount(
        self, b: dict[str, Any], p: Path, timeouts: Timeouts, has_mount: bool
    ) -> UnmountAction:
        if not has_mount:
            self.report(p, "unmount needs a mount action in this rule's on_add", key=True)
        self.keys(b, p, UNMOUNT_KEYS)
        on_busy = b.get("on_busy", default_of(UnmountAction, "on_busy"))
        if on_busy not in ON_BUSY_CHOICES:
            self.report(
                (*p, "on_busy"),
                f"expected one of {', '.join(ON_BUSY_CHOICES)}, got {kind_of(on_busy)}",
            )
            on_busy = default_of(UnmountAction, "on_busy")
        return UnmountAction(
            timeout=self.opt_seconds(b, p, "timeout", timeouts.unmount),
            on_busy=cast(OnBusy, on_busy),
            signal=self.opt_signal(b, p, "signal", default_of(UnmountAction, "signal")),
            lazy_fallback=self.opt_bool(
                b, p, "lazy_fallback", default_of(UnmountAction, "lazy_fallback")
            ),
        )

    def mount(self, b: dict[str, Any], p: Path, defaults: Defaults) -> MountAction | None:
        self.keys(b, p, MOUNT_KEYS)
        root = defaults.mount_root
        tpl = self.template(b.get("path", root + "/{label}"), (*p, "path"), _DEVICE_FIELDS)
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
        allow_existing = self.opt_bool(
            b, p, "allow_existing_dir", default_of(MountAction, "allow_existing_dir")
        )
        if allow_existing:
            self.warn(
                (*p, "allow_existing_dir"),
                "mounts on an existing empty directory the agent did not create: make sure "
                "nobody but root can create directories below mount_root",
            )
        fields: dict[str, Any] = {
            "options": options,
            "fstype": self.allowed_fstype(b["fstype"], (*p, "fstype"), defaults)
            if "fstype" in b
            else None,
            "fsck": self.opt_bool(b, p, "fsck", default_of(MountAction, "fsck")),
            "read_only": self.opt_bool(b, p, "read_only", default_of(MountAction, "read_only")),
            "mode": self.opt_mode(b, p, "mode"),
            "owner": self.opt_owner(b, p, "owner"),
            "group": self.opt_owner(b, p, "group"),
            "timeout": self.opt_seconds(b, p, "timeout", defaults.timeouts.mount),
            "allow_existing_dir": allow_existing,
        }
        # Without a usable path the policy is invalid (reported); the rest was checked anyway.
        return None if tpl is None else MountAction(path=tpl, **fields)

    def allowed_fstype(self, value: Any, path: Path, defaults: Defaults) -> str | None:
        fstype = self.fstype(value, path)
        if fstype is not None and fstype not in defaults.allowed_filesystems:
            self.report(
                path,
                f"filesystem type {fstype!r} is not in defaults.allowed_filesystems "
                f"({', '.join(defaults.allowed_filesystems)})",
            )
        return fstype

    def mount_path_ok(self, tpl: Template, root: str, path: Path) -> bool:
        problem, warning = mount_path_verdict(tpl, root)
        if problem is not None:
            self.report(path, problem)
            return False
        if warning is not None:
            self.warn(path, warning)
        return True

    def exec_(
        self, b: dict[str, Any], p: Path, default_timeout: float, fields: frozenset[str]
    ) -> ExecAction | None:
        self.keys(b, p, EXEC_KEYS, required=REQUIRED_EXEC)
        raw = b.get("argv")
        if "argv" in b and (not isinstance(raw, list) or not raw):
            hint = " (a list, never a shell string)" if isinstance(raw, str) else ""
            self.report((*p, "argv"), f"expected a non-empty list of arguments{hint}")
            raw = None
        argv = [self.argument(i, arg, (*p, "argv", i), fields) for i, arg in enumerate(raw or [])]
        env: list[tuple[str, Template]] = []
        for name, val in (self.mapping(b.get("env"), (*p, "env")) or {}).items():
            if not self.env_name(name, (*p, "env", name)):
                continue
            tpl = self.template(val, (*p, "env", name), fields)
            if tpl is not None:
                env.append((name, tpl))
        user = self.opt_owner(b, p, "user")
        checked = tuple(a for a in argv if a is not None)
        if raw is None or len(checked) != len(raw):
            return None
        return ExecAction(
            argv=checked,
            env=tuple(env),
            timeout=self.opt_seconds(b, p, "timeout", default_timeout),
            user=user,
        )

    def argument(self, i: int, arg: Any, ap: Path, fields: frozenset[str]) -> Template | None:
        tpl = self.template(arg, ap, fields)
        if tpl is not None and i == 0 and (tpl.fields or not tpl.source.startswith("/")):
            self.report(ap, f"{tpl.source!r}: the program must be a fixed absolute path")
            return None
        return tpl

    def unit(self, value: Any, path: Path, fields: frozenset[str]) -> Template | None:
        tpl = self.template(value, path, fields)
        if tpl is None:
            return None
        problem = unit_problem(tpl)
        if problem is not None:
            self.report(path, problem)
            return None
        return tpl

    def systemd(
        self, b: dict[str, Any], p: Path, default_timeout: float, fields: frozenset[str]
    ) -> SystemdAction | None:
        self.keys(b, p, SYSTEMD_KEYS)
        verbs = [v for v in SYSTEMD_VERBS if v in b]
        if len(verbs) != 1:
            self.report(p, f"expected exactly one of {', '.join(SYSTEMD_VERBS)}")
            return None
        verb = cast(_Verb, verbs[0])
        unit = self.unit(b[verb], (*p, verb), fields)
        timeout = self.opt_seconds(b, p, "timeout", default_timeout)
        if unit is None:
            return None
        given: dict[str, Any] = {verb: unit, "timeout": timeout}
        return SystemdAction(**given)

    def signal_action(
        self, b: dict[str, Any], p: Path, fields: frozenset[str]
    ) -> SignalAction | None:
        self.keys(b, p, SIGNAL_KEYS)
        sig = self.opt_signal(b, p, "signal", default_of(SignalAction, "signal"))
        targets = [k for k in SIGNAL_TARGETS if k in b]
        if len(targets) != 1:
            self.report(p, f"expected exactly one of {', '.join(SIGNAL_TARGETS)}")
            return None
        if "pidfile" in b:
            pidfile = self.abspath(b["pidfile"], (*p, "pidfile"), "an absolute pidfile path")
            return None if pidfile is None else SignalAction(signal=sig, pidfile=pidfile)
        if "process" in b:
            process = self.string(b["process"], (*p, "process"), "a process name")
            if process is not None and (not process or "/" in process):
                self.report((*p, "process"), "a process name has no '/' and is not empty")
                return None
            return None if process is None else SignalAction(signal=sig, process=process)
        unit = self.unit(b["unit"], (*p, "unit"), fields)
        return None if unit is None else SignalAction(signal=sig, unit=unit)


def compile_document(doc: Document, digest: str = "") -> Policy:
    """Validate and compile ``doc`` (``digest``: of the text it was parsed from); raise
    :class:`PolicyError` listing every error."""
    return Compiler(doc).policy(digest)
