"""Property tests: hostile device data never escapes the mount root, its argument or its unit
name, and neither decide() nor the loader raises anything but PolicyError."""

from __future__ import annotations

import dataclasses
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.policy import namespace, partition, topology

from nvme_agent.policy import Policy, PolicyError, decide, load_policy_mapping, load_policy_text
from nvme_agent.policy.plan import (
    ExecSpec,
    GrowSpec,
    MountSpec,
    SignalSpec,
    SystemdSpec,
    UnmountSpec,
)
from nvme_agent.policy.spec import ExecAction
from nvme_agent.policy.templates import PATH_FIELDS, check_unit_name
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import (
    Filesystem,
    Namespace,
    NamespacePath,
    Partition,
    TopologySnapshot,
)

ROOT = "/run/media/nvme-agent"
FIELDS = [
    "nsid", "ctrl", "devname", "label", "fs_uuid", "fs_type", "uuid", "nguid", "eui64", "wwid",
    "serial", "model", "subsysnqn", "partn", "partlabel", "identity", "paths_live",
]  # fmt: skip
PATH_KINDS = {"path-lost": ChangeType.PATH_LOST, "path-added": ChangeType.PATH_ADDED}

HOSTILE_BITS = ["..", ".", "/", "../", "\x00", "\n", "-", "$(reboot)", "é", "\udcff", "\u202e", " "]

hostile = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.lists(st.sampled_from(HOSTILE_BITS), max_size=12).map("".join),
    st.text(alphabet="é€𝄞", min_size=20, max_size=200),  # long multi-byte UTF-8
)
settings_ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def templates(draw: st.DrawFn, sep: str = "-", fields_: list[str] = FIELDS) -> str:
    fields = draw(st.lists(st.sampled_from(fields_), min_size=1, max_size=4))
    literals = draw(st.lists(st.sampled_from(["", "x", sep, "/", "_"]), min_size=len(fields)))
    return "".join(lit + "{" + f + "}" for lit, f in zip(literals, fields, strict=False))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    path = ROOT + "/" + draw(templates())
    unit = "app@" + draw(templates(sep="_")).replace("/", "_") + ".service"
    argv = ["/usr/bin/hook", *draw(st.lists(templates(), max_size=3)), "{mountpoint}"]
    every = [*FIELDS, *sorted(PATH_FIELDS)]
    path_argv = ["/usr/bin/hook", *draw(st.lists(templates(fields_=every), max_size=4))]
    path_argv.append("{mountpoint}")
    path_unit = "app@" + draw(templates(sep="_", fields_=every)).replace("/", "_") + ".service"
    path_hooks = [
        {"exec": {"argv": path_argv, "env": {"X": draw(templates(fields_=every))}}},
        {"systemd": {"restart": path_unit}},
        {"signal": {"unit": path_unit}},
    ]
    text_policy = {
        "version": 1,
        "rules": [
            {
                "name": "all",
                "on_add": [
                    {"mount": {"path": path}},
                    {"exec": {"argv": argv, "env": {"X": draw(templates())}}},
                    {"systemd": {"start": unit}},
                    {"signal": {"unit": unit}},
                ],
                "on_remove": [{"exec": {"argv": argv}}, {"systemd": {"stop": unit}}],
                "on_resize": [{"grow": {}}],
                "on_path_lost": path_hooks,
                "on_path_added": path_hooks,
            }
        ],
    }
    return load_policy_mapping(text_policy, "generated")


@st.composite
def devices(draw: st.DrawFn) -> tuple[Namespace, Partition | None]:
    nsid = draw(st.integers(min_value=1, max_value=0xFFFFFFFE))
    props = draw(
        st.dictionaries(st.sampled_from(["ID_MODEL", "ID_PART_TABLE_TYPE", "X"]), st.text())
    )
    fstype = draw(st.sampled_from([None, "ext4", "xfs", "vfat", "crypto_LUKS"]))
    ns = namespace(
        nsid,
        name=draw(st.sampled_from(["nvme0n1", "nvme1n12"])),
        serial=draw(hostile),
        model=draw(hostile),
        uuid=draw(hostile),
        wwid=draw(hostile),
        nqn=draw(hostile),
        props=props,
        filesystem=Filesystem(fstype, label=draw(hostile), uuid=draw(hostile)) if fstype else None,
        fstype=None,
    )
    # Path values come from the kernel's controller attributes; they are fuzzed all the same.
    paths = tuple(
        NamespacePath(
            controller=draw(st.sampled_from(["nvme0", "nvme1", None])),
            device=draw(hostile),
            transport=draw(hostile),
            address=draw(hostile),
            state=draw(st.sampled_from(["live", "connecting", None]) | hostile),
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    ns = dataclasses.replace(ns, paths=paths)
    part = None
    if draw(st.booleans()):
        part = partition(ns.name, draw(st.integers(1, 128)), label=draw(hostile))
        part = Partition(
            name=part.name,
            devpath=part.devpath,
            devnode=part.devnode,
            number=part.number,
            fs=Filesystem("ext4", label=draw(hostile)),
            partlabel=draw(hostile),
        )
    return ns, part


def changes(ns: Namespace, part: Partition | None, kind: str) -> Change:
    if kind == "add":
        t = ChangeType.PARTITION_ADDED if part else ChangeType.NAMESPACE_ADDED
        return Change(t, namespace=ns, partition=part)
    if kind in ("remove", "eject"):
        t = ChangeType.PARTITION_REMOVED if part else ChangeType.NAMESPACE_REMOVED
        return Change(t, namespace=ns, partition=part, reason="eject" if kind == "eject" else None)
    if kind == "resize":
        return Change(ChangeType.NAMESPACE_RESIZED, namespace=ns, previous=ns)
    if kind in PATH_KINDS:
        gone = ns.paths[0] if ns.paths else NamespacePath(controller="nvme9", address="\x00-x")
        return Change(PATH_KINDS[kind], namespace=ns, previous=ns, path=gone)
    blank = dataclasses.replace(ns, fs=None)
    return Change(ChangeType.NAMESPACE_CHANGED, namespace=ns, previous=blank)


def _under_root(path: str) -> bool:
    return (
        path == os.path.normpath(path)
        and path != ROOT
        and os.path.commonpath([path, ROOT]) == ROOT
        and "\0" not in path
    )


@settings_
@given(
    policy=policies(),
    device=devices(),
    kind=st.sampled_from(["add", "remove", "eject", "resize", "changed", *PATH_KINDS]),
)
def test_decide_never_escapes(
    policy: Policy, device: tuple[Namespace, Partition | None], kind: str
) -> None:
    ns, part = device
    if kind in ("resize", "changed", *PATH_KINDS):
        part = None
    change = changes(ns, part, kind)
    try:
        plan = decide(change, topology(ns) if kind != "remove" else TopologySnapshot(), policy)
    except PolicyError:
        return
    rule = policy.rules[0]
    path_change = kind in PATH_KINDS
    hook = (rule.on_path_lost if path_change else rule.on_add)[0 if path_change else 1]
    assert isinstance(hook, ExecAction)
    argv_tpl = hook.argv
    if path_change:  # hooks only: a path change never mounts, unmounts or grows
        assert not [a for a in plan.actions if isinstance(a, MountSpec | UnmountSpec | GrowSpec)]
    for action in plan.actions:
        if isinstance(action, MountSpec):
            assert _under_root(action.target), action.target
            rel = action.target[len(ROOT) + 1 :]
            assert all(len(c.encode("utf-8", "surrogateescape")) <= 255 for c in rel.split("/"))
        elif isinstance(action, UnmountSpec):
            assert action.target is None or _under_root(action.target)
            assert action.device_gone == (change.reason != "eject")
        elif isinstance(action, ExecSpec):
            assert action.argv[0] == "/usr/bin/hook"
            # each template stays ONE argument: the count is the template count
            assert len(action.argv) == len(argv_tpl)
            for arg, tpl in zip(action.argv[1:], argv_tpl[1:], strict=True):
                # device data never turns into an option; an operator's literal "-" may
                assert "\0" not in arg
                assert not (tpl.source.startswith("{") and arg.startswith("-")), (arg, tpl)
            assert _under_root(action.argv[-1])
        elif isinstance(action, SystemdSpec | SignalSpec) and action.unit is not None:
            check_unit_name(action.unit)
    for _, value in plan.env:
        assert "\0" not in value


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
KEYS = [
    "version", "defaults", "rules", "match", "on_add", "on_remove", "on_resize", "mount", "exec",
    "path", "argv", "nsid", "fs_label", "any", "not", "property", "size_min", "signal", "ignore",
    "mount_root", "options", "unit", "systemd", "start", "unmount", "grow", "name",
]  # fmt: skip
json_like = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children, max_size=4),
    ),
    max_leaves=25,
)


@settings_
@given(data=st.dictionaries(st.sampled_from(KEYS), json_like, max_size=4))
def test_loading_arbitrary_mappings_raises_only_policy_error(data: dict[str, object]) -> None:
    data.setdefault("version", 1)
    try:
        load_policy_mapping(data, "fuzz")
    except PolicyError as exc:
        assert exc.errors and all(i.keypath for i in exc.errors)


YAML_ALPHABET = [*"version: 1\n rules-{}[]:,'\"!&*#|>%@`\t", "é", "\x00", "\x85"]


@settings_
@given(text=st.text(alphabet=st.sampled_from(YAML_ALPHABET), max_size=120))
def test_loading_arbitrary_text_raises_only_policy_error(text: str) -> None:
    try:
        load_policy_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.errors
