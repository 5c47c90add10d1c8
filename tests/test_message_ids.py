"""The MESSAGE_ID table (nvme_agent/outputs/message_ids.py) and the journal catalog made from
it, checked with the real ``journalctl --update-catalog`` in a temporary root."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from support.packaging import require_tools

from nvme_agent.actions import messages
from nvme_agent.cli import catalog
from nvme_agent.outputs import journal
from nvme_agent.outputs.message_ids import MESSAGES, by_id
from nvme_agent.topology.changes import ChangeType

HEX_ID = re.compile(r"[0-9a-f]{32}")


def defined_ids(module: object) -> set[str]:
    """Every module-level constant of ``module`` that is a MESSAGE_ID."""
    found = {v for v in vars(module).values() if isinstance(v, str) and HEX_ID.fullmatch(v)}
    for value in vars(module).values():
        if isinstance(value, dict):
            found |= {v for v in value.values() if isinstance(v, str) and HEX_ID.fullmatch(v)}
    return found


def test_every_defined_id_is_in_the_table_once() -> None:
    ids = [doc.message_id for doc in MESSAGES]
    assert len(ids) == len(set(ids)), "an ID twice"
    assert set(ids) == defined_ids(journal) | defined_ids(messages)
    assert all(HEX_ID.fullmatch(i) for i in ids)
    names = [doc.name for doc in MESSAGES]
    assert len(names) == len(set(names))


def test_names_are_the_ones_the_code_uses() -> None:
    table = by_id()
    for change, message_id in journal.CHANGE_MESSAGE_IDS.items():
        assert table[message_id].name == change.value
        assert table[message_id].kind == "topology"
    for name, message_id in messages.ALL.items():
        assert table[message_id].name == name
        assert table[message_id].kind == "action"
    assert {t.value for t in ChangeType} <= {doc.name for doc in MESSAGES}
    # The lazy detach warning keeps its words (issue 14.10).
    assert "data may have been lost" in table[messages.LAZY_DETACH].subject


def test_catalog_entries_come_from_the_table() -> None:
    text = catalog.render()
    entries = re.findall(r"^-- ([0-9a-f]{32})\nSubject: (.*)$", text, re.M)
    assert entries == [(doc.message_id, doc.subject) for doc in MESSAGES]


def catalog_root(tmp_path: Path, text: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A root with ``text`` as the installed catalog, after ``journalctl --update-catalog``."""
    require_tools("journalctl")
    root = tmp_path / "root"
    dest = root / catalog.INSTALL_PATH.lstrip("/")
    dest.parent.mkdir(parents=True)
    dest.write_text(text)
    done = journalctl(root, "--update-catalog")
    return root, done


def journalctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["journalctl", f"--root={root}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_journalctl_accepts_the_catalog_and_lists_every_id(tmp_path: Path) -> None:
    root, done = catalog_root(tmp_path, catalog.render())
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (root / "var/lib/systemd/catalog/database").stat().st_size > 0
    listed = journalctl(root, "--list-catalog")
    assert listed.returncode == 0, listed.stderr
    lines = set(listed.stdout.splitlines())
    for doc in MESSAGES:
        assert f"{doc.message_id} nvme-agent: {doc.subject}" in lines
    lazy = by_id()[messages.LAZY_DETACH]
    dumped = journalctl(root, "--dump-catalog", lazy.message_id)
    assert dumped.returncode == 0, dumped.stderr
    assert " ".join(dumped.stdout.split()).endswith(" ".join(lazy.body.split()))
    assert "Documentation: man:nvme-agent(8)" in dumped.stdout


def test_journalctl_refuses_a_broken_catalog(tmp_path: Path) -> None:
    """Control: the check above would see a malformed file."""
    _, done = catalog_root(tmp_path, "Subject: payload before any ID\n" + catalog.render())
    assert done.returncode != 0 and "payload before ID" in done.stderr


def test_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "nvme-agent.catalog"
    assert catalog.main(["-o", str(out)]) == 0
    assert out.read_text() == catalog.render()


@pytest.mark.parametrize("doc", MESSAGES, ids=[d.name for d in MESSAGES])
def test_substituted_fields_are_ones_the_entries_carry(doc: object) -> None:
    from nvme_agent.outputs.message_ids import MessageDoc

    assert isinstance(doc, MessageDoc)
    fields = set(re.findall(r"@([A-Z_]+)@", doc.subject + doc.body))
    allowed = {
        "topology": {"NVME_NSID"}
        if doc.name.startswith(("namespace", "partition", "path"))
        else set(),
        "daemon": {"NVME_NSID"} if doc.name == "ejected" else set(),
        "action": {"NVME_ACTION"},
    }[doc.kind]
    if doc.name.startswith("controller"):
        allowed = {"NVME_CTRL"}
    assert fields <= allowed
