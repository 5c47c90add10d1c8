"""One source of truth for the policy language (issues 15.2, 14.11): the spec's keys drive the
validator, ``schema.json`` and nvme-agent.policy(5); the shipped copies equal the generated."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Protocol

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support.manpages import render
from support.policy import namespace, partition, topology

from nvme_agent.cli import policyman
from nvme_agent.cli.main import main
from nvme_agent.cli.manpage import roff_escape
from nvme_agent.policy import (
    PolicyError,
    default_policy_text,
    load_policy_mapping,
    schema_text,
    validate,
)
from nvme_agent.policy import load_policy_text as load
from nvme_agent.policy import schema as schema_module
from nvme_agent.policy.decide import HOOK_ENV, hook_env
from nvme_agent.policy.facts import Facts, facts_for
from nvme_agent.policy.matchers import compile_globs
from nvme_agent.policy.shapes import SHAPES, Shape
from nvme_agent.policy.spec import (
    ACTION_TYPES,
    Defaults,
    Match,
    MountAction,
    Policy,
    Rule,
    SystemdAction,
    Timeouts,
    UnmountAction,
    key_names,
    keys_of,
)
from nvme_agent.policy.templates import FIELDS, TEMPLATE_FIELDS
from nvme_agent.topology.changes import Change, ChangeType

REPO = Path(__file__).resolve().parent.parent
SHIPPED_SCHEMA = REPO / "nvme_agent" / "policy" / "schema.json"
EXAMPLE = REPO / "examples" / "policy.yaml"
SECTIONS: tuple[type, ...] = (Policy, Defaults, Timeouts, Rule, Match, *ACTION_TYPES)


# --- the spec ----------------------------------------------------------------------------------


def test_every_key_has_a_description_and_a_documented_shape() -> None:
    for cls in SECTIONS:
        for k in keys_of(cls):
            assert k.doc.strip().endswith((".", ")")), (cls.__name__, k.name)
            assert SHAPES[k.shape].text, k.shape
            assert k.has_default or k.required or k.default_text, (cls.__name__, k.name)


def _in_action(hook: str, kind: str) -> Callable[[str], dict[str, object]]:
    """Where the key ``n`` of the action ``kind`` goes, in a rule's ``hook``."""
    return lambda n: {"rules": [{hook: [{kind: {n: None}}]}]}


def test_the_validator_tables_are_the_spec_keys() -> None:
    assert validate.TOP_KEYS == ("version", "defaults", "rules")
    assert key_names(MountAction) == validate.MOUNT_KEYS
    assert validate.SYSTEMD_VERBS == ("start", "stop", "restart", "reload")
    assert "not" in validate.MATCH_KEYS and "not_" not in validate.MATCH_KEYS
    assert validate.ACTION_HOOKS["mount"] == ("on_add",)
    assert validate.ACTION_HOOKS["grow"] == ("on_resize",)
    # Every key the spec has is known to the validator; one it has not is refused.
    places: list[tuple[type, Callable[[str], dict[str, object]]]] = [
        (Defaults, lambda n: {"defaults": {n: None}}),
        (Timeouts, lambda n: {"defaults": {"timeouts": {n: None}}}),
        (Rule, lambda n: {"rules": [{n: None}]}),
        (Match, lambda n: {"rules": [{"match": {n: None}}]}),
    ]
    places += [(cls, _in_action(cls.HOOKS[0], cls.KIND)) for cls in ACTION_TYPES]
    for cls, place in places:
        for name in key_names(cls):
            try:
                load_policy_mapping({"version": 1, **place(name)})
            except PolicyError as exc:
                assert not [i for i in exc.errors if "unknown key" in i.message], (cls, name)
        with pytest.raises(PolicyError, match="unknown key 'bogus'"):
            load_policy_mapping({"version": 1, **place("bogus")})
    with pytest.raises(PolicyError, match="did you mean 'unmount_on_stop'"):
        load("version: 1\ndefaults: {unmount_on_stopp: true}\n")


def test_defaults_come_from_the_spec() -> None:
    p = load(
        "version: 1\nrules:\n  - on_add: [{mount: {}}]\n    on_remove: [{unmount: {}}]\n"
        "    on_resize: [{grow: {}}, {signal: {process: app}}, {systemd: {stop: a.service}}]\n"
    )
    (rule,) = p.rules
    assert p.defaults == Defaults()
    mount = rule.on_add[0]
    assert isinstance(mount, MountAction) and mount.timeout == Timeouts().mount
    unmount = rule.on_remove[0]
    assert unmount == UnmountAction(timeout=Timeouts().unmount)
    systemd = rule.on_resize[2]
    assert isinstance(systemd, SystemdAction) and systemd.timeout == Timeouts().systemd
    assert systemd.verb == "stop" and systemd.unit.source == "a.service"
    assert rule.implied_unmount is True and rule.match == Match()


def test_hook_env_sets_the_documented_variables_and_no_others() -> None:
    part = partition("nvme0n1", 1, label="p")
    ns = namespace(1, label="data", fs_uuid="1234", uuid="6a2b", partitions=(part,))
    change = Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=part, coldplug=True,
                    reason="eject")  # fmt: skip
    policy = load("version: 1\nrules:\n  - name: r\n")
    facts = facts_for(ns, part, topology(ns))
    facts = dataclasses.replace(
        facts,
        nguid="n",
        eui64="e",
        fs_uuid="u",
        path_device="nvme1n1",
        path_ctrl="nvme1",
        path_transport="tcp",
        path_address="a",
        path_state="live",
        path=True,
    )
    env = hook_env(change, facts, policy.rules[0], "/run/media/nvme-agent/x")
    assert set(env) == set(HOOK_ENV)


def test_every_template_field_is_a_fact_value() -> None:
    ns = namespace(1, label="data")
    values = facts_for(ns, None, topology(ns)).template_values()
    assert set(values) == set(TEMPLATE_FIELDS) - {"mountpoint"}
    assert set(TEMPLATE_FIELDS) == FIELDS


def test_every_condition_of_match_reads_a_fact() -> None:
    for k in keys_of(Match):
        if k.shape in (Shape.GLOBS, Shape.BOOL, Shape.SIZE, Shape.COUNT):
            assert k.fact in Facts.__dataclass_fields__, k.name


# --- schema.json ---------------------------------------------------------------------------


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED_SCHEMA.read_text() == schema_module.schema_json(), (
        "regenerate: python3 -m nvme_agent.policy.schema -o nvme_agent/policy/schema.json"
    )
    assert schema_text() == schema_module.schema_json()


def test_the_schema_generator_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert schema_module.main(["-o", str(out)]) == 0
    assert out.read_text() == SHIPPED_SCHEMA.read_text()


def test_check_print_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--print-schema"]) == 0
    assert capsys.readouterr().out == SHIPPED_SCHEMA.read_text()


def _properties(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            found += _properties(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += _properties(sub, f"{path}[{i}]")
    return found


def test_the_schema_has_a_real_id_and_a_description_for_every_property() -> None:
    schema = json.loads(schema_text())
    assert schema["$id"] == "urn:nvme-agent:policy:1"
    props = _properties(schema)
    assert len(props) > 60
    for where, prop in props:
        assert isinstance(prop.get("description"), str) and prop["description"], where


def test_the_schema_has_the_spec_keys_in_every_section() -> None:
    schema = json.loads(schema_text())
    assert list(schema["properties"]) == list(key_names(Policy))
    defaults = schema["properties"]["defaults"]
    assert list(defaults["properties"]) == list(key_names(Defaults))
    assert list(defaults["properties"]["timeouts"]["properties"]) == list(key_names(Timeouts))
    assert list(schema["$defs"]["rule"]["properties"]) == list(key_names(Rule))
    assert list(schema["$defs"]["match"]["properties"]) == list(key_names(Match))
    for cls in ACTION_TYPES:
        section: type = cls  # mypy#11470: a union of classes is not Hashable to functools.cache
        body = schema["$defs"][cls.KIND]["properties"][cls.KIND]
        assert list(body["properties"]) == list(key_names(section))


jsonschema = pytest.importorskip("jsonschema")


class Validator(Protocol):
    """What these tests use of a jsonschema validator."""

    def iter_errors(self, instance: object) -> Iterator[object]: ...


@pytest.fixture(scope="module")
def validator() -> Validator:
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    checker: Validator = jsonschema.Draft202012Validator(schema)
    return checker


def test_the_schema_accepts_the_shipped_policies(validator: Validator) -> None:
    for text in (EXAMPLE.read_text(), default_policy_text(), policyman.EXAMPLE):
        assert list(validator.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 1, "rules": [{"match": {"fs_lable": "x"}}]},
        {"version": 1, "rules": [{"on_add": [{"exec": {"argv": "rm -rf /"}}]}]},
        {"version": 1, "rules": [{"on_add": [{"mount": {}, "exec": {"argv": ["/x"]}}]}]},
        {"version": 1, "rules": [{"on_remove": [{"mount": {}}]}]},
        {"version": 1, "rules": [{"on_add": [{"grow": {}}]}]},
        {"version": 1, "rules": [{"on_add": [{"systemd": {"start": "a.service", "stop": "b"}}]}]},
        {"version": 1, "rules": [{"on_add": [{"signal": {"signal": "HUP"}}]}]},
        {"version": 1, "rules": [{"match": {"size_min": "3 parsecs"}}]},
        {"version": 1, "rules": [{"match": {"nsid": 0}}]},
        {"version": 1, "rules": [{"on_path_lost": [{"mount": {}}]}]},
        {"version": 1, "rules": [{"on_path_added": [{"unmount": {}}]}]},
        {"version": 1, "rules": [{"on_path_lost": [{"grow": {}}]}]},
        {"version": 1, "rules": [{"match": {"paths_min": -1}}]},
        {"version": 1, "rules": [{"match": {"paths_max": "2"}}]},
        {"version": 2},
        {"version": 1, "defaults": {"mount_root": "relative"}},
        {"version": 1, "defaults": {"allowed_filesystems": []}},
        {"version": 1, "defaults": {"timeouts": {"mount": 0}}},
    ],
)
def test_the_schema_and_the_validator_refuse_shape_errors(
    bad: dict[str, object], validator: Validator
) -> None:
    assert list(validator.iter_errors(bad)), bad
    with pytest.raises(PolicyError):
        load_policy_mapping(bad)


@settings(max_examples=200, deadline=None)
@given(text=st.from_regex(r"\s*[0-9]{1,4}(\.[0-9]{1,2})?\s*[a-zA-Z]{0,4}\s*", fullmatch=True))
def test_the_schema_size_pattern_agrees_with_the_parser(text: str) -> None:
    from nvme_agent.policy.shapes import SIZE_PATTERN
    from nvme_agent.policy.units import parse_size

    try:
        parse_size(text)
        parsed = True
    except ValueError:
        parsed = False
    assert (re.fullmatch(SIZE_PATTERN, text) is not None) == parsed, text


# --- nvme-agent.policy(5) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def page() -> str:
    return policyman.render(date="2025-01-01")


def test_the_page_documents_every_key_field_variable_and_action(page: str) -> None:
    assert re.search(r'^\.TH "NVME-AGENT\.POLICY" "5" "2025-01-01" "nvme-agent \d', page, re.M)
    for cls in SECTIONS:
        for k in keys_of(cls):
            assert f"\\fB{roff_escape(k.name)}\\fR (" in page, (cls.__name__, k.name)
            first_words = " ".join(k.doc.split()[:4])
            assert roff_escape(first_words) in page, (cls.__name__, k.name)
    for cls in ACTION_TYPES:
        assert f'.SS "{cls.KIND}"' in page
    for name in TEMPLATE_FIELDS:
        assert f"\\fB{{{roff_escape(name)}}}\\fR" in page
    for name in HOOK_ENV:
        assert f"\\fB{roff_escape(name)}\\fR" in page
    for section in ("DEFAULTS", "TIMEOUTS", "RULES", "MATCH", "ACTIONS", "TEMPLATES", "LOADING"):
        assert f".SH {section}" in page
    assert "policy.yaml" in page and "(default \\fB60\\fR)" not in page


def test_the_page_example_is_a_valid_policy() -> None:
    policy = load(policyman.EXAMPLE, "example")
    assert [r.name for r in policy.rules] == ["system", "data"] and not policy.warnings


def test_the_generator_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "nvme-agent.policy.5"
    assert policyman.main(["-o", str(out), "--date", "2025-01-01"]) == 0
    assert out.read_text() == policyman.render(date="2025-01-01")


def test_source_date_epoch_sets_the_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert '"2023-11-14"' in policyman.render()


def test_the_page_renders_without_warnings(tmp_path: Path, page: str) -> None:
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.skip("man/groff missing (make setup installs man-db and groff-base)")
    path = tmp_path / "nvme-agent.policy.5"
    path.write_text(page)
    shown = render(path)
    assert shown.groff_err == "" and shown.groff_rc == 0
    assert shown.man_rc == 0 and shown.man_err == ""
    text = shown.text
    assert "HOOK ENVIRONMENT" in text and "allowed_filesystems" in text


# --- globs and matchers ----------------------------------------------------------------------

GLOB_ALPHABET = "ab*?[]!-/.é"


@settings(max_examples=600, deadline=None)
@given(
    patterns=st.lists(st.text(alphabet=GLOB_ALPHABET, max_size=6), min_size=1, max_size=3),
    value=st.text(alphabet="ab-/.é*?[]", max_size=8),
)
def test_compiled_globs_mean_what_fnmatchcase_means(patterns: list[str], value: str) -> None:
    expected = any(fnmatchcase(value, p) for p in patterns)
    assert compile_globs(tuple(patterns))(value) == expected


@settings(max_examples=300, deadline=None)
@given(
    label=st.sampled_from(["data-1", "DATA", "scratch-x", "", "x/y"]),
    fstype=st.sampled_from(["ext4", "xfs", None]),
    nsid=st.integers(1, 5),
    part=st.booleans(),
    cond=st.fixed_dictionaries(
        {},
        optional={
            "fs_label": st.sampled_from(["data-*", "*", "[ds]*", "DATA", ["x", "scratch-?"]]),
            "fs_type": st.sampled_from(["ext4", ["xfs", "btrfs"]]),
            "nsid": st.sampled_from([1, [2, 3]]),
            "partition": st.booleans(),
            "wwid": st.sampled_from(["NVME.1B36-*", "*-00000001"]),
            "size_min": st.sampled_from(["1MiB", "1GiB"]),
            "property": st.just({"ID_PART_TABLE_TYPE": "gpt"}),
        },
    ),
    wrap=st.sampled_from(["plain", "not", "any"]),
)
def test_the_verdict_of_decide_is_the_verdict_of_explain(
    label: str, fstype: str | None, nsid: int, part: bool, cond: dict[str, object], wrap: str
) -> None:
    """``holds`` (what decide asks) and ``test`` (what explain says) never disagree."""
    wrapped: dict[str, dict[str, object]] = {
        "plain": cond,
        "not": {"not": cond},
        "any": {"any": [cond, {"nsid": 5}]},
    }
    match = wrapped[wrap]
    policy = load_policy_mapping({"version": 1, "rules": [{"match": match}]})
    ns = namespace(nsid, label=label, fstype=fstype, props={"ID_PART_TABLE_TYPE": "gpt"})
    p = partition(ns.name, 1, label=label) if part else None
    facts = facts_for(ns, p, topology(ns))
    (rule,) = policy.rules
    assert rule.holds(facts) == rule.matcher.test(facts)[0]
