"""RELIABILITY.md stays true to the tests that produce it (issue 16.4): its tables are what
``tests/support/reliability_doc.py`` renders, every test it names exists (pytest's own
collection), every fault of issue 16.2 has a row whose test asserts what the row claims, and
the soak's figures have the format ``make soak`` writes."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from support import reliability_doc as doc
from support.storm import SOAK, Figures, StormSpec, counts, schedule

REPO = Path(__file__).resolve().parent.parent
TEXT = doc.DOC.read_text(encoding="utf-8")

#: Issue 16.2's list of faults, as the issue words them.
ISSUE_16_2 = (
    "a filesystem that fails to mount (corrupt image)",
    "fsck failing",
    "the device removed during fsck",
    "the device removed during mount",
    "a hook that hangs",
    "a hook that exits non-zero",
    "a hook that forks a daemon child",
    "systemctl missing",
    "systemctl failing",
    "the state directory read-only",
    "the state directory full (ENOSPC)",
    "no journal socket",
    "the policy file deleted at reload",
    "the policy file unreadable at reload",
    "the clock jumping",
)


def test_the_document_is_what_the_generator_renders() -> None:
    assert doc.update(TEXT) == TEXT, "run: .venv/bin/python -m tests.support.reliability_doc"


def test_the_generator_runs_as_a_module_and_checks() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.reliability_doc", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def _cited() -> set[str]:
    return set(re.findall(r"(tests/[\w/]+\.py::\w+(?:\[[^\]]*\])?)", TEXT))


def _named_in_tables() -> Iterator[str]:
    for f in doc.FAULTS:
        yield f.test
    for h in doc.HOSTILE:
        yield from h.tests
    for _, _, test, _ in doc.STORMS:
        yield test


@cache
def _collected(files: tuple[str, ...]) -> frozenset[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    ids = frozenset(line for line in proc.stdout.splitlines() if "::" in line)
    assert ids, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ids


def test_every_test_the_document_names_exists() -> None:
    named = set(_named_in_tables()) | _cited()
    files = tuple(sorted({n.split("::")[0] for n in named}))
    collected = _collected(files)
    functions = {c.split("[")[0] for c in collected}
    missing = sorted(n for n in named if n not in collected and n not in functions)
    assert not missing, missing
    assert _cited() >= set(_named_in_tables())  # and the tables show them


def test_every_fault_of_issue_16_2_has_a_row() -> None:
    rows = [line.split("|")[1].strip() for line in TEXT.splitlines() if line.startswith("| ")]
    for fault in ISSUE_16_2:
        assert any(row.startswith(fault) for row in rows), fault


def _functions(text: str, name: str) -> list[ast.FunctionDef]:
    tree = ast.parse(text)
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]


def _source(test: str) -> str:
    file, name = test.split("::")
    text = (REPO / file).read_text(encoding="utf-8")
    [node] = _functions(text, name.split("[")[0])
    body = ast.get_source_segment(text, node) or ""
    # A test that delegates to a helper of its module asserts there.
    for call in re.findall(r"^\s+(_\w+)\(", body, re.M):
        body += "".join(ast.get_source_segment(text, h) or "" for h in _functions(text, call))
    return body


@pytest.mark.parametrize("fault", doc.FAULTS, ids=lambda f: f.fault)
def test_each_fault_row_is_asserted_by_its_test(fault: doc.Fault) -> None:
    source = _source(fault.test)
    for evidence in fault.evidence:
        assert evidence in source, f"{fault.test} does not assert {evidence!r}"
    assert doc.reproduce(fault.test) in TEXT


def test_the_soak_figures_have_the_soak_s_format() -> None:
    if not doc.FIGURES.exists():
        assert doc.NO_SOAK in TEXT and "## Soak attempts" in TEXT
        pytest.skip("no complete soak yet: RELIABILITY.md says so and lists the attempts")
    data = doc.load_figures()
    assert set(data) == {"spec", "tried", "figures", "machine"}
    spec = StormSpec(**data["spec"])
    ops = schedule(spec)
    assert data["tried"] == dict(counts(ops)), "the figures are not of this spec's schedule"
    fig = data["figures"]
    assert set(fig) == {f.name for f in dataclasses.fields(Figures)}
    checkpoints = fig["checkpoints"]
    assert len(checkpoints) == counts(ops)["checkpoint"] + 1  # and one at the end
    keys = {"fds", "threads", "rss_kib", "incarnation", "op", "namespaces", "mounted", "seconds"}
    assert all(set(c) == keys for c in checkpoints)
    assert [c["incarnation"] for c in checkpoints] == sorted(c["incarnation"] for c in checkpoints)
    assert checkpoints[-1]["incarnation"] == spec.kills + 1  # one per restart
    assert fig["history_records"] >= spec.steps
    assert set(data["machine"]) == {"cpus", "cpu", "mem_mib", "kernel", "python", "load_at_end"}


def test_the_soak_is_issue_16_s_or_says_it_was_reduced() -> None:
    assert SOAK.steps == 10_000 and SOAK.kills == 5 and SOAK.reloads == 20
    if not doc.FIGURES.exists():
        pytest.skip("no complete soak yet")
    spec = StormSpec(**doc.load_figures()["spec"])
    if spec == SOAK:
        assert "**reduced**" not in TEXT
    else:
        assert f"**reduced**: {spec.describe()}, not" in TEXT
