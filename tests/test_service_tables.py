"""The service's tables are one source each, and what shows them agrees: the reasons of the
control answers, the command table with its rights, the README; and the refusal log."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from nvme_agent.outputs.refusals import RefusalLog
from nvme_agent.service import answers, requests
from nvme_agent.service.access import Peer, Right, rights_of, who_has
from nvme_agent.service.answers import REASONS, Reason, failure

README = Path(__file__).resolve().parents[1] / "README.md"


def _rst_rows(doc: str) -> list[list[str]]:
    """(first cell, second cell) of each row of the first simple reST table in ``doc``."""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    rows = []
    for line in lines[rules[1] + 1 : rules[2]]:
        match = re.match(r"^``([a-z-]+)``\s+(\S+)", line)
        if match:  # else a continuation line of the last cell
            rows.append([match.group(1), match.group(2)])
    return rows


def test_the_reasons_docstring_is_the_table() -> None:
    rows = _rst_rows(answers.__doc__ or "")
    assert [r for r, _meaning in rows] == [r.value for r in REASONS]
    assert set(REASONS) == set(Reason)


def test_a_failure_names_its_reason() -> None:
    answer = failure(Reason.DENIED, "permission denied", right="admin")
    assert answer == {
        "ok": False,
        "error": "permission denied",
        "reason": "denied",
        "right": "admin",
    }


def test_the_commands_docstring_and_the_readme_list_the_table() -> None:
    rows = _rst_rows(requests.__doc__ or "")
    assert rows == [[name, c.right.value] for name, c in requests.COMMANDS.items()]
    readme = README.read_text()
    for name, command in requests.COMMANDS.items():
        assert re.search(rf"^\| `{name}` \| {command.right.value} \|", readme, re.M), name
    for reason in Reason:
        assert f"`{reason.value}`" in readme, reason


def test_rights() -> None:
    root = Peer(1, 0, 0, frozenset())
    assert rights_of(root, "grp-r", None) == frozenset(Right)
    nobody = Peer(1, 65534, 65534, frozenset())
    assert rights_of(nobody, "root", "root") == frozenset()
    member = Peer(1, 65534, 65534, frozenset({0}))  # in group "root" (gid 0), as a stand-in
    assert rights_of(member, "root", None) == frozenset({Right.READ})
    assert rights_of(member, "nosuchgroup-xyz", "root") == frozenset(Right)
    primary = Peer(1, 65534, 0, frozenset())
    assert rights_of(primary, "root", None) == frozenset({Right.READ})
    assert who_has(Right.ADMIN, "r", None) == "root only (the policy names no defaults.admin_group)"
    assert who_has(Right.ADMIN, "r", "ops") == (
        "root and members of group 'ops' (defaults.admin_group)"
    )
    assert who_has(Right.READ, "r", "ops") == (
        "root, members of group 'r' and members of group 'ops' (defaults.admin_group)"
    )


def test_a_flood_of_refusals_is_one_warning_then_one_summary_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    refusals = RefusalLog(logging.getLogger("t"), window=60, clock=lambda: now[0])
    logged = [refusals.refused("busy", f"peer {i}") for i in range(1000)]
    assert logged == [True] + [False] * 999
    refusals.flush()  # the window is still open: nothing yet
    assert [r.getMessage() for r in caplog.records] == [
        "busy: peer 0 (more of these are counted for 60s)"
    ]
    now[0] += 61
    refusals.flush()
    assert caplog.records[-1].getMessage() == "999 more refusal(s) of this kind: busy, in 61s"
    assert refusals.refused("busy", "again") is True  # a new window
    refusals.refused("other", "x")
    refusals.flush(everything=True)
    assert len(caplog.records) == 4 and refusals.total == 1002
