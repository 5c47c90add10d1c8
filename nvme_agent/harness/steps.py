"""Scenario steps: what each kind does to the fake guest's device tree, and how it reads.

:data:`STEP_KINDS` is the one list of step kinds; :data:`DEVICE_STEPS` maps every kind that
changes devices to its executor, and the loader (:mod:`.scenario_parse`) has one parser per
kind (a test checks the three agree).  An executor returns *phases*: lists of events that the
simulation injects one after the other, waiting for the agent's reaction in between (a
connecting controller's ``(efault)`` add is seen by the agent before it goes live).

Paths: a namespace of a subsystem is reached through every live controller of that
subsystem unless a step says otherwise (``remove-path``, ``add-path``), like a QEMU namespace
shared by two controllers or an NVMe/TCP target's namespace seen through two ports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nvme_agent.harness.layout import ControllerConfig, Event, Layout, NamespaceConfig
from nvme_agent.policy import Policy

#: Every step kind, in the order the documentation lists them.
STEP_KINDS = (
    "add",
    "remove",
    "hot-swap",
    "resize",
    "change",
    "burst",
    "add-path",
    "remove-path",
    "controller-add",
    "controller-remove",
    "reload",
    "eject",
    "wait-for",
    "expect",
)
#: Expectation kinds and the keys each requires.
EXPECT_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "mounted": ("nsid", "at"),
    "not_mounted": ("nsid",),
    "hook_ran": (),
    "journal": ("type",),
    "action": ("action",),
    "present": ("nsid",),
    "absent": ("nsid",),
}
EXPECT_KINDS = tuple(EXPECT_REQUIRED)
DEFAULT_TIMEOUT = 10.0

Prepare = Callable[[NamespaceConfig], NamespaceConfig]
Phases = list[list[Event]]


def unchanged(ns: NamespaceConfig) -> NamespaceConfig:
    return ns


@dataclass(frozen=True)
class Step:
    """One timeline entry.  Which fields are set depends on ``kind``."""

    kind: str
    line: int | None
    index: int
    namespace: NamespaceConfig | None = None
    ctrl: str | None = None
    nsid: int | None = None
    size_bytes: int | None = None
    fs: str | None = None
    label: str | None = None
    count: int | None = None
    first_nsid: int | None = None
    policy: Policy | None = None
    policy_text: str | None = None
    match: Mapping[str, Any] = field(default_factory=dict)
    expect: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    controller: ControllerConfig | None = None
    namespaces: tuple[NamespaceConfig, ...] = ()

    @property
    def changes_devices(self) -> bool:
        return self.kind in DEVICE_STEPS

    def describe(self) -> str:
        """A short human form for the timeline."""
        return _DESCRIBE.get(self.kind, _kind_only)(self)

    def burst_configs(self, template: NamespaceConfig) -> list[NamespaceConfig]:
        """The namespaces a ``burst`` step attaches, from ``template``."""
        assert self.count is not None and self.first_nsid is not None
        out = []
        for nsid in range(self.first_nsid, self.first_nsid + self.count):
            label = template.label.format(nsid=nsid) if template.label else None
            out.append(dataclasses.replace(template, nsid=nsid, label=label))
        return out

    def phases(self, layout: Layout, prepare: Prepare = unchanged) -> Phases:
        """What the step does to ``layout``, as event phases (none for non-device steps).

        ``prepare`` sees every namespace the step creates first (real mode backs it with a
        loop device).  Raises :class:`~nvme_agent.harness.layout.LayoutError` when the step
        is impossible at this point.
        """
        run = DEVICE_STEPS.get(self.kind)
        return [] if run is None else [p for p in run(layout, self, prepare) if p]


# --------------------------------------------------------------------------- executors
def attach_everywhere(layout: Layout, ns: NamespaceConfig) -> list[Event]:
    """Attach ``ns`` through ``ns.ctrl``, then through every other live controller of its
    subsystem."""
    events = layout.attach(ns)
    for other in layout.members(ns.ctrl):
        if other != ns.ctrl and layout.is_live(other):
            events += layout.add_path(other, ns.nsid)
    return events


def coldplug(
    layout: Layout,
    controllers: Iterable[ControllerConfig],
    namespaces: Iterable[NamespaceConfig],
    prepare: Prepare = unchanged,
) -> list[Event]:
    """The guest at boot: controllers (live), then namespaces through every controller."""
    events: list[Event] = []
    for ctrl in controllers:
        events += layout.add_controller(ctrl) + layout.connect(ctrl.name)
    for ns in namespaces:
        events += attach_everywhere(layout, prepare(ns))
    return events


def _need(step: Step) -> tuple[str, int]:
    assert step.ctrl is not None and step.nsid is not None, step
    return step.ctrl, step.nsid


def _add(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    assert step.namespace is not None
    return [attach_everywhere(layout, prepare(step.namespace))]


def _remove(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    return [layout.detach(*_need(step))]


def _hot_swap(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    assert step.namespace is not None
    ns = step.namespace
    gone = layout.detach(ns.ctrl, ns.nsid) if layout.has_namespace(ns.ctrl, ns.nsid) else []
    return [gone + attach_everywhere(layout, prepare(ns))]


def _resize(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    assert step.size_bytes is not None
    return [layout.resize(*_need(step), step.size_bytes)]


def _change(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    return [layout.change(*_need(step), fs=step.fs, label=step.label)]


def _burst(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    assert step.namespace is not None
    events: list[Event] = []
    for cfg in step.burst_configs(step.namespace):
        events += attach_everywhere(layout, prepare(cfg))
    return [events]


def _add_path(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    return [layout.add_path(*_need(step))]


def _remove_path(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    return [layout.remove_path(*_need(step))]


def _controller_add(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    """PCIe hotplug or ``nvme connect``: the controller (``(efault)`` while connecting),
    then live, then its paths to the subsystem's namespaces and its own new namespaces."""
    cfg = step.controller
    assert cfg is not None
    appear = layout.add_controller(cfg)
    live = layout.connect(cfg.name)
    paths: list[Event] = []
    for nsid in layout.nsids(cfg.name):
        paths += layout.add_path(cfg.name, nsid)
    for ns in step.namespaces:
        paths += attach_everywhere(layout, prepare(ns))
    return [appear, live, paths]


def _controller_remove(layout: Layout, step: Step, prepare: Prepare) -> Phases:
    assert step.ctrl is not None
    return [layout.remove_controller(step.ctrl)]


DEVICE_STEPS: Mapping[str, Callable[[Layout, Step, Prepare], Phases]] = {
    "add": _add,
    "remove": _remove,
    "hot-swap": _hot_swap,
    "resize": _resize,
    "change": _change,
    "burst": _burst,
    "add-path": _add_path,
    "remove-path": _remove_path,
    "controller-add": _controller_add,
    "controller-remove": _controller_remove,
}


# --------------------------------------------------------------------------- describing
def _kind_only(step: Step) -> str:
    return step.kind


def _namespace_text(ns: NamespaceConfig) -> str:
    fs = f" {ns.fs}" + (f" label={ns.label!r}" if ns.label else "") if ns.fs else " blank"
    return f"nsid={ns.nsid} size={ns.size_bytes}{fs}"


def _describe_add(step: Step) -> str:
    assert step.namespace is not None
    return f"{step.kind} {step.namespace.ctrl} {_namespace_text(step.namespace)}"


def _describe_target(step: Step) -> str:
    return f"{step.kind} {step.ctrl or ''} nsid={step.nsid}".replace("  ", " ")


def _describe_controller_add(step: Step) -> str:
    cfg = step.controller
    assert cfg is not None
    where = cfg.address if cfg.fabrics else f"pci {cfg.address}"
    text = f"controller-add {cfg.name} ({cfg.transport} {where}, {cfg.subsysnqn})"
    return text + "".join(f"; {_namespace_text(ns)}" for ns in step.namespaces)


def _pairs(match: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in match.items())


_DESCRIBE: Mapping[str, Callable[[Step], str]] = {
    "add": _describe_add,
    "hot-swap": _describe_add,
    "remove": _describe_target,
    "eject": _describe_target,
    "add-path": _describe_target,
    "remove-path": _describe_target,
    "resize": lambda s: f"resize {s.ctrl} nsid={s.nsid} to {s.size_bytes}",
    "change": lambda s: f"change {s.ctrl} nsid={s.nsid} fs={s.fs} label={s.label!r}",
    "burst": lambda s: f"burst {s.ctrl} {s.count} namespaces from nsid={s.first_nsid}",
    "controller-add": _describe_controller_add,
    "controller-remove": lambda s: f"controller-remove {s.ctrl}",
    "reload": lambda s: "reload policy",
    "wait-for": lambda s: "wait for " + _pairs(s.match),
    "expect": lambda s: f"expect {s.expect} " + _pairs(s.match),
}
