"""Template compilation, value sanitising, systemd escaping and size units."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.policy.templates import (
    HASH_DIGITS,
    MAX_COMPONENT_BYTES,
    TemplateError,
    check_unit_name,
    compile_template,
    component,
    systemd_escape,
)
from nvme_agent.policy.units import format_size, parse_size


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("data", "data"),
        ("../../etc", ".._.._etc"),
        ("a/b", "a_b"),
        ("..", "ns1"),
        (".", "ns1"),
        ("", "ns1"),
        (None, "ns1"),
        ("line\nbreak\x00nul", "linebreaknul"),
        ("-rf", "_rf"),
        ("  padded  ", "padded"),
        ("$(reboot)", "$(reboot)"),
        ("\u202eevil", "evil"),
    ],
)
def test_component(value: str | None, expected: str) -> None:
    assert component(value, "ns1") == expected


def test_component_bounds_bytes_on_a_character_boundary() -> None:
    label = "é" * 150  # 300 bytes of UTF-8
    out = component(label, "ns1")
    assert len(out.encode()) <= MAX_COMPONENT_BYTES
    keep = MAX_COMPONENT_BYTES - HASH_DIGITS - 1  # the prefix, then "~" and the hash
    digest = hashlib.sha256(label.encode()).hexdigest()[:HASH_DIGITS]
    assert out == "é" * (keep // 2) + "~" + digest
    odd = "a" + "é" * 100  # the cut falls in the middle of a 2-byte character
    assert component(odd, "ns1").startswith("a" + "é" * ((keep - 1) // 2) + "~")
    exact = "x" * MAX_COMPONENT_BYTES  # fits: left alone
    assert component(exact, "ns1") == exact


def test_truncation_keeps_long_values_distinct() -> None:
    """Issue 14.4: values that differ only past the cut must not render the same."""
    a, b = "p" * 70 + "1", "p" * 70 + "2"
    assert component(a, "ns1") != component(b, "ns1")
    assert all(len(component(v, "ns1").encode()) == MAX_COMPONENT_BYTES for v in (a, b))


#: Letters and digits: component() leaves them alone apart from the length bound.
_plain = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=50, max_size=120)


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain, min_size=2, max_size=6, unique=True))
def test_distinct_values_stay_distinct(values: list[str]) -> None:
    rendered = [component(v, "ns1") for v in values]
    assert all(len(r.encode("utf-8")) <= MAX_COMPONENT_BYTES for r in rendered)
    assert len(set(rendered)) == len(values)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{label.__class__}", "unknown template field"),
        ("{label[0]}", "unknown template field"),
        ("{label!r}", "conversions"),
        ("{label:>10}", "format specs"),
        ("{}", "empty field"),
        ("{label", "bad template"),
        ("label}", "bad template"),
        ("{nope}", "unknown template field {nope}"),
    ],
)
def test_bad_templates(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        compile_template(template)


def test_template_render_keeps_literals_and_braces() -> None:
    tpl = compile_template("/x/{{lit}}/{label}-{nsid}")
    assert tpl.fields == {"label", "nsid"}
    assert tpl.render({"label": "L", "nsid": "3"}, lambda f, v: v.upper()) == "/x/{lit}/L-3"


ESCAPE_CASES = [
    "data",
    "../../etc",
    "$(reboot)",
    "a/b",
    ".hidden",
    "-x",
    "é ü",
    "a\\b",
    "café/x",
    "with space",
    "colon:under_score.dot",
    "x" * 70,
]


@pytest.mark.parametrize("value", ESCAPE_CASES)
def test_systemd_escape_matches_known_rules(value: str) -> None:
    out = systemd_escape(value)
    assert "/" not in out
    assert not out.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in ":_.\\-") for c in out)


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape not installed")
@pytest.mark.parametrize("value", ESCAPE_CASES)
def test_systemd_escape_matches_the_real_binary(value: str) -> None:
    real = subprocess.run(
        ["systemd-escape", "--", value], capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    assert systemd_escape(value) == real


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape not installed")
@pytest.mark.parametrize("path", ["/run/media/nvme-agent/data", "/", "/a//b/", "/x y/é"])
def test_systemd_escape_path_matches_the_real_binary(path: str) -> None:
    real = subprocess.run(
        ["systemd-escape", "--path", "--", path], capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    assert systemd_escape(path, path=True) == real


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape not installed")
@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0")))
def test_systemd_escape_agrees_with_binary_on_arbitrary_text(value: str) -> None:
    real = subprocess.run(
        ["systemd-escape", "--", value], capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    assert systemd_escape(value) == real


def test_systemd_escape_path_refuses_dotdot() -> None:
    with pytest.raises(TemplateError):
        systemd_escape("/a/../b", path=True)


@pytest.mark.parametrize(
    "unit", ["backup.service", "backup@x\\x2dy.service", "a-b:c_d.timer", "x@.service"]
)
def test_valid_unit_names(unit: str) -> None:
    check_unit_name(unit)


@pytest.mark.parametrize("unit", ["backup", "a b.service", "a/b.service", "x.bogus", ""])
def test_invalid_unit_names(unit: str) -> None:
    with pytest.raises(TemplateError):
        check_unit_name(unit)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("512MiB", 512 * 2**20),
        ("2TB", 2 * 10**12),
        ("1.5 GiB", 3 * 2**29),
        ("10kb", 10_000),
        ("1KiB", 1024),
        ("7 B", 7),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["12 parsecs", "1K", "-5", "", "GiB", True, 1.5, -1, "1e9"])
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512 * 2**20) == "512MiB"
    assert format_size(1000) == "1000B"
