"""Which rule matches a target, and why each earlier one does not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvme_agent.policy.facts import Facts, facts_for
from nvme_agent.policy.plan import (
    ActionSpec,
    ExecSpec,
    MountSpec,
    SignalSpec,
    SystemdSpec,
    UnmountSpec,
)
from nvme_agent.policy.spec import Policy, Rule
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import TopologySnapshot


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """The outcome of testing one rule: ``matched`` and the reason in words."""

    index: int
    name: str | None
    matched: bool
    reason: str
    ignore: bool = False

    @property
    def label(self) -> str:
        return f"rules[{self.index}]" + (f" {self.name!r}" if self.name else "")

    def line(self) -> str:
        if self.matched:
            tail = " (ignore: true, nothing happens)" if self.ignore else ""
            return f"{self.label}: matched{tail}: {self.reason}"
        return f"{self.label}: no: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "matched": self.matched,
            "ignore": self.ignore,
            "reason": self.reason,
        }


def evaluate(facts: Facts, rules: tuple[Rule, ...]) -> tuple[list[RuleVerdict], Rule | None]:
    """Test ``rules`` in order until one matches: the verdicts so far and the winner (or None)."""
    verdicts: list[RuleVerdict] = []
    for rule in rules:
        ok, reason = rule.matcher.test(facts)
        verdicts.append(RuleVerdict(rule.index, rule.name, ok, reason, rule.ignore and ok))
        if ok:
            return verdicts, rule
    return verdicts, None


#: The hook of a path change; every other namespace change tries the rules of device changes.
_PATH_HOOK = {ChangeType.PATH_ADDED: "on_path_added", ChangeType.PATH_LOST: "on_path_lost"}


def explain(change: Change, topology: TopologySnapshot, policy: Policy) -> list[RuleVerdict]:
    """Verdicts for the target of ``change``: every rule it tries up to and including the
    first match (a path change passes over the rules without actions for it, a device change
    over path rules).

    Empty for changes that have no namespace (controller changes): no rule applies to them.
    """
    ns = change.namespace
    if ns is None:
        return []
    rules = policy.tried[_PATH_HOOK.get(change.type, "on_add")]
    verdicts, _ = evaluate(facts_for(ns, change.partition, topology, change.path), rules)
    return verdicts


def describe_action(spec: ActionSpec) -> str:
    """One readable line for an action spec (``explain`` and ``simulate`` output)."""
    if isinstance(spec, MountSpec):
        extra = [spec.fstype or "auto", ",".join(spec.options) or "-"]
        if spec.read_only:
            extra.append("read-only")
        if spec.fsck:
            extra.append("fsck first")
        if spec.mode is not None:
            extra.append(f"mode {spec.mode:04o}")
        if spec.owner or spec.group:
            extra.append(f"owner {spec.owner or '-'}:{spec.group or '-'}")
        return f"mount {spec.source} on {spec.target} ({'; '.join(extra)})"
    if isinstance(spec, UnmountSpec):
        how = (
            "device gone: lazy detach" if spec.device_gone else f"graceful, on busy: {spec.on_busy}"
        )
        return f"unmount {spec.target or '(what was mounted from ' + spec.source + ')'} ({how})"
    if isinstance(spec, ExecSpec):
        env = "".join(f" {k}={v!r}" for k, v in spec.env)
        user = f" as {spec.user}" if spec.user else ""
        return f"exec {list(spec.argv)!r}{env}{user} (timeout {spec.timeout:g}s)"
    if isinstance(spec, SystemdSpec):
        return f"systemctl {spec.verb} {spec.unit}"
    if isinstance(spec, SignalSpec):
        who = (
            f"pidfile {spec.pidfile}"
            if spec.pidfile
            else f"process {spec.process}"
            if spec.process
            else f"main PID of {spec.unit}"
        )
        return f"signal {spec.signal} to {who}"
    return f"grow {spec.fstype} on {spec.source}" + (
        f" (mounted at {spec.target})" if spec.target else ""
    )
