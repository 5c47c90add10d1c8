"""The decision engine: ``decide(change, topology, policy) -> Plan``.  Pure: no I/O, no clock.

Semantics (also in the README):

* The target of a change is the partition for ``partition-*`` changes, else the whole disk.
* Rules are tried in order; the first that matches decides.  ``ignore: true`` stops with no
  actions.  No match: no actions (the change is still logged and streamed by the daemon).
* ``namespace-added`` / ``partition-added`` run ``on_add``; ``*-removed`` run ``on_remove``;
  ``namespace-resized`` runs ``on_resize``.  ``namespace-changed`` (e.g. a filesystem appeared
  on a blank namespace) runs ``on_add`` of the rule that matches now, unless the same rule
  matched before and the target was already as mountable as it is now.  When another rule
  matched before the change, that rule is undone first: its ``on_remove`` as for an eject
  (the device is still there, so its unmount is graceful, not a lazy detach), rendered from
  the namespace as it was.
* ``on_remove`` ends with an implied unmount of the rule's ``on_add`` mount (same path,
  rendered from the removed namespace's last snapshot) unless the rule says
  ``implied_unmount: false`` or has its own ``unmount`` action.  ``device_gone`` is false only
  for an operator eject (``reason == "eject"``).
* A mount is skipped (with a note) when the target has no mountable filesystem, e.g. a whole
  disk that only carries a partition table.
* ``path-added`` / ``path-lost`` (a controller more or fewer reaches a namespace that stays)
  run ``on_path_added`` / ``on_path_lost`` of the first matching rule that has such actions
  (an ``ignore: true`` rule that matches stops): hooks only, never a mount, unmount or grow,
  never an undo.  Device changes pass over path rules (rules with only path hooks); see
  ``Rule.tried_by``.  The target is the whole disk; the facts are the namespace's after the
  change, with the path's.
* A template that cannot be rendered safely makes the plan for an add, resize or path change
  *refuse*: no actions, and an explanation line starting with ``refused:``.  On a removal
  (and in the undo of a rule change) only the offending action is dropped, so that the
  unmount still happens.  ``decide`` does not raise.
* Never two mounts of one filesystem: an add whose mount would mount a filesystem UUID that
  another device of the snapshot carries is refused the same way (``duplicates`` says which
  device keeps it).
* Rules are tried with verdict-only matchers; the explanation says why the winner matched and
  how many rules before it did not.  ``explain=True`` (``nvme-agent explain``) also says why
  each earlier rule did not match, which costs a sentence per rule.
"""

from __future__ import annotations

import dataclasses
import os

from nvme_agent.policy.duplicates import mount_conflict
from nvme_agent.policy.explain import evaluate
from nvme_agent.policy.facts import Facts, facts_for
from nvme_agent.policy.plan import (
    ActionSpec,
    ExecSpec,
    GrowSpec,
    MountSpec,
    Plan,
    SignalSpec,
    SystemdSpec,
    UnmountSpec,
)
from nvme_agent.policy.spec import (
    PATH_HOOKS,
    Action,
    ExecAction,
    GrowAction,
    MountAction,
    Policy,
    Rule,
    SignalAction,
    SystemdAction,
    UnmountAction,
)
from nvme_agent.policy.templates import (
    Template,
    TemplateError,
    check_unit_name,
    component,
    systemd_escape,
)
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, RESIZE_KINDS, Change, ChangeType
from nvme_agent.topology.model import TopologySnapshot

#: Filesystems ``grow`` knows how to grow.
GROWABLE = frozenset({"ext4", "xfs"})
#: The hook of every change kind the policy acts on (controller changes have none).
HOOK_OF: dict[ChangeType, str] = {
    **dict.fromkeys(ADD_KINDS | {ChangeType.NAMESPACE_CHANGED}, "on_add"),
    **dict.fromkeys(REMOVE_KINDS, "on_remove"),
    **dict.fromkeys(RESIZE_KINDS, "on_resize"),
    ChangeType.PATH_ADDED: "on_path_added",
    ChangeType.PATH_LOST: "on_path_lost",
}
_PATH_KINDS = frozenset({ChangeType.PATH_ADDED, ChangeType.PATH_LOST})
_PATH_HOOKS = frozenset(PATH_HOOKS)
PATH_MAX = 4095
REFUSED = "refused: "


def plan_key(change: Change) -> str:
    """``<subsysnqn>#<nsid>``: shared by every plan about one namespace slot, so that the
    removal of an old namespace and the arrival of its replacement run in order."""
    if change.namespace is not None:
        return f"{change.namespace.subsysnqn or '?'}#{change.namespace.nsid}"
    if change.controller is not None:
        return f"ctrl:{change.controller.name}"
    return "unknown"


def mount_target(
    tpl: Template, facts: Facts, mount_root: str, values: dict[str, str] | None = None
) -> str:
    """Render a mount path: every value one safe component, the result below ``mount_root``.

    Raises :class:`TemplateError` if the result would escape (defence in depth: validation
    already checked the template's fixed parts).  ``values``: ``facts.template_values()``
    when the caller has them already.
    """
    values = facts.template_values() if values is None else values
    rendered = tpl.render(values, lambda _f, v: component(v, facts.fallback))
    target = os.path.normpath(rendered)
    root = os.path.normpath(mount_root)
    inside = root.rstrip("/") + "/"
    if not target.startswith(inside) or target == root:
        raise TemplateError(f"mount path {rendered!r} is not below {root}")
    if len(target.encode("utf-8", errors="surrogateescape")) > PATH_MAX:
        raise TemplateError(f"mount path for {facts.devname} is longer than {PATH_MAX} bytes")
    return target


#: The variables every ``exec`` hook gets besides ``PATH`` and ``LANG`` (the man page lists them
#: from here; a test checks that :func:`hook_env` sets these and no others).
HOOK_ENV: dict[str, str] = {
    "NVME_AGENT_EVENT": "the change: namespace-added, namespace-removed, namespace-resized, "
    "namespace-changed, partition-added, partition-removed, path-added, path-lost",
    "NVME_AGENT_RULE": "the rule's name (rules[INDEX] when it has none)",
    "NVME_AGENT_REASON": "why, when the change says (eject; while the agent was down)",
    "NVME_AGENT_COLDPLUG": "1 for a device found at start rather than by an event",
    "NVME_NSID": "the namespace ID",
    "NVME_CTRL": "the controller (nvme0)",
    "NVME_SUBSYSNQN": "the subsystem NQN",
    "NVME_SERIAL": "the controller's serial number",
    "NVME_MODEL": "the controller's model",
    "DEVNAME": "the block device (/dev/nvme0n1, /dev/nvme0n1p2)",
    "NVME_PARTN": "the partition number, for a partition",
    "MOUNTPOINT": "where the rule's mount action mounts (or mounted) the target",
    "NVME_NS_UUID": "the namespace UUID",
    "NVME_NS_NGUID": "the namespace NGUID",
    "NVME_NS_EUI64": "the namespace EUI-64",
    "NVME_NS_WWID": "the namespace WWID",
    "NVME_IDENTITY": "the namespace identity (uuid:..., wwid:..., ...)",
    "NVME_IDENTITY_WEAK": "1 when the identity cannot tell a swapped image from the old one",
    "ID_FS_TYPE": "the filesystem type",
    "ID_FS_LABEL": "the filesystem label",
    "ID_FS_UUID": "the filesystem UUID",
    "NVME_PATHS_LIVE": "how many of the namespace's paths are live (for a path change: after it)",
    "NVME_PATH_CTRL": "for path-added and path-lost: the controller of the path that came or went",
    "NVME_PATH_DEVICE": "that path's block device (nvme1n1, or a hidden nvme0c1n1), if seen",
    "NVME_PATH_TRANSPORT": "that path's transport (pcie, tcp, rdma, fc)",
    "NVME_PATH_ADDRESS": "that path's address (0000:01:00.0, traddr=...,trsvcid=...)",
    "NVME_PATH_STATE": "that path's controller state when the change was seen",
}


def hook_env(
    change: Change, facts: Facts, rule: Rule | None, mountpoint: str | None
) -> dict[str, str]:
    """The environment every ``exec`` hook of this plan gets (values raw, NUL removed): the
    :data:`HOOK_ENV` variables that have a value."""
    raw: dict[str, str | None] = {
        "NVME_AGENT_EVENT": str(change.type),  # the value; Enum.value is a slow property
        "NVME_AGENT_RULE": rule.ident if rule else None,
        "NVME_AGENT_REASON": change.reason,
        "NVME_AGENT_COLDPLUG": "1" if change.coldplug else None,
        "NVME_NSID": str(facts.nsid),
        "NVME_CTRL": facts.ctrl,
        "NVME_SUBSYSNQN": facts.subsysnqn,
        "NVME_SERIAL": facts.serial,
        "NVME_MODEL": facts.model,
        "DEVNAME": facts.devnode,
        "NVME_PARTN": None if facts.partn is None else str(facts.partn),
        "MOUNTPOINT": mountpoint,
        "NVME_NS_UUID": facts.uuid,
        "NVME_NS_NGUID": facts.nguid,
        "NVME_NS_EUI64": facts.eui64,
        "NVME_NS_WWID": facts.wwid,
        "NVME_IDENTITY": facts.identity,
        "NVME_IDENTITY_WEAK": "1" if facts.identity_weak else "0",
        "ID_FS_TYPE": facts.fs_type,
        "ID_FS_LABEL": facts.fs_label,
        "ID_FS_UUID": facts.fs_uuid,
        "NVME_PATHS_LIVE": str(facts.paths_live),
    }
    if facts.path:
        raw["NVME_PATH_CTRL"] = facts.path_ctrl
        raw["NVME_PATH_DEVICE"] = facts.path_device
        raw["NVME_PATH_TRANSPORT"] = facts.path_transport
        raw["NVME_PATH_ADDRESS"] = facts.path_address
        raw["NVME_PATH_STATE"] = facts.path_state
    env = {k: v for k, v in raw.items() if v is not None}
    if "\0" in "".join(env.values()):  # one look at all of them: NUL is rare
        env = {k: v.replace("\0", "") for k, v in env.items()}
    return env


class _Builder:
    """Turns one rule's action templates into specs for one target."""

    def __init__(
        self,
        change: Change,
        facts: Facts,
        rule: Rule,
        policy: Policy,
        topology: TopologySnapshot,
        *,
        device_gone: bool = False,
    ) -> None:
        self.change = change
        self.topology = topology
        self.facts = facts
        self.rule = rule
        self.policy = policy
        self.device_gone = device_gone
        self.root = policy.defaults.mount_root
        self.notes: list[str] = []
        self.values = facts.template_values()
        self.mountpoint: str | None = None
        self.mountpoint_error: str | None = None
        mount = rule.mount
        if mount is not None:
            try:
                self.mountpoint = mount_target(mount.path, facts, self.root, self.values)
            except TemplateError as exc:
                self.mountpoint_error = str(exc)
        self.mounted = False

    # value converters -----------------------------------------------------------------
    def _plain(self, fld: str, value: str) -> str:
        if fld == "mountpoint":
            if self.mountpoint is None:
                raise TemplateError(self.mountpoint_error or "this rule has no mount path")
            return self.mountpoint
        return component(value, self.facts.fallback)

    def _unit(self, fld: str, value: str) -> str:
        if fld == "mountpoint":
            return systemd_escape(self._plain(fld, value), path=True)
        return systemd_escape(component(value, self.facts.fallback))

    def render_unit(self, tpl: Template) -> str:
        unit = tpl.render(self.values, self._unit)
        check_unit_name(unit)
        return unit

    # actions ------------------------------------------------------------------------
    def build(self, action: Action) -> ActionSpec | None:
        """The spec for ``action``, or None (with a note) when it does not apply."""
        if isinstance(action, MountAction):
            return self.mount(action)
        if isinstance(action, UnmountAction):
            return self.unmount(action)
        if isinstance(action, ExecAction):
            return ExecSpec(
                argv=tuple(t.render(self.values, self._plain) for t in action.argv),
                env=tuple((k, t.render(self.values, self._plain)) for k, t in action.env),
                timeout=action.timeout,
                user=action.user,
            )
        if isinstance(action, SystemdAction):
            return SystemdSpec(action.verb, self.render_unit(action.unit), action.timeout)
        if isinstance(action, SignalAction):
            return SignalSpec(
                signal=action.signal,
                pidfile=action.pidfile,
                process=action.process,
                unit=self.render_unit(action.unit) if action.unit is not None else None,
            )
        return self.grow(action)

    def mount(self, action: MountAction) -> MountSpec | None:
        f = self.facts
        if not f.mountable:
            if f.fs_type:
                why = f"{f.fs_type} (usage {f.fs_usage}) is not a mountable filesystem"
            elif f.partition_table and not f.partition:
                why = (
                    f"the disk carries a {f.partition_table} partition table and no "
                    "filesystem; its partitions are matched on their own"
                )
            else:
                why = "no filesystem was detected"
            self.notes.append(f"mount skipped: {why}")
            return None
        allowed = self.policy.defaults.allowed_filesystems
        fstype = action.fstype or f.fs_type
        if fstype not in allowed:
            # The type is what the disk says; the kernel would load any module it names.
            raise TemplateError(
                f"filesystem type {fstype!r} is not in allowed_filesystems ({', '.join(allowed)})"
            )
        if self.mountpoint is None:
            raise TemplateError(self.mountpoint_error or "no mount path")
        if not f.devnode:
            raise TemplateError("the device has no device node")
        conflict = mount_conflict(self.change, f, self.topology)
        if conflict is not None:
            raise TemplateError(conflict)
        self.mounted = True
        ns = self.change.namespace
        return MountSpec(
            source=f.devnode,
            target=self.mountpoint,
            mount_root=self.root,
            fstype=fstype,
            options=action.options,
            fsck=action.fsck,
            read_only=action.read_only or bool(ns and ns.read_only),
            mode=action.mode,
            owner=action.owner,
            group=action.group,
            timeout=action.timeout,
            allowed_fstypes=allowed,
            allow_existing_dir=action.allow_existing_dir,
        )

    def unmount(self, action: UnmountAction) -> UnmountSpec | None:
        if not self.facts.devnode:
            self.notes.append("unmount skipped: the device had no device node")
            return None
        if self.mountpoint is None:
            # Still unmount: the runner finds what the agent mounted from this source.
            self.notes.append(f"unmount by source only: {self.mountpoint_error}")
        return UnmountSpec(
            source=self.facts.devnode,
            target=self.mountpoint,
            mount_root=self.root,
            device_gone=self.device_gone,
            timeout=action.timeout,
            on_busy=action.on_busy,
            signal=action.signal,
            lazy_fallback=action.lazy_fallback,
        )

    def grow(self, action: GrowAction) -> GrowSpec | None:
        f = self.facts
        if f.fs_type not in GROWABLE or not f.devnode:
            self.notes.append(f"grow skipped: filesystem {f.fs_type or 'none'} is not ext4 or xfs")
            return None
        if f.fs_type == "xfs" and self.mountpoint is None:
            self.notes.append(
                "grow skipped: xfs grows only while mounted, and this rule mounts nothing"
            )
            return None
        return GrowSpec(
            source=f.devnode, fstype=f.fs_type, target=self.mountpoint, timeout=action.timeout
        )


def _first(facts: Facts, rules: tuple[Rule, ...]) -> int:
    """The position of the first rule whose conditions hold, or -1 (verdicts only)."""
    for i, rule in enumerate(rules):
        if rule.holds(facts):
            return i
    return -1


def first_match(facts: Facts, policy: Policy, hook: str = "on_add") -> Rule | None:
    """The first rule a change with ``hook`` tries whose conditions hold (no explanation)."""
    rules = policy.tried[hook]
    i = _first(facts, rules)
    return rules[i] if i >= 0 else None


def _select(
    facts: Facts, policy: Policy, hook: str, explain: bool
) -> tuple[Rule | None, list[str]]:
    """The deciding rule and the explanation lines about the rules tried."""
    rules = policy.tried[hook]
    lines: list[str] = []
    passed = len(policy.rules) - len(rules)
    if passed and hook in _PATH_HOOKS:
        s = "" if passed == 1 else "s"
        lines.append(f"{passed} rule{s} without {hook} actions passed over")
    if explain:
        verdicts, rule = evaluate(facts, rules)
        return rule, lines + [v.line() for v in verdicts]
    i = _first(facts, rules)
    rule = rules[i] if i >= 0 else None
    before = len(rules) if i < 0 else i
    if before:
        s = "" if before == 1 else "s"
        lines.append(f"{before} rule{s} before did not match (nvme-agent explain says why)")
    if rule is not None:
        tail = " (ignore: true, nothing happens)" if rule.ignore else ""
        lines.append(f"{rule.label}: matched{tail}")
    return rule, lines


def decide(
    change: Change, topology: TopologySnapshot, policy: Policy, *, explain: bool = False
) -> Plan:
    """The plan for ``change``.  Never raises for device data; see the module docstring.

    ``explain``: also say why each rule before the deciding one did not match.
    """
    base = Plan(change=change, key=plan_key(change))
    ns = change.namespace
    if change.type in (ChangeType.CONTROLLER_ADDED, ChangeType.CONTROLLER_REMOVED):
        return _with(
            base, explanation=("controller changes have no policy hook: logged and streamed",)
        )
    if ns is None:
        return _with(
            base, explanation=("no namespace is known for this change: nothing to decide",)
        )
    hook = HOOK_OF.get(change.type)
    if hook is None:  # pragma: no cover - every namespace change kind has a hook
        return _with(base, explanation=(f"{change.type} has no policy hook",))
    facts = facts_for(ns, change.partition, topology, change.path)
    what = "partition" if facts.partition else "whole disk"
    lines = [f"target {facts.devnode or facts.devname} ({what}, {change.type})"]
    if change.path is not None:
        lines.append(_path_line(change, facts))
    rule, tried = _select(facts, policy, hook, explain)
    lines += tried
    if change.type == ChangeType.NAMESPACE_CHANGED:
        return _changed(base, topology, policy, facts, rule, lines)
    if rule is None:
        lines.append("no rule matched: the change is logged and streamed, nothing else happens")
        return _with(base, env=hook_env(change, facts, rule, None), explanation=tuple(lines))
    if rule.ignore:
        env = hook_env(change, facts, rule, None)
        return _with(base, rule=rule.ident, env=env, explanation=tuple(lines))
    removal = change.type in REMOVE_KINDS
    builder = _Builder(change, facts, rule, policy, topology, device_gone=change.reason != "eject")
    actions: tuple[Action, ...] = getattr(rule, hook)
    if hook in _PATH_HOOKS and not _allowed(rule, hook, actions, lines):
        env = hook_env(change, facts, rule, None)
        return _with(base, rule=rule.ident, env=env, explanation=tuple(lines))
    specs = _build(builder, _todo(rule, hook, actions, removal, policy), removal, lines)
    if specs is None:
        env = hook_env(change, facts, rule, None)
        return _with(base, rule=rule.ident, env=env, explanation=tuple(lines))
    lines.extend(builder.notes)
    # A removal's and a path change's hooks are told where the rule mounts (or mounted).
    keeps = removal or change.type in _PATH_KINDS
    mountpoint = builder.mountpoint if (builder.mounted or keeps) else None
    if not specs:
        lines.append(f"{rule.label} has no actions to run for {change.type}")
    return _with(
        base,
        rule=rule.ident,
        actions=tuple(specs),
        env=hook_env(change, facts, rule, mountpoint),
        explanation=tuple(lines),
    )


def _allowed(rule: Rule, hook: str, actions: tuple[Action, ...], lines: list[str]) -> bool:
    """Every action may run in ``hook``; else a ``refused:`` line.  The validator makes sure
    of it; a policy built by other means is refused here: a path change never mounts,
    unmounts or grows."""
    for i, action in enumerate(actions):
        if hook not in type(action).HOOKS:
            lines.append(f"{REFUSED}{rule.label} {hook}[{i}]: {action.kind} is not allowed there")
            return False
    return True


def _todo(
    rule: Rule, hook: str, actions: tuple[Action, ...], removal: bool, policy: Policy
) -> list[tuple[str, Action]]:
    """The actions of ``hook`` with where they come from; a removal ends with the implied
    unmount unless the rule says otherwise or unmounts itself."""
    todo: list[tuple[str, Action]] = [(f"{hook}[{i}]", a) for i, a in enumerate(actions)]
    if (
        removal
        and rule.implied_unmount
        and rule.mount is not None
        and not any(isinstance(a, UnmountAction) for a in actions)
    ):
        todo.append(("implied unmount", UnmountAction(timeout=policy.defaults.timeouts.unmount)))
    return todo


def _build(
    builder: _Builder, todo: list[tuple[str, Action]], removal: bool, lines: list[str]
) -> list[ActionSpec] | None:
    """The specs of ``todo``.  A template that cannot be rendered refuses the whole list
    (None, with a ``refused:`` line) unless ``removal``: then only that action is dropped."""
    specs: list[ActionSpec] = []
    for where, action in todo:
        try:
            spec = builder.build(action)
        except TemplateError as exc:
            if not removal:
                lines.append(f"{REFUSED}{builder.rule.label} {where} ({action.kind}): {exc}")
                return None
            lines.append(f"{where} ({action.kind}) dropped: {exc}")
            continue
        if spec is not None:
            specs.append(spec)
    return specs


def _changed(
    base: Plan,
    topology: TopologySnapshot,
    policy: Policy,
    facts: Facts,
    rule: Rule | None,
    lines: list[str],
) -> Plan:
    """The plan of a ``namespace-changed``: undo the rule that matched before (if another
    one), then ``on_add`` of the rule that matches now (if not already applied)."""
    change = base.change
    prev = change.previous
    prev_facts = facts_for(prev, None, topology) if prev is not None else None
    prev_rule = first_match(prev_facts, policy) if prev_facts is not None else None
    env = hook_env(change, facts, rule, None)
    if rule is not None and prev_rule is not None and prev_rule.index == rule.index:
        assert prev_facts is not None
        if not (facts.mountable and not prev_facts.mountable and rule.mount is not None):
            lines.append(f"{rule.label} already applied before this change: nothing to do")
            return _with(base, rule=rule.ident, env=env, explanation=tuple(lines))
        prev_rule = None
    specs: list[ActionSpec] = []
    if prev_rule is not None and not prev_rule.ignore and prev_facts is not None:
        specs += _undo(change, prev_facts, prev_rule, policy, topology, env, lines)
    mountpoint = None
    if rule is None:
        lines.append("no rule matches now: nothing is added")
    elif not rule.ignore:
        builder = _Builder(change, facts, rule, policy, topology)
        todo = _todo(rule, "on_add", rule.on_add, False, policy)
        added = _build(builder, todo, False, lines)
        if added is not None:
            lines.extend(builder.notes)
            specs += added
            mountpoint = builder.mountpoint if builder.mounted else None
    if not specs:
        lines.append(f"nothing to run for {change.type}")
    return _with(
        base,
        rule=rule.ident if rule is not None else None,
        actions=tuple(specs),
        env=hook_env(change, facts, rule, mountpoint),
        explanation=tuple(lines),
    )


def _undo(
    change: Change,
    prev_facts: Facts,
    prev_rule: Rule,
    policy: Policy,
    topology: TopologySnapshot,
    env: dict[str, str],
    lines: list[str],
) -> list[ActionSpec]:
    """``prev_rule``'s on_remove for a device that is still there (graceful unmount), with
    its hooks seeing the namespace and the rule as they were."""
    builder = _Builder(change, prev_facts, prev_rule, policy, topology, device_gone=False)
    todo = _todo(prev_rule, "on_remove", prev_rule.on_remove, True, policy)
    if not prev_facts.mountable:
        todo = [(w, a) for w, a in todo if not isinstance(a, UnmountAction)]
    if not todo:
        lines.append(f"{prev_rule.label} matched before this change: nothing of it to undo")
        return []
    lines.append(
        f"{prev_rule.label} matched before this change: undoing it first "
        "(its on_remove, graceful unmount)"
    )
    specs = _build(builder, todo, True, lines) or []
    lines.extend(builder.notes)
    undo_env = hook_env(change, prev_facts, prev_rule, builder.mountpoint)
    # A hook of the old rule sees the old rule and namespace, not the new ones of the plan.
    own = {**{k: "" for k in env}, **undo_env}
    pairs = tuple(sorted(own.items()))
    return [
        dataclasses.replace(s, env=pairs + s.env) if isinstance(s, ExecSpec) else s for s in specs
    ]


def _path_line(change: Change, facts: Facts) -> str:
    """What a path change is about, for the explanation (the values are kernel data)."""
    lost = "lost" if change.type == ChangeType.PATH_LOST else "added"
    shown = [f"{facts.path_transport or '?'}"]
    if facts.path_address:
        shown.append(facts.path_address)
    if facts.path_state:
        shown.append(f"state {facts.path_state}")
    left = "s" if facts.paths_live != 1 else ""
    return (
        f"path {lost}: {facts.path_ctrl or '?'} ({', '.join(shown)}); "
        f"{facts.paths_live} live path{left} now"
    )


def _with(
    base: Plan,
    *,
    rule: str | None = None,
    actions: tuple[ActionSpec, ...] = (),
    env: dict[str, str] | None = None,
    explanation: tuple[str, ...] = (),
) -> Plan:
    return Plan(
        change=base.change,
        key=base.key,
        rule=rule,
        actions=actions,
        env=tuple(sorted((env or {}).items())),
        explanation=explanation,
    )
