"""The README: the operator's path first, commands that run as written, generated tables current
(issues 14.1, 14.10)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nvme_agent import __version__
from nvme_agent.cli import readme
from nvme_agent.cli.main import build_parser
from nvme_agent.policy import load_policy_text

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text()


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def quick_start(text: str) -> str:
    return section(text, "Quick start")


def test_opens_with_the_operator_path_and_keeps_the_developer_commands(text: str) -> None:
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0].startswith("Quick start"), headings
    before = text.split("\n## ", 1)[0]
    assert "make demo" in before and "make test" in before
    assert "(CONTRIBUTING.md)" in before
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    for moved in ("## Tests", "## Scenarios", "## Performance", "make demo", "make test"):
        assert moved in contributing, moved


def test_terms_are_explained(text: str) -> None:
    terms = section(text, "Quick start").split("### Terms", 1)[1]
    for term in ("Coldplug", "Ledger", "Generation", "plan key", "Identity", "Eject"):
        assert f"**{term}" in terms or term in terms, term


def shell_lines(block: str) -> list[str]:
    """Command lines of ```sh blocks, comments stripped, heredoc bodies skipped."""
    lines: list[str] = []
    heredoc: str | None = None
    for block_text in re.findall(r"```sh\n(.*?)```", block, re.S):
        for raw in block_text.splitlines():
            if heredoc is not None:
                heredoc = None if raw.strip() == heredoc else heredoc
                continue
            line = raw.split("  #", 1)[0].strip()
            found = re.search(r"<<'(\w+)'", line)
            if found:
                heredoc = found.group(1)
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_quick_start_commands_parse(text: str) -> None:
    """Every nvme-agent command of the quick start is a valid command line as written."""
    commands = [shlex.split(line) for line in shell_lines(quick_start(text))]
    agent = [argv for argv in commands if argv[0] == "nvme-agent"]
    assert {argv[1] for argv in agent} >= {"check", "status", "history", "eject"}
    parser = build_parser()
    for argv in agent:
        parser.parse_args(argv[1:])  # SystemExit (2) on anything argparse refuses
    deb = f"./dist/nvme-agent_{__version__}_all.deb"
    assert ["apt", "install", deb, "nvme-cli"] in commands
    assert ["make", "deb"] in commands
    assert any(argv[:2] == ["systemctl", "reload"] for argv in commands)


def test_quick_start_policy_is_valid_with_two_rules(text: str) -> None:
    body = re.search(r"<<'EOF'\n(.*?)\nEOF\n", quick_start(text), re.S)
    assert body, "no policy heredoc in the quick start"
    policy = load_policy_text(body.group(1), "quick-start.yaml")
    assert [rule.name for rule in policy.rules] == ["keep-off", "data"]
    assert not policy.warnings
    assert body.group(1).startswith("# yaml-language-server: $schema=/usr/share/nvme-agent/")


def test_pip_route_says_pep_668_and_resets_exec_start(text: str) -> None:
    install = section(text, "Installing")
    assert "PEP 668" in install
    assert re.search(r"^ExecStart=\nExecStart=/opt/nvme-agent/bin/nvme-agent run$", install, re.M)


def test_generated_tables_are_current() -> None:
    assert readme.main(["--check", str(README)]) == 0


def test_generated_table_check_notices_drift(tmp_path: Path) -> None:
    """Control: an edited row is reported, and the rewrite restores it."""
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text().replace("| 3 | `not-found` |", "| 3 | `gone` |", 1))
    assert readme.main(["--check", str(copy)]) == 1
    assert readme.main([str(copy)]) == 0
    assert copy.read_text() == README.read_text()


def test_every_message_id_and_status_is_in_the_readme(text: str) -> None:
    from nvme_agent.cli.exits import EXITS
    from nvme_agent.outputs.message_ids import MESSAGES

    for doc in MESSAGES:
        assert f"| `{doc.message_id}` | `{doc.name}` |" in text
    for row in EXITS:
        assert f"| {int(row.code)} | `{row.name}` |" in text
