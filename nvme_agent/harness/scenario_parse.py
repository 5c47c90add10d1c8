"""Reading a scenario file: one parser per step kind, from a table, on the policy's checker.

Problems are collected with the policy validator's :class:`~nvme_agent.policy.validate.Checker`
(positions from the same YAML loader), so a scenario reports ``file:line:col: key: message``
exactly like a policy, all problems at once.  The timeline is checked by running it on a
:class:`~nvme_agent.harness.layout.Layout`, the model the bed executes: a step that is
impossible at its point (remove a namespace that is not there, add a controller twice) is
reported at its line, with the layout's reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nvme_agent.harness.layout import (
    TRANSPORTS,
    ControllerConfig,
    Layout,
    LayoutError,
    NamespaceConfig,
    PartitionConfig,
)
from nvme_agent.harness.steps import (
    DEFAULT_TIMEOUT,
    EXPECT_REQUIRED,
    STEP_KINDS,
    Step,
    coldplug,
)
from nvme_agent.policy import Policy, PolicyError, load_policy
from nvme_agent.policy.checks import Checker
from nvme_agent.policy.errors import PathPart, keypath
from nvme_agent.policy.loader import Document
from nvme_agent.policy.units import parse_size
from nvme_agent.policy.validate import compile_document

FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap")
DEFAULT_SIZE = 1 << 30
TOP_KEYS = ("name", "description", "multipath", "controllers", "namespaces", "policy", "steps")
CTRL_KEYS = (
    "name",
    "serial",
    "model",
    "subsysnqn",
    "firmware",
    "vendor",
    "device",
    "pci_address",
    "root_port",
    "bogus_ids",
    "cntlid",
    "transport",
    "traddr",
    "trsvcid",
    "connecting",
    "present",
)
NS_KEYS = (
    "ctrl",
    "nsid",
    "size",
    "fs",
    "label",
    "fs_uuid",
    "uuid",
    "nguid",
    "partitions",
    "lba_size",
    "read_only",
)
PART_KEYS = ("size", "fs", "label", "partlabel")
#: Defaults of a fabrics controller: a Linux nvmet target (Debian 12's kernel).
FABRICS_DEFAULTS = {"model": "Linux", "firmware": "6.1.0-2", "vendor": 0}

Path_ = tuple[PathPart, ...]


class ScenarioChecker(Checker):
    """The policy's checker plus the scenario's scalar fields."""

    def fields(self, value: Any, path: Path_, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        data = self.mapping(value, path)
        if data is not None:
            self.keys(data, path, allowed)
        return data

    def items(self, value: Any, path: Path_) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.report(path, f"expected a list, got {type(value).__name__}")
            return []
        return value

    def line(self, path: Path_) -> int | None:
        pos = self.doc.position(path)
        return pos[0] if pos else None

    def text(
        self, data: Mapping[str, Any], key: str, path: Path_, default: str | None = None
    ) -> str | None:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # a serial such as 1234 needs no quotes
        text = self.string(value, (*path, key))
        return default if text is None else text

    def flag(self, data: Mapping[str, Any], key: str, path: Path_, default: bool) -> bool:
        return self.boolean(data.get(key), (*path, key), default)

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: Path_,
        *,
        default: int | None = None,
        minimum: int = 0,
    ) -> int | None:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            self.report((*path, key), f"expected an integer, got {value!r}")
            return default
        if value < minimum:
            self.report((*path, key), f"must be at least {minimum}, got {value}")
            return default
        return value

    def size(self, data: Mapping[str, Any], key: str, path: Path_, default: int) -> int:
        if key not in data:
            return default
        try:
            size = parse_size(data[key])
        except ValueError as exc:
            self.report((*path, key), str(exc))
            return default
        if size <= 0 or size % 512:
            self.report((*path, key), f"size must be a positive multiple of 512 bytes, got {size}")
            return default
        return size

    def fs(self, data: Mapping[str, Any], path: Path_) -> str | None:
        fs = self.text(data, "fs", path)
        if fs is not None and fs not in FILESYSTEMS:
            self.report(
                (*path, "fs"), f"unknown filesystem {fs!r} (known: {', '.join(FILESYSTEMS)})"
            )
            return None
        return fs


@dataclass
class Timeline:
    """The loader's state: the checker, the declared controllers, the device tree so far."""

    check: ScenarioChecker
    base: Path | None
    multipath: bool = True
    declared: dict[str, ControllerConfig] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    generation: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def first_ctrl(self) -> str | None:
        return next(iter(self.declared), None)

    def known_ctrl(self, name: str | None, path: Path_) -> str | None:
        if name is not None and name not in self.declared:
            known = ", ".join(self.declared) or "none"
            self.check.report(path, f"unknown controller {name!r} (scenario has: {known})")
            return None
        return name

    def run(self, step: Step, path: Path_) -> Step | None:
        """Execute ``step`` on the layout; report it if the bed could not."""
        try:
            step.phases(self.layout)
        except LayoutError as exc:
            self.check.report(path, f"{exc} at this point")
            return None
        return step

    def next_generation(self, ns: NamespaceConfig) -> NamespaceConfig:
        key = (ns.ctrl, ns.nsid)
        self.generation[key] = self.generation.get(key, 0) + 1
        return dataclasses.replace(ns, generation=self.generation[key])


@dataclass(frozen=True)
class Parsed:
    """Everything a scenario file says, validated."""

    name: str | None
    description: str
    multipath: bool
    controllers: tuple[ControllerConfig, ...]
    namespaces: tuple[NamespaceConfig, ...]
    policy: Policy | None
    policy_text: str | None
    policy_file: Path | None
    steps: tuple[Step, ...]


# --------------------------------------------------------------------------- top level
def parse(doc: Document, base: Path | None) -> tuple[Parsed, list[str]]:
    """The scenario in ``doc`` and every problem found (``file:line:col: key: message``)."""
    check = ScenarioChecker(doc)
    top = check.fields(doc.data, (), TOP_KEYS) or {}
    tl = Timeline(check, base, multipath=check.flag(top, "multipath", (), True))
    tl.layout = Layout(multipath=tl.multipath)
    present = _controllers(tl, top.get("controllers"))
    namespaces = _coldplug(tl, top.get("namespaces"), present)
    policy, policy_text, policy_file = policy_value(tl, top.get("policy"), ("policy",))
    steps: list[Step] = []
    for i, raw in enumerate(check.items(top.get("steps"), ("steps",))):
        step = _step(tl, raw, i)
        if step is not None:
            steps.append(step)
    parsed = Parsed(
        name=check.text(top, "name", ()),
        description=str(top.get("description") or ""),
        multipath=tl.multipath,
        controllers=tuple(present),
        namespaces=tuple(namespaces),
        policy=policy,
        policy_text=policy_text,
        policy_file=policy_file,
        steps=tuple(steps),
    )
    return parsed, [str(i) for i in check.issues if i.severity == "error"]


def _controllers(tl: Timeline, value: Any) -> list[ControllerConfig]:
    """Declared controllers; returns those present at start."""
    present: list[ControllerConfig] = []
    for i, raw in enumerate(tl.check.items(value, ("controllers",))):
        path: Path_ = ("controllers", i)
        data = tl.check.fields(raw, path, CTRL_KEYS)
        cfg = None if data is None else controller(tl, data, path)
        if cfg is None or data is None:
            continue
        tl.declared[cfg.name] = cfg
        if tl.check.flag(data, "present", path, True):
            present.append(cfg)
    if not tl.declared and not tl.check.issues:
        tl.check.report(("controllers",), "a scenario needs at least one controller")
    return present


def controller(tl: Timeline, data: Mapping[str, Any], path: Path_) -> ControllerConfig | None:
    check = tl.check
    name = check.text(data, "name", path)
    if name is None:
        check.report((*path, "name"), "required key missing")
        return None
    if not (name.startswith("nvme") and name[4:].isdigit()):
        check.report((*path, "name"), f"controller name must be nvmeN, got {name!r}")
        return None
    if name in tl.declared:
        check.report((*path, "name"), f"duplicate controller {name!r}")
        return None
    transport = check.text(data, "transport", path, "pcie") or "pcie"
    if transport not in TRANSPORTS:
        check.report((*path, "transport"), f"unknown transport {transport!r}: {TRANSPORTS}")
        return None
    return ControllerConfig(**_controller_fields(check, data, path, name, transport))


def _controller_fields(
    check: ScenarioChecker, data: Mapping[str, Any], path: Path_, name: str, transport: str
) -> dict[str, Any]:
    fabrics = transport != "pcie"
    defaults: dict[str, Any] = {"model": "QEMU NVMe Ctrl", "firmware": "7.2.22", "vendor": 0x1B36}
    if fabrics:
        defaults.update(FABRICS_DEFAULTS)
    prefix = "nqn.2014-08.org.nvmexpress:tcp-target" if fabrics else "nqn.2019-08.org.qemu:subsys"
    out: dict[str, Any] = {
        "name": name,
        "serial": check.text(data, "serial", path, f"SN{name[4:].zfill(4)}"),
        "model": check.text(data, "model", path, defaults["model"]),
        "subsysnqn": check.text(data, "subsysnqn", path, f"{prefix}{name[4:]}"),
        "firmware": check.text(data, "firmware", path, defaults["firmware"]),
        "vendor_id": check.integer(data, "vendor", path, default=defaults["vendor"]),
        "device_id": check.integer(data, "device", path, default=0x0010),
        "pci_address": check.text(data, "pci_address", path),
        "root_port": check.text(data, "root_port", path),
        "cntlid": check.integer(data, "cntlid", path, default=0),
        "transport": transport,
        "traddr": check.text(data, "traddr", path, "127.0.0.1"),
        "trsvcid": check.text(data, "trsvcid", path, "4420"),
    }
    for key, attr in (("bogus_ids", "bogus_ids"), ("connecting", "connecting")):
        if key in data:
            out[attr] = check.flag(data, key, path, False)
    return out


def _coldplug(tl: Timeline, value: Any, present: list[ControllerConfig]) -> list[NamespaceConfig]:
    """The namespaces present at start, checked by booting the layout."""
    try:
        coldplug(tl.layout, present, ())
    except LayoutError as exc:
        tl.check.report(("controllers",), str(exc))
        return []
    out: list[NamespaceConfig] = []
    for i, raw in enumerate(tl.check.items(value, ("namespaces",))):
        path: Path_ = ("namespaces", i)
        ns = namespace(tl, raw, path)
        if ns is None:
            continue
        if not tl.layout.controllers.get(ns.ctrl):
            tl.check.report(
                (*path, "ctrl"),
                f"controller {ns.ctrl} is not present at start: attach this namespace in "
                "its controller-add step",
            )
            continue
        try:
            coldplug(tl.layout, (), (ns,))
        except LayoutError as exc:
            tl.check.report((*path, "nsid"), str(exc))
            continue
        out.append(ns)
    return out


def namespace(
    tl: Timeline,
    raw: Any,
    path: Path_,
    *,
    ctrl: str | None = None,
    allowed: tuple[str, ...] = NS_KEYS,
    need_nsid: bool = True,
) -> NamespaceConfig | None:
    """A namespace entry; ``ctrl`` is the controller when the entry may not name one."""
    check = tl.check
    data = check.fields(raw, path, allowed)
    if data is None:
        return None
    name = tl.known_ctrl(check.text(data, "ctrl", path, ctrl or tl.first_ctrl), (*path, "ctrl"))
    if need_nsid and "nsid" not in data:
        check.report((*path, "nsid"), "required key missing")
    nsid = check.integer(data, "nsid", path, default=1, minimum=1)
    size = check.size(data, "size", path, DEFAULT_SIZE)
    parts = _partitions(tl, data, path, size)
    if name is None or nsid is None:
        return None
    return NamespaceConfig(
        ctrl=name,
        nsid=nsid,
        size_bytes=size,
        fs=check.fs(data, path),
        label=check.text(data, "label", path),
        fs_uuid=check.text(data, "fs_uuid", path),
        uuid=check.text(data, "uuid", path),
        nguid=check.text(data, "nguid", path),
        partitions=parts,
        lba_size=check.integer(data, "lba_size", path, default=512, minimum=512) or 512,
        read_only=check.flag(data, "read_only", path, False),
    )


def _partitions(
    tl: Timeline, data: Mapping[str, Any], path: Path_, size: int
) -> tuple[PartitionConfig, ...]:
    check = tl.check
    parts: list[PartitionConfig] = []
    for j, raw in enumerate(check.items(data.get("partitions"), (*path, "partitions"))):
        pp: Path_ = (*path, "partitions", j)
        pm = check.fields(raw, pp, PART_KEYS) or {}
        parts.append(
            PartitionConfig(
                number=j + 1,
                size_bytes=check.size(pm, "size", pp, 64 << 20),
                fs=check.fs(pm, pp),
                label=check.text(pm, "label", pp),
                partlabel=check.text(pm, "partlabel", pp),
            )
        )
    if parts and sum(p.size_bytes for p in parts) + (2 << 20) > size:
        check.report((*path, "partitions"), "partitions do not fit in the namespace size")
    return tuple(parts)


def policy_value(
    tl: Timeline, value: Any, path: Path_
) -> tuple[Policy | None, str | None, Path | None]:
    """A ``policy:`` value: a file path (relative to the scenario) or an inline mapping."""
    if value is None:
        return None, None, None
    if isinstance(value, str):
        return _policy_file(tl, value, path)
    if isinstance(value, dict):
        return _inline_policy(tl, value, path)
    tl.check.report(path, "expected a policy file name or an inline policy mapping")
    return None, None, None


def _policy_file(
    tl: Timeline, value: str, path: Path_
) -> tuple[Policy | None, str | None, Path | None]:
    file = Path(value)
    if not file.is_absolute():
        file = (tl.base or Path.cwd()) / file
    try:
        text = file.read_text(encoding="utf-8")
        return load_policy(file), text, file
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        tl.check.report(path, f"cannot read policy {value!r}: {reason}")
    except PolicyError as exc:
        tl.check.issues += exc.errors
    return None, None, None


def _inline_policy(
    tl: Timeline, value: dict[str, Any], path: Path_
) -> tuple[Policy | None, str | None, Path | None]:
    # Validate with the scenario's positions, so errors point into the scenario file.
    doc = tl.check.doc
    n = len(path)
    sub = Document(
        data=value,
        origin=doc.origin,
        values={k[n:]: v for k, v in doc.values.items() if k[:n] == path},
        keys={k[n:]: v for k, v in doc.keys.items() if k[:n] == path},
    )
    try:
        policy = compile_document(sub)
    except PolicyError as exc:
        tl.check.issues += [
            dataclasses.replace(i, keypath=keypath(path) + "." + i.keypath) for i in exc.errors
        ]
        return None, None, None
    return policy, yaml.safe_dump(value, sort_keys=False), None


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Where:
    """Where a step's body is: its index, its path (``steps[i].kind``) and line."""

    index: int
    path: Path_
    line: int | None


Parser = Callable[[Timeline, Any, Where, str], Step | None]


def _step(tl: Timeline, raw: Any, index: int) -> Step | None:
    path: Path_ = ("steps", index)
    if not isinstance(raw, dict) or len(raw) != 1:
        tl.check.report(
            path, f"a step is a mapping with exactly one key, one of: {', '.join(STEP_KINDS)}"
        )
        return None
    ((kind, body),) = raw.items()
    where = Where(index, (*path, kind), tl.check.line((*path, kind)))
    parser = PARSERS.get(kind)
    if parser is None:
        tl.check.report(
            where.path, f"unknown step {kind!r} (known: {', '.join(STEP_KINDS)})", key=True
        )
        return None
    return parser(tl, body, where, kind)


def _add(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    ns = namespace(tl, body, at.path)
    if ns is None:
        return None
    sized = isinstance(body, dict) and "size" in body
    if kind == "hot-swap" and not sized and tl.layout.has_namespace(*_key(ns)):
        ns = dataclasses.replace(ns, size_bytes=tl.layout.config(*_key(ns)).size_bytes)
    ns = tl.next_generation(ns)
    step = Step(kind, at.line, at.index, namespace=ns, ctrl=ns.ctrl, nsid=ns.nsid)
    return tl.run(step, at.path)


def _key(ns: NamespaceConfig) -> tuple[str, int]:
    return ns.ctrl, ns.nsid


_TARGET_KEYS: Mapping[str, tuple[str, ...]] = {
    "remove": ("ctrl", "nsid"),
    "add-path": ("ctrl", "nsid"),
    "remove-path": ("ctrl", "nsid"),
    "resize": ("ctrl", "nsid", "size"),
    "change": ("ctrl", "nsid", "fs", "label"),
    "eject": ("ctrl", "nsid", "timeout"),
}


def _target(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    """A step about one namespace (``ctrl``, ``nsid``): remove, resize, change, paths, eject."""
    check = tl.check
    data = check.fields(body, at.path, _TARGET_KEYS[kind])
    if data is None:
        return None
    ctrl = tl.known_ctrl(check.text(data, "ctrl", at.path, tl.first_ctrl), (*at.path, "ctrl"))
    if "nsid" not in data:
        check.report((*at.path, "nsid"), "required key missing")
    nsid = check.integer(data, "nsid", at.path, minimum=1)
    if kind == "resize" and "size" not in data:
        check.report((*at.path, "size"), "required key missing")
    size = check.size(data, "size", at.path, DEFAULT_SIZE) if "size" in data else None
    if ctrl is None or nsid is None or (kind == "resize" and size is None):
        return None
    step = Step(
        kind,
        at.line,
        at.index,
        ctrl=ctrl,
        nsid=nsid,
        size_bytes=size,
        fs=check.fs(data, at.path),
        label=check.text(data, "label", at.path),
        timeout=check.seconds(data.get("timeout"), (*at.path, "timeout"), DEFAULT_TIMEOUT),
    )
    return step if kind == "eject" else tl.run(step, at.path)


def _burst(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    check = tl.check
    data = check.fields(body, at.path, ("ctrl", "count", "first_nsid", "size", "fs", "label"))
    if data is None:
        return None
    for key in ("count", "first_nsid"):
        if key not in data:
            check.report((*at.path, key), "required key missing")
    count = check.integer(data, "count", at.path, minimum=1)
    first = check.integer(data, "first_nsid", at.path, minimum=1)
    template = namespace(
        tl,
        {k: v for k, v in data.items() if k in ("ctrl", "size", "fs", "label")},
        at.path,
        need_nsid=False,
    )
    if count is None or first is None or template is None:
        return None
    step = Step(
        kind,
        at.line,
        at.index,
        namespace=template,
        ctrl=template.ctrl,
        count=count,
        first_nsid=first,
        timeout=max(DEFAULT_TIMEOUT, count / 10),
    )
    return tl.run(step, at.path)


def _controller_add(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    """``controller-add: {ctrl: nvme1, namespaces: [{nsid: 1, ...}]}``: a declared controller
    appears (PCIe hotplug, ``nvme connect``) with paths to its subsystem's namespaces and its
    own new ones."""
    check = tl.check
    data = check.fields(body, at.path, ("ctrl", "namespaces"))
    if data is None:
        return None
    if "ctrl" not in data:
        check.report((*at.path, "ctrl"), "required key missing")
        return None
    name = tl.known_ctrl(check.text(data, "ctrl", at.path), (*at.path, "ctrl"))
    if name is None:
        return None
    namespaces = []
    for i, raw in enumerate(check.items(data.get("namespaces"), (*at.path, "namespaces"))):
        allowed = tuple(k for k in NS_KEYS if k != "ctrl")
        ns = namespace(tl, raw, (*at.path, "namespaces", i), ctrl=name, allowed=allowed)
        if ns is not None:
            namespaces.append(tl.next_generation(ns))
    step = Step(
        kind,
        at.line,
        at.index,
        ctrl=name,
        controller=tl.declared[name],
        namespaces=tuple(namespaces),
    )
    return tl.run(step, at.path)


def _controller_remove(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    data = tl.check.fields(body, at.path, ("ctrl",))
    if data is None:
        return None
    if "ctrl" not in data:
        tl.check.report((*at.path, "ctrl"), "required key missing")
        return None
    name = tl.known_ctrl(tl.check.text(data, "ctrl", at.path), (*at.path, "ctrl"))
    if name is None:
        return None
    return tl.run(Step(kind, at.line, at.index, ctrl=name), at.path)


def _reload(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    data = tl.check.fields(body, at.path, ("policy",))
    if data is None:
        return None
    if "policy" not in data:
        tl.check.report((*at.path, "policy"), "required key missing")
        return None
    policy, text, _file = policy_value(tl, data["policy"], (*at.path, "policy"))
    return Step(kind, at.line, at.index, policy=policy, policy_text=text)


def _wait_for(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    data = tl.check.mapping(body, at.path)
    if data is None:
        return None
    if "type" not in data:
        tl.check.report(
            (*at.path, "type"), "required key missing (an event type such as namespace-added)"
        )
        return None
    timeout = tl.check.seconds(data.get("timeout"), (*at.path, "timeout"), DEFAULT_TIMEOUT)
    match = {k: v for k, v in data.items() if k != "timeout"}
    return Step(kind, at.line, at.index, match=match, timeout=timeout)


def _expect(tl: Timeline, body: Any, at: Where, kind: str) -> Step | None:
    check = tl.check
    data = check.fields(body, at.path, tuple(EXPECT_REQUIRED))
    if data is None:
        return None
    if len(data) != 1:
        check.report(at.path, f"an expect has exactly one of: {', '.join(EXPECT_REQUIRED)}")
        return None
    ((what, args),) = data.items()
    if what not in EXPECT_REQUIRED:
        return None
    ap: Path_ = (*at.path, what)
    match = check.mapping(args, ap)
    if match is None:
        return None
    missing = [k for k in EXPECT_REQUIRED[what] if k not in match]
    for key in missing:
        check.report((*ap, key), "required key missing")
    if missing:
        return None
    nsid = match.get("nsid")
    return Step(
        kind,
        at.line,
        at.index,
        expect=what,
        match=dict(match),
        nsid=nsid if isinstance(nsid, int) and not isinstance(nsid, bool) else None,
    )


#: One parser per step kind (the kinds of :data:`~nvme_agent.harness.steps.STEP_KINDS`).
PARSERS: Mapping[str, Parser] = {
    "add": _add,
    "remove": _target,
    "hot-swap": _add,
    "resize": _target,
    "change": _target,
    "burst": _burst,
    "add-path": _target,
    "remove-path": _target,
    "controller-add": _controller_add,
    "controller-remove": _controller_remove,
    "reload": _reload,
    "eject": _target,
    "wait-for": _wait_for,
    "expect": _expect,
}
