"""The policy loader: bounded (size, depth, nodes, aliases), exception-safe, with positions
(issue 11.2).  Hostile inputs that took the old loader down are in fixtures/hostile-policies."""

from __future__ import annotations

import contextlib
import gc
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.policy import added, namespace, topology

from nvme_agent.policy import (
    LIMITS,
    PolicyError,
    PolicyIssue,
    decide,
    load_policy,
    load_policy_bytes,
    load_policy_mapping,
    load_policy_text,
)
from nvme_agent.policy import loader as loader_module
from nvme_agent.policy.document import Document
from nvme_agent.policy.loader import Limits, parse_yaml
from nvme_agent.policy.plan import ExecSpec, MountSpec, UnmountSpec

HERE = Path(__file__).resolve().parent
HOSTILE = HERE / "fixtures" / "hostile-policies"
EXAMPLE = HERE.parent / "examples" / "policy.yaml"
ROOT = "/run/media/nvme-agent"


def issues_of(text: str, origin: str = "p.yaml") -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, origin)
    return info.value.errors


# --- the inputs that took the old loader down -------------------------------------------------


def test_5000_brackets_are_an_error_not_a_recursion_error() -> None:
    path = HOSTILE / "brackets-5000.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.errors
    assert issue.file == str(path) and issue.line == 1 and issue.keypath == "(syntax)"
    assert "nesting" in issue.message


@pytest.mark.parametrize("name", ["alias-bomb-316.yaml", "alias-bomb-454.yaml"])
def test_alias_bombs_stop_at_the_node_bound_where_it_is_crossed(name: str) -> None:
    path = HOSTILE / name
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.errors
    assert f"more than {LIMITS.max_nodes} nodes" in issue.message
    # Where the bound was crossed: l5's first *l4 (l0..l4 hold 74,732 nodes, *l4 66,430 more).
    assert str(issue).startswith(f"{path}:7:10: l5[0]: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\n" + "x: " + "[" * 70 + "]" * 70 + "\n", "nesting deeper than 64"),
        (
            "version: 1\nrules:\n" + "".join("  " * (i + 1) + "- \n" for i in range(70)),
            "nesting deeper than 64",
        ),
        (
            "a: &a [[[[[[[[[[x]]]]]]]]]]\nb: [" + "[" * 58 + "*a" + "]" * 58 + "]\n",
            "nesting deeper than 64",  # shallow alias, used deep down
        ),
        ("version: 1\nx: &a [1, *a]\n", "alias *a refers to a node that contains it"),
        ("version: 1\nx: *nope\n", "found undefined alias 'nope'"),
        ("version: 1\n---\nversion: 1\n", "expected a single document"),
    ],
    ids=["flow", "block", "alias-depth", "recursive-alias", "undefined-alias", "two-documents"],
)
def test_depth_and_alias_errors(text: str, message: str) -> None:
    found = issues_of(text)
    assert any(message in i.message for i in found), [str(i) for i in found]
    assert all(i.line is not None for i in found)


def test_the_node_bound_counts_plain_scalars_too() -> None:
    found = issues_of("version: 1\nx: [" + "1," * 120_000 + "1]\n")
    assert any(f"more than {LIMITS.max_nodes} nodes" in i.message for i in found)


def test_a_text_over_the_size_bound_is_refused_before_parsing() -> None:
    text = "version: 1\n#" + "x" * LIMITS.max_bytes + "\n"
    (issue,) = issues_of(text)
    assert issue.keypath == "(file)" and f"the {LIMITS.max_bytes}" in issue.message
    with pytest.raises(PolicyError):
        load_policy_bytes(text.encode())
    small = Limits(max_bytes=20)
    with pytest.raises(PolicyError, match="more than the 20"):
        load_policy_text("version: 1\nrules: []\n", limits=small)


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    with f.open("wb") as fh:
        fh.truncate(1 << 34)  # 16 GiB of nothing: reading it would take the memory
    with pytest.raises(PolicyError, match="more than the"):
        load_policy(f)


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(fifo)  # the old loader blocked here, waiting for a writer
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(tmp_path)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("version: 1\nrules:\n  - name: 2020-13-45\n", "rules[0].name", "month must be in"),
        ("version: 1\nrules:\n  - name: " + "9" * 5000 + "\n", "rules[0].name", "digits"),
        ("version: 1\nrules:\n  - match: {nsid: [1, [2]]}\n", "rules[0].match.nsid[1]", "a list"),
        ("version: 1\nrules: !!binary xx\n", "rules", "base64"),
        ("version: 1\nrules:\n  - name: !!python/name:os.system x\n", "rules[0].name", "tag"),
        ("version: 1\nrules: !!set {a: null}\n", "rules", "tag tag:yaml.org,2002:set"),
        ("version: 1\n? [a]\n: 1\n", "(top level)", "a key must be a plain string"),
        ("version: 1\nversion: 1\n", "version", "duplicate key 'version'"),
        ("version: 1\nd: &d [1]\nx: {<<: *d}\n", "x", "bad merge key"),
    ],
    ids=[
        "bad-date",
        "5000-digits",
        "nested-nsid",
        "bad-base64",
        "python-tag",
        "set-tag",
        "complex-key",
        "duplicate",
        "bad-merge",
    ],
)
def test_values_that_crashed_or_slipped_through_are_errors(
    text: str, where: str, message: str
) -> None:
    found = issues_of(text)
    hits = [i for i in found if i.keypath == where and message in i.message]
    assert hits, [str(i) for i in found]
    assert hits[0].line is not None


def test_absurdly_deep_parsed_data_is_an_error_not_a_recursion_error() -> None:
    """Data that did not come through the loader (a scenario's inline mapping is bounded by
    it; a caller's own dict is not) still only raises PolicyError."""
    match: dict[str, object] = {"nsid": 1}
    for _ in range(20_000):
        match = {"not": match}
    with pytest.raises(PolicyError, match="too large"):
        load_policy_mapping({"version": 1, "rules": [{"match": match}]}, "deep")


def test_not_utf8_is_an_error_with_its_position() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_bytes(b"version: 1\nrules:\n  - name: caf\xe9\n", "p.yaml")
    (issue,) = info.value.errors
    assert (issue.line, issue.column) == (3, 14) and "not UTF-8" in issue.message


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    policy = load_policy_text(
        textwrap.dedent(
            """\
            version: 1
            defaults: &d {mount_root: /srv/nvme, unmount_on_stop: true}
            rules:
              - name: a
                match: {<<: {fs_type: xfs, nsid: 3}, nsid: 2}
            """
        )
    )
    match = policy.rules[0].match
    assert match.fs_type == ("xfs",) and match.nsid == frozenset({2})


def test_scalar_anchors_and_aliases() -> None:
    doc = parse_yaml("a: &x data-*\nb: *x\nc: &n 3\nd: [*n, *x]\n", "p.yaml")
    assert not doc.issues
    assert doc.data == {"a": "data-*", "b": "data-*", "c": 3, "d": [3, "data-*"]}
    policy = load_policy_text(
        "version: 1\nrules:\n  - match: {fs_label: &l scratch-*}\n    name: *l\n"
    )
    assert policy.rules[0].name == "scratch-*"


def test_each_alias_use_is_a_copy_with_the_alias_position() -> None:
    doc = parse_yaml("a: &x {k: [1]}\nb: *x\nc: *x\n", "p.yaml")
    assert doc.data == {"a": {"k": [1]}, "b": {"k": [1]}, "c": {"k": [1]}}
    assert doc.data["b"] is not doc.data["c"] and doc.data["b"]["k"] is not doc.data["c"]["k"]
    assert doc.position(("c", "k", 0)) == (3, 4)  # inside the alias: the alias
    assert doc.position(("a", "k", 0)) == (1, 12)


def test_positions_from_the_mark_tree_equal_the_flat_tables() -> None:
    text = EXAMPLE.read_text()
    doc = parse_yaml(text, "example.yaml")
    assert doc.root is not None and not doc.issues
    flat = Document(doc.data, doc.origin, values=dict(doc.values), keys=dict(doc.keys))
    assert len(doc.values) > 150
    for path in doc.values:
        probes = [path, (*path, "missing"), (*path, 99)]
        for probe in probes:
            assert doc.position(probe) == flat.position(probe), probe
            assert doc.position(probe, key=True) == flat.position(probe, key=True), probe


def test_the_python_parser_composes_the_same_as_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML without libyaml (the pure-Python parser) gives the same data and positions."""
    text = EXAMPLE.read_text()
    with_c = parse_yaml(text, "x")
    monkeypatch.setattr(loader_module, "_CParser", None)
    pure = parse_yaml(text, "x")
    assert pure.data == with_c.data and pure.values == with_c.values and pure.keys == with_c.keys
    bomb = (HOSTILE / "alias-bomb-316.yaml").read_text()
    assert [str(i) for i in parse_yaml(bomb, "b").issues] == [
        str(i) for i in parse_yaml(bomb, "b").issues
    ]
    assert parse_yaml("a: \x07\n", "p").issues[0].message.startswith("character U+0007")


def test_parse_yaml_reports_control_characters_and_lone_surrogates() -> None:
    (issue,) = parse_yaml("é: x\nb: \x07\n", "p").issues
    assert (issue.line, issue.column) == (2, 4) and "U+0007" in issue.message
    (issue,) = parse_yaml("a: b\nc: \ud800\n", "p").issues
    assert (issue.line, issue.column) == (2, 4) and "not Unicode" in issue.message


# --- the collector while a policy loads (issue 13) -----------------------------------------


def many_rules(count: int) -> str:
    lines = ["version: 1", "defaults: {mount_root: /run/media/nvme-agent}", "rules:"]
    for i in range(count):
        lines += [
            f"  - name: r{i}",
            f'    match: {{fs_label: "n{i}-*"}}',
            f'    on_add: [{{mount: {{path: "/run/media/nvme-agent/r{i}/{{label}}"}}}}]',
        ]
    return "\n".join(lines) + "\n"


LOADS = {
    "valid": many_rules(300),
    "invalid": many_rules(300) + "  - match: {fs_typo: x}\n",
    "syntax": many_rules(300) + "  - name: [x\n",
    "anchors": "version: 1\nrules:\n  - &r {name: a, match: &m {fs_type: ext4}}\n"
    "  - {<<: *r, name: b, match: *m}\n",
}


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations collected while the test runs, with the collector made eager (a
    collection per allocation) so that any window it is allowed in sees one."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize("name", sorted(LOADS))
def test_no_collection_runs_while_a_policy_loads(
    name: str, collections: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large policy's objects set off full collections, each walking the daemon's whole
    # heap; the loader pauses the collector from parsing to the compiled policy instead.
    import nvme_agent.policy as policy_module
    from nvme_agent.policy.loader import parse_yaml
    from nvme_agent.policy.validate import compile_document

    marks: list[int] = []
    parse, compile_ = parse_yaml, compile_document

    def parse_spy(*args: Any) -> Any:
        marks.append(len(collections))
        return parse(*args)

    def compile_spy(*args: Any) -> Any:
        try:
            return compile_(*args)
        finally:
            marks.append(len(collections))

    monkeypatch.setattr(policy_module, "parse_yaml", parse_spy)
    monkeypatch.setattr(policy_module, "compile_document", compile_spy)
    try:
        load_policy_text(LOADS[name], "p.yaml")
    except PolicyError:
        assert name != "valid"
    assert len(marks) == 2 and marks[0] == marks[1]  # no collection from parse to policy
    assert gc.isenabled()
    _ = [[1] for _ in range(3)]  # allocations: the eager collector runs again
    assert len(collections) > marks[1]


def test_a_collector_switched_off_stays_off_after_a_load() -> None:
    gc.disable()
    try:
        load_policy_text(LOADS["valid"], "p.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("name", sorted(LOADS))
def test_a_load_leaves_no_cyclic_garbage(name: str) -> None:
    # Why pausing the collector costs nothing later: what a load makes and drops is freed
    # by reference counting alone, whether the policy is valid or not.
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with contextlib.suppress(PolicyError):
            load_policy_text(LOADS[name], "p.yaml")
        assert gc.collect() == 0, [type(o).__name__ for o in gc.garbage[:10]]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


# --- property tests ------------------------------------------------------------------------

settings_ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_policy_error(raw: bytes) -> None:
    try:
        load_policy_bytes(raw, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.errors and all(i.keypath for i in exc.errors)


YAML_BITS = [
    "version: 1\n", "rules:\n", "  - ", "match: ", "{", "}", "[", "]", ",", ":", " ", "\n",
    "&a ", "*a", "&b ", "*b", "<<: ", "!!python/name:os.system ", "!!binary ", "!!set ",
    "? ", "- ", "'", '"', "#", "|\n", ">\n", "\t", "\x00", "\x85", "é", "\ud800",
    "nsid: ", "fs_label: ", "on_add: ", "mount: ", "path: ", "/run/media/nvme-agent/{label}",
    "2020-13-45", "9" * 30, "---\n", "...\n", "%YAML 1.1\n",
]  # fmt: skip


@settings_
@given(text=st.lists(st.sampled_from(YAML_BITS), max_size=40).map("".join))
def test_arbitrary_yaml_fragments_raise_only_policy_error(text: str) -> None:
    try:
        load_policy_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.errors and all(i.keypath for i in exc.errors)
    assert gc.isenabled()  # the load paused the collector and gave it back


CHUNKS = [b"[", b"]", b"{", b"}", b"*a", b"&a ", b":", b"\n", b"  ", b"..", b"/", b"-", b"\xff",
          b"{label}", b"#", b"'"]  # fmt: skip


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    raw = bytearray(EXAMPLE.read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        chunk = draw(st.sampled_from(CHUNKS))
        if op == "insert":
            raw[at:at] = chunk
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 40))]
        elif op == "replace":
            raw[at : at + len(chunk)] = chunk
        else:
            end = min(len(raw), at + draw(st.integers(1, 200)))
            raw[at:at] = raw[at:end]
    return bytes(raw)


HOSTILE_LABELS = ["../../etc", "/", "..", "-rf", "$(reboot)", "a\x00b", "é" * 80, "x/../../y"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated_example(), label=st.sampled_from(HOSTILE_LABELS), nsid=st.integers(1, 4))
def test_mutated_example_policies_fail_cleanly_or_stay_below_the_mount_root(
    raw: bytes, label: str, nsid: int
) -> None:
    try:
        policy = load_policy_bytes(raw, "mutated.yaml")
    except PolicyError as exc:
        assert exc.errors and all(str(i).startswith("mutated.yaml") for i in exc.errors)
        return
    root = os.path.normpath(policy.defaults.mount_root)
    ns = namespace(nsid, label=label, fstype="xfs")
    plan = decide(added(ns), topology(ns), policy)
    for action in plan.actions:
        targets = []
        if isinstance(action, MountSpec | UnmountSpec) and action.target is not None:
            targets.append(action.target)
        for target in targets:
            assert target == os.path.normpath(target) and target.startswith(root + "/")
        if isinstance(action, ExecSpec):
            assert all("\0" not in a for a in action.argv)


def test_yaml_safe_load_agrees_on_the_shipped_policies() -> None:
    """The composer reads what PyYAML's safe_load reads (on files without its pitfalls)."""
    for path in (EXAMPLE, HERE.parent / "nvme_agent" / "data" / "default-policy.yaml"):
        text = path.read_text()
        assert parse_yaml(text, str(path)).data == yaml.safe_load(text)
