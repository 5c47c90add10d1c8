"""The scenario format: controllers, namespaces, a policy and a timeline of steps.

A scenario is a YAML file (keys below are stable; operators write their own)::

    name: hot-swap                     # optional
    multipath: true                    # native NVMe multipath layout (kernel default)
    controllers:
      - {name: nvme0, serial: SN0001, subsysnqn: "nqn.2019-08.org.qemu:subsys0"}
    namespaces:                        # present before the agent starts (coldplug)
      - {ctrl: nvme0, nsid: 1, size: 1GiB, fs: ext4, label: data}
    policy: policy.yaml                # path relative to the scenario file, or a mapping
    steps:
      - remove: {ctrl: nvme0, nsid: 1}
      - add: {ctrl: nvme0, nsid: 1, size: 2GiB, fs: xfs, label: fresh}
      - expect: {mounted: {nsid: 1, at: /mnt/nvme/fresh}}

Steps: ``add``, ``remove``, ``hot-swap`` (remove + add of the same NSID with new contents and
a new identity), ``resize``, ``change`` (new filesystem found on the namespace), ``burst``
(``count`` namespaces from ``first_nsid`` in one rescan), ``reload`` (a new ``policy``),
``eject`` (operator ejects ``nsid``), ``wait-for`` (an event-stream outcome), ``expect``
(``mounted``, ``not_mounted``, ``hook_ran``, ``journal``, ``action``).  Errors name the file
and line.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvme_agent.harness.layout import (
    ControllerConfig,
    Event,
    Layout,
    NamespaceConfig,
    PartitionConfig,
)
from nvme_agent.policy import Policy, PolicyError, load_policy
from nvme_agent.policy.errors import PathPart, keypath
from nvme_agent.policy.loader import Document, parse_yaml
from nvme_agent.policy.units import parse_size
from nvme_agent.policy.validate import compile_document
from nvme_agent.topology.changes import Change
from nvme_agent.topology.model import TopologySnapshot

STEP_KINDS = (
    "add",
    "remove",
    "hot-swap",
    "resize",
    "change",
    "burst",
    "reload",
    "eject",
    "wait-for",
    "expect",
)
EXPECT_KINDS = ("mounted", "not_mounted", "hook_ran", "journal", "action")
FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap")
DEFAULT_SIZE = 1 << 30
DEFAULT_TIMEOUT = 10.0

_TOP_KEYS = {"name", "description", "multipath", "controllers", "namespaces", "policy", "steps"}
_CTRL_KEYS = {
    "name",
    "serial",
    "model",
    "subsysnqn",
    "firmware",
    "vendor",
    "device",
    "pci_address",
    "bogus_ids",
    "cntlid",
}
_NS_KEYS = {
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
}
_PART_KEYS = {"size", "fs", "label", "partlabel"}

Path_ = tuple[PathPart, ...]


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``issues`` are ``file:line: key: message`` lines."""

    def __init__(self, issues: list[str]) -> None:
        super().__init__("\n".join(issues))
        self.issues = issues


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

    def describe(self) -> str:
        """A short human form for the timeline."""
        if self.kind in ("add", "hot-swap") and self.namespace is not None:
            ns = self.namespace
            fs = f" {ns.fs}" + (f" label={ns.label!r}" if ns.label else "") if ns.fs else " blank"
            return f"{self.kind} {ns.ctrl} nsid={ns.nsid} size={ns.size_bytes}{fs}"
        if self.kind in ("remove", "eject"):
            return f"{self.kind} {self.ctrl or ''} nsid={self.nsid}".replace("  ", " ")
        if self.kind == "resize":
            return f"resize {self.ctrl} nsid={self.nsid} to {self.size_bytes}"
        if self.kind == "change":
            return f"change {self.ctrl} nsid={self.nsid} fs={self.fs} label={self.label!r}"
        if self.kind == "burst":
            return f"burst {self.ctrl} {self.count} namespaces from nsid={self.first_nsid}"
        if self.kind == "reload":
            return "reload policy"
        if self.kind == "wait-for":
            return "wait for " + " ".join(f"{k}={v}" for k, v in self.match.items())
        if self.kind == "expect":
            return f"expect {self.expect} " + " ".join(f"{k}={v}" for k, v in self.match.items())
        return self.kind

    def burst_configs(self, template: NamespaceConfig) -> list[NamespaceConfig]:
        """The namespaces a ``burst`` step attaches, from ``template``."""
        assert self.count is not None and self.first_nsid is not None
        out = []
        for nsid in range(self.first_nsid, self.first_nsid + self.count):
            label = template.label.format(nsid=nsid) if template.label else None
            out.append(dataclasses.replace(template, nsid=nsid, label=label))
        return out


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario."""

    path: Path | None
    name: str
    description: str
    multipath: bool
    controllers: tuple[ControllerConfig, ...]
    namespaces: tuple[NamespaceConfig, ...]
    policy: Policy | None
    policy_text: str | None
    policy_file: Path | None
    steps: tuple[Step, ...]

    def layout(self) -> Layout:
        """A fresh layout with the coldplug controllers and namespaces."""
        layout = Layout(multipath=self.multipath)
        for ctrl in self.controllers:
            layout.add_controller(ctrl)
        for ns in self.namespaces:
            layout.attach(ns)
        return layout

    def step_events(self, layout: Layout, step: Step) -> list[Event]:
        """What ``step`` does to the device tree (nothing for non-device steps)."""
        if step.kind == "add":
            assert step.namespace is not None
            return layout.attach(step.namespace)
        if step.kind == "remove":
            assert step.ctrl is not None and step.nsid is not None
            return layout.detach(step.ctrl, step.nsid)
        if step.kind == "hot-swap":
            assert step.namespace is not None
            ns = step.namespace
            events = layout.detach(ns.ctrl, ns.nsid) if layout.is_attached(ns.ctrl, ns.nsid) else []
            return events + layout.attach(ns)
        if step.kind == "resize":
            assert step.ctrl is not None and step.nsid is not None and step.size_bytes
            return layout.resize(step.ctrl, step.nsid, step.size_bytes)
        if step.kind == "change":
            assert step.ctrl is not None and step.nsid is not None
            return layout.change(step.ctrl, step.nsid, fs=step.fs, label=step.label)
        if step.kind == "burst":
            assert step.namespace is not None
            burst: list[Event] = []
            for cfg in step.burst_configs(step.namespace):
                burst += layout.attach(cfg)
            return burst
        return []

    def planned_changes(self) -> list[tuple[Change, TopologySnapshot]]:
        """The topology changes this scenario causes, computed purely (no bed, no daemon).

        Builds the device records intake would produce from the scenario's layout (coldplug
        first, then each device step's events) and feeds them to the real
        :class:`~nvme_agent.topology.tracker.Topology`.
        ``reload``/``eject``/``wait-for``/``expect``
        steps cause no device events and are skipped.
        """
        from nvme_agent.topology.tracker import Topology  # the topology imports nothing from here

        topology = Topology()
        out: list[tuple[Change, TopologySnapshot]] = []
        layout = Layout(multipath=self.multipath)
        coldplug: list[Event] = []
        for ctrl in self.controllers:
            coldplug += layout.add_controller(ctrl)
        for ns in self.namespaces:
            coldplug += layout.attach(ns)
        seqnum = 0
        for device in _coldplug_order(layout):
            for change in topology.apply(device.record("add", coldplug=True)):
                out.append((change, topology.snapshot()))
        for step in self.steps:
            for event in self.step_events(layout, step):
                if event.device.silent:
                    continue
                seqnum += 1
                for change in topology.apply(event.device.record(event.action, seqnum)):
                    out.append((change, topology.snapshot()))
        return out


def _coldplug_order(layout: Layout) -> list[Any]:
    """The order :func:`nvme_agent.topology.intake.enumerate_records` yields devices in."""
    order = ("nvme-subsystem", "nvme", "block", "nvme-generic")
    devices = [d for d in layout.devices() if d.subsystem in order]
    return sorted(
        devices,
        key=lambda d: (order.index(d.subsystem), d.devtype == "partition", d.devpath),
    )


# --------------------------------------------------------------------------- loading
class _Reader:
    """Validation with positions: every problem becomes ``file:line:col: key: message``."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[str] = [str(i) for i in doc.issues]

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        pos = self.doc.position(path, key=key)
        where = self.doc.origin + (f":{pos[0]}:{pos[1]}" if pos else "")
        self.issues.append(f"{where}: {keypath(path)}: {message}")

    def line(self, path: Path_) -> int | None:
        pos = self.doc.position(path)
        return pos[0] if pos else None

    def mapping(self, value: Any, path: Path_, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.error(
                        (*path, key),
                        f"unknown key {key!r} (known: {', '.join(sorted(allowed))})",
                        key=True,
                    )
        return value

    def seq(self, value: Any, path: Path_) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {type(value).__name__}")
            return []
        return value

    def text(
        self, data: Mapping[str, Any], key: str, path: Path_, default: str | None = None
    ) -> str | None:
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error((*path, key), f"expected a string, got {type(value).__name__}")
            return default
        return str(value)

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: Path_,
        *,
        required: bool = False,
        default: int | None = None,
        minimum: int = 0,
    ) -> int | None:
        if key not in data:
            if required:
                self.error(path, f"missing required key {key!r}")
            return default
        value = data[key]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error((*path, key), f"expected an integer, got {value!r}")
            return default
        if value < minimum:
            self.error((*path, key), f"must be at least {minimum}, got {value}")
            return default
        return value

    def size(
        self, data: Mapping[str, Any], key: str, path: Path_, default: int | None
    ) -> int | None:
        if key not in data:
            return default
        try:
            size = parse_size(data[key])
        except ValueError as exc:
            self.error((*path, key), str(exc))
            return default
        if size <= 0 or size % 512:
            self.error((*path, key), f"size must be a positive multiple of 512 bytes, got {size}")
            return default
        return size

    def flag(self, data: Mapping[str, Any], key: str, path: Path_, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.error((*path, key), f"expected true or false, got {value!r}")
            return default
        return value

    def fs(self, data: Mapping[str, Any], path: Path_) -> str | None:
        fs = self.text(data, "fs", path)
        if fs is not None and fs not in FILESYSTEMS:
            self.error(
                (*path, "fs"), f"unknown filesystem {fs!r} (known: {', '.join(FILESYSTEMS)})"
            )
        return fs


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate the scenario file at ``path``.

    Raises :class:`ScenarioError` listing every problem (``OSError`` if unreadable).
    """
    path = Path(path)
    return load_scenario_text(
        path.read_text(encoding="utf-8"), str(path), base=path.parent, path=path
    )


def load_scenario_text(
    text: str, origin: str = "<scenario>", *, base: Path | None = None, path: Path | None = None
) -> Scenario:
    """Load a scenario from YAML ``text``; relative policy paths resolve against ``base``."""
    doc = parse_yaml(text, origin)
    r = _Reader(doc)
    if r.issues:
        raise ScenarioError(r.issues)
    top = r.mapping(doc.data, (), _TOP_KEYS)
    multipath = r.flag(top, "multipath", (), True)

    controllers: list[ControllerConfig] = []
    for i, raw in enumerate(r.seq(top.get("controllers"), ("controllers",))):
        p: Path_ = ("controllers", i)
        c = r.mapping(raw, p, _CTRL_KEYS)
        name = r.text(c, "name", p)
        if name is None:
            r.error(p, "missing required key 'name'")
            continue
        if not (name.startswith("nvme") and name[4:].isdigit()):
            r.error((*p, "name"), f"controller name must be nvmeN, got {name!r}")
            continue
        if any(x.name == name for x in controllers):
            r.error((*p, "name"), f"duplicate controller {name!r}")
            continue
        kwargs: dict[str, Any] = {
            "name": name,
            "serial": r.text(c, "serial", p, f"SN{name[4:].zfill(4)}"),
            "model": r.text(c, "model", p, "QEMU NVMe Ctrl"),
            "subsysnqn": r.text(c, "subsysnqn", p, f"nqn.2019-08.org.qemu:subsys{name[4:]}"),
            "firmware": r.text(c, "firmware", p, "7.2.22"),
            "vendor_id": r.integer(c, "vendor", p, default=0x1B36),
            "device_id": r.integer(c, "device", p, default=0x0010),
            "pci_address": r.text(c, "pci_address", p),
            "cntlid": r.integer(c, "cntlid", p, default=0),
        }
        if "bogus_ids" in c:
            kwargs["bogus_ids"] = r.flag(c, "bogus_ids", p, True)
        controllers.append(ControllerConfig(**kwargs))
    if not controllers and not r.issues:
        r.error(("controllers",), "a scenario needs at least one controller")
    ctrl_names = [c.name for c in controllers]

    def namespace(raw: Any, p: Path_, *, need_nsid: bool = True) -> NamespaceConfig | None:
        n = r.mapping(raw, p, _NS_KEYS)
        ctrl = r.text(n, "ctrl", p, ctrl_names[0] if ctrl_names else None)
        if ctrl is not None and ctrl not in ctrl_names:
            r.error(
                (*p, "ctrl"), f"unknown controller {ctrl!r} (scenario has: {', '.join(ctrl_names)})"
            )
            return None
        nsid = r.integer(n, "nsid", p, required=need_nsid, minimum=1, default=1)
        parts: list[PartitionConfig] = []
        for j, praw in enumerate(r.seq(n.get("partitions"), (*p, "partitions"))):
            pp: Path_ = (*p, "partitions", j)
            pm = r.mapping(praw, pp, _PART_KEYS)
            parts.append(
                PartitionConfig(
                    number=j + 1,
                    size_bytes=r.size(pm, "size", pp, 64 << 20) or 64 << 20,
                    fs=r.fs(pm, pp),
                    label=r.text(pm, "label", pp),
                    partlabel=r.text(pm, "partlabel", pp),
                )
            )
        size = r.size(n, "size", p, DEFAULT_SIZE) or DEFAULT_SIZE
        if parts and sum(x.size_bytes for x in parts) + (2 << 20) > size:
            r.error((*p, "partitions"), "partitions do not fit in the namespace size")
        if ctrl is None or nsid is None:
            return None
        return NamespaceConfig(
            ctrl=ctrl,
            nsid=nsid,
            size_bytes=size,
            fs=r.fs(n, p),
            label=r.text(n, "label", p),
            fs_uuid=r.text(n, "fs_uuid", p),
            uuid=r.text(n, "uuid", p),
            nguid=r.text(n, "nguid", p),
            partitions=tuple(parts),
            lba_size=r.integer(n, "lba_size", p, default=512, minimum=512) or 512,
            read_only=r.flag(n, "read_only", p, False),
        )

    namespaces: list[NamespaceConfig] = []
    for i, raw in enumerate(r.seq(top.get("namespaces"), ("namespaces",))):
        ns = namespace(raw, ("namespaces", i))
        if ns is not None:
            if any((x.ctrl, x.nsid) == (ns.ctrl, ns.nsid) for x in namespaces):
                r.error(("namespaces", i, "nsid"), f"nsid {ns.nsid} is listed twice on {ns.ctrl}")
            else:
                namespaces.append(ns)

    policy, policy_text, policy_file = _policy(r, doc, top.get("policy"), ("policy",), base)

    # Track which namespaces are attached and their generation, to validate the timeline
    # the way the bed will execute it (remove of a detached namespace is a scenario bug).
    attached: dict[tuple[str, int], NamespaceConfig] = {(n.ctrl, n.nsid): n for n in namespaces}
    generation: dict[tuple[str, int], int] = {}
    steps: list[Step] = []
    for i, raw in enumerate(r.seq(top.get("steps"), ("steps",))):
        p = ("steps", i)
        if not isinstance(raw, dict) or len(raw) != 1:
            r.error(p, f"a step is a mapping with exactly one key, one of: {', '.join(STEP_KINDS)}")
            continue
        ((kind, body),) = raw.items()
        sp: Path_ = (*p, kind)
        line = r.line(sp)
        if kind not in STEP_KINDS:
            r.error(sp, f"unknown step {kind!r} (known: {', '.join(STEP_KINDS)})", key=True)
            continue
        if kind in ("add", "hot-swap"):
            ns = namespace(body, sp)
            if ns is None:
                continue
            key = (ns.ctrl, ns.nsid)
            if kind == "add" and key in attached:
                r.error(sp, f"nsid {ns.nsid} is already attached to {ns.ctrl} at this point")
                continue
            if kind == "hot-swap":
                old = attached.get(key)
                body_map = body if isinstance(body, dict) else {}
                if old is not None and "size" not in body_map:
                    ns = dataclasses.replace(ns, size_bytes=old.size_bytes)
            generation[key] = generation.get(key, 0) + 1
            ns = dataclasses.replace(ns, generation=generation[key])
            attached[key] = ns
            steps.append(Step(kind, line, i, namespace=ns, ctrl=ns.ctrl, nsid=ns.nsid))
        elif kind in ("remove", "resize", "change", "eject"):
            b = r.mapping(
                body,
                sp,
                {
                    "remove": {"ctrl", "nsid"},
                    "resize": {"ctrl", "nsid", "size"},
                    "change": {"ctrl", "nsid", "fs", "label"},
                    "eject": {"ctrl", "nsid", "timeout"},
                }[kind],
            )
            ctrl = r.text(b, "ctrl", sp, ctrl_names[0] if ctrl_names else None)
            nsid = r.integer(b, "nsid", sp, required=True, minimum=1)
            if ctrl is None or nsid is None:
                continue
            if ctrl not in ctrl_names:
                r.error((*sp, "ctrl"), f"unknown controller {ctrl!r}")
                continue
            if kind != "eject" and (ctrl, nsid) not in attached:
                r.error(sp, f"nsid {nsid} is not attached to {ctrl} at this point")
                continue
            size = r.size(b, "size", sp, None) if kind == "resize" else None
            if kind == "resize" and size is None:
                r.error(sp, "missing required key 'size'")
                continue
            if kind == "remove":
                attached.pop((ctrl, nsid), None)
            fs = r.fs(b, sp) if kind == "change" else None
            steps.append(
                Step(
                    kind,
                    line,
                    i,
                    ctrl=ctrl,
                    nsid=nsid,
                    size_bytes=size,
                    fs=fs,
                    label=r.text(b, "label", sp) if kind == "change" else None,
                    timeout=float(r.integer(b, "timeout", sp, default=int(DEFAULT_TIMEOUT)) or 1),
                )
            )
        elif kind == "burst":
            b = r.mapping(body, sp, {"ctrl", "count", "first_nsid", "size", "fs", "label"})
            count = r.integer(b, "count", sp, required=True, minimum=1)
            first = r.integer(b, "first_nsid", sp, required=True, minimum=1)
            template = namespace(
                {k: v for k, v in b.items() if k in ("ctrl", "size", "fs", "label")},
                sp,
                need_nsid=False,
            )
            if count is None or first is None or template is None:
                continue
            clash = [n for n in range(first, first + count) if (template.ctrl, n) in attached]
            if clash:
                r.error(sp, f"nsids {clash[:5]} are already attached to {template.ctrl}")
                continue
            step = Step(
                kind,
                line,
                i,
                namespace=template,
                ctrl=template.ctrl,
                count=count,
                first_nsid=first,
                timeout=max(DEFAULT_TIMEOUT, count / 10),
            )
            for cfg in step.burst_configs(template):
                attached[(cfg.ctrl, cfg.nsid)] = cfg
            steps.append(step)
        elif kind == "reload":
            b = r.mapping(body, sp, {"policy"})
            if "policy" not in b:
                r.error(sp, "missing required key 'policy'")
                continue
            pol, reload_text, _file = _policy(r, doc, b["policy"], (*sp, "policy"), base)
            steps.append(Step(kind, line, i, policy=pol, policy_text=reload_text))
        elif kind == "wait-for":
            b = r.mapping(body, sp)
            match = {k: v for k, v in b.items() if k != "timeout"}
            if "type" not in match:
                r.error(sp, "missing required key 'type' (an event type such as namespace-added)")
                continue
            timeout = b.get("timeout", DEFAULT_TIMEOUT)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                r.error((*sp, "timeout"), f"expected a positive number of seconds, got {timeout!r}")
                continue
            steps.append(Step(kind, line, i, match=match, timeout=float(timeout)))
        elif kind == "expect":
            b = r.mapping(body, sp, set(EXPECT_KINDS))
            if len(b) != 1:
                r.error(sp, f"an expect has exactly one of: {', '.join(EXPECT_KINDS)}")
                continue
            ((what, args),) = b.items()
            if what not in EXPECT_KINDS:
                continue
            ap: Path_ = (*sp, what)
            a = r.mapping(args, ap)
            need = {
                "mounted": ("nsid", "at"),
                "not_mounted": ("nsid",),
                "journal": ("type",),
                "action": ("action",),
                "hook_ran": (),
            }[what]
            missing = [k for k in need if k not in a]
            if missing:
                r.error(ap, f"missing required key(s) {', '.join(map(repr, missing))}")
                continue
            steps.append(
                Step(
                    kind,
                    line,
                    i,
                    expect=what,
                    match=dict(a),
                    nsid=a.get("nsid") if isinstance(a.get("nsid"), int) else None,
                )
            )

    if r.issues:
        raise ScenarioError(r.issues)
    title = r.text(top, "name", (), None) or (path.stem if path else "scenario")
    return Scenario(
        path=path,
        name=title,
        description=str(top.get("description") or ""),
        multipath=multipath,
        controllers=tuple(controllers),
        namespaces=tuple(namespaces),
        policy=policy,
        policy_text=policy_text,
        policy_file=policy_file,
        steps=tuple(steps),
    )


def _policy(
    r: _Reader, doc: Document, value: Any, path: Path_, base: Path | None
) -> tuple[Policy | None, str | None, Path | None]:
    """Load a ``policy:`` value: a file path (relative to the scenario) or a mapping."""
    if value is None:
        return None, None, None
    if isinstance(value, str):
        file = Path(value)
        if not file.is_absolute():
            file = (base or Path.cwd()) / file
        try:
            text = file.read_text(encoding="utf-8")
            return load_policy(file), text, file
        except OSError as exc:
            r.error(path, f"cannot read policy {value!r}: {exc.strerror or exc}")
        except PolicyError as exc:
            r.issues += [str(i) for i in exc.errors]
        return None, None, None
    if isinstance(value, dict):
        # Validate with the scenario's positions, so errors point into the scenario file.
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
            r.issues += [
                str(dataclasses.replace(i, keypath=keypath(path) + "." + i.keypath))
                for i in exc.errors
            ]
            return None, None, None
        import yaml

        return policy, yaml.safe_dump(value, sort_keys=False), None
    r.error(path, "expected a policy file name or an inline policy mapping")
    return None, None, None
