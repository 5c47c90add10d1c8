"""Policy loading and validation: positions, key paths, every error at once, the schema, `check`."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.cli.main import main
from nvme_agent.policy import (
    PolicyError,
    PolicyIssue,
    default_policy_text,
    load_policy,
    load_policy_mapping,
    load_policy_text,
)
from nvme_agent.policy import validate as validate_module
from nvme_agent.policy.spec import (
    ACTION_TYPES,
    Defaults,
    Match,
    Policy,
    Rule,
    Timeouts,
    key_names,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "policy.yaml"


def issues_of(text: str) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(textwrap.dedent(text), "policy.yaml")
    return info.value.errors


# (policy text, line, column, key path, part of the message).  Line/column are 1-based and point
# at the offending value (or key, for unknown keys).
BROKEN = [
    pytest.param(
        """\
        version: 1
        rules:
          - match: {fs_lable: data}
        """,
        3,
        13,
        "rules[0].match.fs_lable",
        "did you mean 'fs_label'",
        id="unknown-match-key",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {fs_label: data}
            on_add:
              - mount: {path: "/etc/{label}"}
        """,
        5,
        23,
        "rules[0].on_add[0].mount.path",
        "not below mount_root",
        id="mount-path-outside-root",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - mount:
                  path: "/run/media/nvme-agent/../../etc/{label}"
        """,
        5,
        17,
        "rules[0].on_add[0].mount.path",
        ". or .. components",
        id="mount-path-dotdot",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - mount: {path: "relative/{label}"}
        """,
        4,
        23,
        "rules[0].on_add[0].mount.path",
        "relative path",
        id="mount-path-relative",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - name: a
          - name: b
            match:
              size_min: 12 parsecs
        """,
        6,
        17,
        "rules[1].match.size_min",
        "unknown size unit",
        id="bad-size-unit",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {serial: "S4EW[0-9"}
        """,
        3,
        21,
        "rules[0].match.serial",
        "unterminated character class",
        id="bad-glob",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - signal: {signal: SIGBOGUS, process: nginx}
        """,
        4,
        26,
        "rules[0].on_add[0].signal.signal",
        "unknown signal",
        id="unknown-signal",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - exec:
                  argv: "rm -rf /"
        """,
        5,
        17,
        "rules[0].on_add[0].exec.argv",
        "never a shell string",
        id="exec-shell-string",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - exec: {argv: [run-me]}
        """,
        4,
        23,
        "rules[0].on_add[0].exec.argv[0]",
        "fixed absolute path",
        id="exec-relative-program",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - systemd: {start: "backup@{label.__class__}.service"}
        """,
        4,
        26,
        "rules[0].on_add[0].systemd.start",
        "unknown template field {label.__class__}",
        id="template-attribute-access",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - exec: {argv: [/bin/echo, "{label[0]}"]}
        """,
        4,
        34,
        "rules[0].on_add[0].exec.argv[1]",
        "unknown template field",
        id="template-index-access",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - exec: {argv: [/bin/echo, "{label!r}"]}
        """,
        4,
        34,
        "rules[0].on_add[0].exec.argv[1]",
        "conversions and format specs",
        id="template-conversion",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - grow: {}
        """,
        4,
        9,
        "rules[0].on_add[0].grow",
        "only allowed in on_resize",
        id="grow-outside-resize",
    ),
    pytest.param(
        """\
        version: 1
        defaults:
          mount_root: run/media
        """,
        3,
        15,
        "defaults.mount_root",
        "relative path",
        id="relative-mount-root",
    ),
    pytest.param(
        """\
        version: 1
        defaults:
          timeouts: {mount: -5}
        """,
        3,
        21,
        "defaults.timeouts.mount",
        "positive number",
        id="negative-timeout",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {nsid: [1, "two"]}
        """,
        3,
        23,
        "rules[0].match.nsid[1]",
        "namespace ID",
        id="nsid-not-int",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - ignore: true
            on_add:
              - exec: {argv: [/bin/true]}
        """,
        5,
        7,
        "rules[0].on_add",
        "cannot have actions",
        id="ignore-with-actions",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - name: x
          - name: x
        """,
        4,
        11,
        "rules[1].name",
        "duplicate rule name",
        id="duplicate-rule-name",
    ),
    pytest.param(
        """\
        version: 1
        version: 1
        """,
        2,
        1,
        "version",
        "duplicate key",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {fs_label: data
        """,
        4,
        1,
        "(syntax)",
        "flow mapping",
        id="yaml-syntax",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_remove:
              - unmount: {on_busy: wait}
        """,
        4,
        9,
        "rules[0].on_remove[0].unmount",
        "needs a mount action",
        id="unmount-without-mount",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_path_lost:
              - mount: {}
        """,
        4,
        9,
        "rules[0].on_path_lost[0].mount",
        "'mount' is only allowed in on_add: a path change runs hooks only",
        id="mount-in-on-path-lost",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add: [{mount: {}}]
            on_path_lost:
              - exec: {argv: [/bin/true]}
              - unmount: {}
        """,
        6,
        9,
        "rules[0].on_path_lost[1].unmount",
        "'unmount' is only allowed in on_remove: a path change runs hooks only",
        id="unmount-in-on-path-lost",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_path_added: [{grow: {}}]
        """,
        3,
        22,
        "rules[0].on_path_added[0].grow",
        "'grow' is only allowed in on_resize",
        id="grow-in-on-path-added",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_add:
              - exec: {argv: [/bin/echo, "{path_ctrl}"]}
        """,
        4,
        34,
        "rules[0].on_add[0].exec.argv[1]",
        "{path_ctrl} is not known here: only on_path_added and on_path_lost have a path",
        id="path-field-outside-path-hooks",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - on_path_lost:
              - systemd: {stop: "app@{mountpoint}.service"}
        """,
        4,
        25,
        "rules[0].on_path_lost[0].systemd.stop",
        "{mountpoint} is not known here: only a rule with a mount action has one",
        id="mountpoint-without-mount",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {paths_min: -1}
        """,
        3,
        24,
        "rules[0].match.paths_min",
        "expected a whole number (0..65535), got int -1",
        id="paths-min-negative",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match: {paths_max: "2"}
        """,
        3,
        24,
        "rules[0].match.paths_max",
        "expected a whole number (0..65535), got string '2'",
        id="paths-max-string",
    ),
    pytest.param(
        """\
        version: 1
        rules:
          - match:
              paths_min: 2
              paths_max: 1
        """,
        5,
        18,
        "rules[0].match.paths_max",
        "paths_max is smaller than paths_min",
        id="paths-max-below-min",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "path", "message"), BROKEN)
def test_broken_policy_reports_position_and_keypath(
    text: str, line: int, column: int, path: str, message: str
) -> None:
    found = issues_of(text)
    hits = [i for i in found if i.keypath == path and message in i.message]
    assert hits, f"no {path!r} issue with {message!r} in {[str(i) for i in found]}"
    assert (hits[0].line, hits[0].column) == (line, column), str(hits[0])
    assert str(hits[0]).startswith(f"policy.yaml:{line}:{column}: {path}: ")


def test_all_errors_are_reported_at_once() -> None:
    found = issues_of(
        """\
        version: 3
        defaults: {mount_root: /run/x, bogus: 1}
        rules:
          - match: {fs_type: 7, size_min: 2TB, size_max: 1TB}
            on_add:
              - mount: {path: "/srv/{label}"}
              - systemd: {start: "not a unit"}
              - signal: {pidfile: run.pid}
        """
    )
    paths = {i.keypath for i in found}
    assert {
        "version",
        "defaults.bogus",
        "rules[0].match.fs_type",
        "rules[0].match.size_max",
        "rules[0].on_add[0].mount.path",
        "rules[0].on_add[1].systemd.start",
        "rules[0].on_add[2].signal.pidfile",
    } <= paths
    lines = [i.line or 0 for i in found]
    assert lines == sorted(lines)


def test_error_text_lists_every_error_as_file_line_column_keypath() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text("version: 1\nrules:\n  - match: {nsid: 0}\n  - bogus: 1\n", "p.yaml")
    text = str(info.value).splitlines()
    assert text[0].startswith("p.yaml:3:19: rules[0].match.nsid: ")
    assert text[1].startswith("p.yaml:4:5: rules[1].bogus: unknown key")


def test_missing_nodev_is_a_warning_not_an_error() -> None:
    policy = load_policy_text(
        "version: 1\nrules:\n  - on_add:\n      - mount: {options: [noatime]}\n", "w.yaml"
    )
    assert len(policy.rules) == 1
    (warning,) = policy.warnings
    assert warning.severity == "warning"
    assert warning.keypath == "rules[0].on_add[0].mount.options"
    assert "nodev, nosuid" in warning.message


def test_yaml_tags_are_refused() -> None:
    found = issues_of("version: 1\nrules:\n  - name: !!python/object:os.system x\n")
    assert found and found[0].keypath == "rules[0].name"


def test_mapping_policy_has_keypaths_without_positions() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_mapping({"version": 1, "rules": [{"match": {"nsid": "x"}}]}, "scenario.yaml")
    (issue,) = info.value.errors
    assert issue.line is None
    assert str(issue) == (
        "scenario.yaml: rules[0].match.nsid: expected a namespace ID (1..4294967294), "
        "got string 'x'"
    )
    ok = load_policy_mapping({"version": 1, "rules": [{"name": "a", "match": {"nsid": 2}}]})
    assert ok.rules[0].name == "a"


def test_defaults_and_their_overrides() -> None:
    p = load_policy_text("version: 1\n")
    assert p.defaults.mount_root == "/run/media/nvme-agent"
    assert p.defaults.mount_options == ("nodev", "nosuid", "noatime")
    assert not p.defaults.reconcile_on_reload and not p.defaults.unmount_on_stop
    p = load_policy_text(
        "version: 1\ndefaults:\n  mount_root: /mnt/nvme/\n  mount_options: nodev,nosuid\n"
        "  timeouts: {unmount: 5}\n  reconcile_on_reload: true\n  unmount_on_stop: true\n"
    )
    assert p.defaults.mount_root == "/mnt/nvme"
    assert p.defaults.mount_options == ("nodev", "nosuid")
    assert p.defaults.timeouts.unmount == 5.0
    assert p.defaults.reconcile_on_reload and p.defaults.unmount_on_stop


def test_shipped_policies_load_cleanly() -> None:
    example = load_policy(EXAMPLE)
    assert len(example.rules) >= 5 and not example.warnings
    default = load_policy_text(default_policy_text(), "default-policy.yaml")
    assert default.rules == ()


def test_example_uses_every_feature() -> None:
    """examples/policy.yaml shows every key of the language (from the spec's tables)."""
    text = EXAMPLE.read_text()
    sections: tuple[type, ...] = (Policy, Defaults, Timeouts, Rule, Match, *ACTION_TYPES)
    for cls in sections:
        for name in key_names(cls):
            assert re.search(rf"\b{name}:", text), (cls.__name__, name)
    for cls in ACTION_TYPES:
        assert f"- {cls.KIND}:" in text, cls.KIND


# --- nvme-agent check -------------------------------------------------------------------------


def test_check_valid_policy_exits_0_with_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(
        "version: 1\nrules:\n  - match: {nsid: 1}\n    on_add:\n"
        "      - mount: {options: [ro]}\n  - name: b\n"
    )
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{f}: valid, 2 rules, 1 warning"
    assert "warning: rules[0].on_add[0].mount.options" in out[0]


def test_check_invalid_policy_exits_1_with_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("version: 1\nrules:\n  - match: {nsid: 0}\n  - bogus: 1\n")
    assert main(["check", str(f)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{f}:3:19: rules[0].match.nsid:")
    assert out[1].startswith(f"{f}:4:5: rules[1].bogus:")
    assert out[2] == f"{f}: invalid, 2 errors"


def test_check_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("version: 1\nrules:\n  - match: {nsid: 0}\n")
    assert main(["check", "--json", str(f)]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in records] == ["policy-issue", "policy-check"]
    assert all("nsid" in r for r in records)
    assert records[0]["line"] == 3 and records[0]["keypath"] == "rules[0].match.nsid"
    assert records[1]["valid"] is False and records[1]["errors"] == 1


def test_check_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _warnings(text: str) -> list[str]:
    return [str(w) for w in load_policy_text(textwrap.dedent(text), "policy.yaml").warnings]


def test_a_device_rule_chosen_by_the_number_of_live_paths_is_warned_about() -> None:
    found = _warnings(
        """\
        version: 1
        rules:
          - name: mounts-redundant
            match: {fs_type: ext4, not: {any: [{paths_max: 1}]}}
            on_add: [{mount: {}}]
          - name: path-rule
            match: {paths_max: 1}
            on_path_lost: [{exec: {argv: [/bin/alarm]}}]
          - name: ignores-degraded
            match: {paths_min: 0, paths_max: 1}
            ignore: true
        """
    )
    drift = [w for w in found if "the number of live paths changes" in w]
    assert [w.split(": warning: ")[0] for w in drift] == ["policy.yaml:4:12", "policy.yaml:10:12"]
    assert drift[0].endswith(
        "rules[0].match: paths_max in a rule for device changes: the number of live paths "
        "changes while a namespace stays, so this rule can stop matching a namespace it handled "
        "and another rule decides its removal (a mount may not be undone); use it in a rule "
        "with only on_path_added/on_path_lost actions"
    )
    assert "paths_min and paths_max in a rule" in drift[1]


def test_unreachable_counts_the_changes_a_rule_is_tried_by() -> None:
    found = _warnings(
        """\
        version: 1
        rules:
          - name: everything
            on_add: [{exec: {argv: [/bin/hello]}}]
          - name: path-rule
            on_path_lost: [{exec: {argv: [/bin/alarm]}}]
          - name: second-path-rule
            match: {paths_max: 1}
            on_path_lost: [{exec: {argv: [/bin/alarm2]}}]
          - name: device-rule
            match: {nsid: 2}
        """
    )
    unreachable = [w for w in found if "unreachable" in w]
    # path-rule is reachable (device rules pass path changes on); the two after are not
    assert [w.split(": ")[2] for w in unreachable] == ["rules[2]", "rules[3]"]
    assert "rules[1] before it matches every device" in unreachable[0]
    assert "rules[0] before it matches every device" in unreachable[1]


# --- "below the mount root", without commonpath on the common path (issue 13) -------------

_PATH_BITS = ["", "/", "//", "///", "a", "b", "ab", ".", "..", "a/", "/a", "x/..", "é"]


def _under_as_before(path: str, root: str) -> bool:
    """The check as it was: normpath both, then commonpath."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path != root and os.path.commonpath([path, root]) == root


def _verdict(check: Any, path: str, root: str) -> bool | str:
    try:
        return bool(check(path, root))
    except ValueError:  # commonpath of a relative and an absolute path
        return "ValueError"


@settings(max_examples=3000, deadline=None)
@given(
    path=st.lists(st.sampled_from(_PATH_BITS), max_size=7).map("".join),
    root=st.lists(st.sampled_from(_PATH_BITS), max_size=5).map("".join),
)
def test_below_the_root_says_what_commonpath_says(path: str, root: str) -> None:
    # Hostile mount paths ("//", "..", a root prefix without its slash) included.
    assert _verdict(validate_module._under, path, root) == _verdict(_under_as_before, path, root)


@pytest.mark.parametrize(
    ("path", "root", "below"),
    [
        ("/run/media/x/a", "/run/media/x", True),
        ("/run/media/xa", "/run/media/x", False),
        ("/run/media/x", "/run/media/x", False),
        ("/run/media/x/../y", "/run/media/x", False),
        ("//run/media/x/a", "/run/media/x", True),
    ],
)
def test_below_the_root_examples(path: str, root: str, below: bool) -> None:
    assert validate_module._under(path, root) is below
