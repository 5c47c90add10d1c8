"""The man page generated from the argparse tree (nvme_agent.cli.manpage, nvme_agent.cli.clidoc)."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest
from support.manpages import render

from nvme_agent.cli import exits, manpage
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import describe
from nvme_agent.outputs import message_ids


def tricky_parser() -> argparse.ArgumentParser:
    """A parser with what real subcommands use: groups, choices, nargs, roff-hostile help."""
    parser = argparse.ArgumentParser(prog="tool", description="Does things: many things.")
    parser.add_argument("-q", "--quiet", action="store_true", help="say less")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    alpha = sub.add_parser(
        "alpha",
        help="first command",
        description=".starts with a dot\n\nsecond paragraph with a back\\slash",
        epilog="'quoted start of an epilog",
    )
    alpha.add_argument("paths", nargs="+", metavar="PATH", help="one or more paths")
    alpha.add_argument(
        "--mode", choices=["fast", "slow"], default="fast", help="speed (default: %(default)s)"
    )
    alpha.add_argument("--secret", help=argparse.SUPPRESS)
    group = alpha.add_argument_group("output", "How results are written.")
    group.add_argument("--json", action="store_true", help="JSON lines")
    group.add_argument("--out", required=True, metavar="FILE", help="where to")
    sub.add_parser("beta", help="second command")
    sub.add_parser("hidden")  # no help=: not documented
    return parser


@pytest.fixture(scope="module")
def page() -> str:
    return manpage.render(date="2025-01-01")


def section(text: str, title: str) -> str:
    match = re.search(rf"^\.SH {re.escape(title)}\n(.*?)(?=^\.SH |\Z)", text, re.M | re.S)
    assert match, f"no section {title}"
    return match.group(1)


def test_every_subcommand_of_the_parser_has_a_section(page: str) -> None:
    subcommands = describe(cli.build_parser()).subcommands
    assert subcommands, "build_parser() has subcommands"
    commands = section(page, "COMMANDS")
    for sub in subcommands:
        assert f'.SS "{manpage.roff_escape(sub.name)}"' in commands, sub.name


def test_every_option_of_every_subcommand_is_documented(page: str) -> None:
    top = describe(cli.build_parser())
    for cmd in top.walk():
        for opt in cmd.options:
            for flag in opt.flags:
                assert f"\\fB{manpage.roff_escape(flag)}\\fR" in page, f"{cmd.name} {flag}"
            if opt.help:
                first_words = " ".join(opt.help.split()[:3])
                assert manpage.roff_escape(first_words) in page, f"{cmd.name} {opt.dest}"


def test_header_files_exit_status_and_message_ids(page: str) -> None:
    assert page.startswith('.\\"')
    assert re.search(r'^\.TH "NVME-AGENT" "8" "2025-01-01" "nvme-agent \d', page, re.M)
    files = section(page, "FILES")
    for path in (cli.DEFAULT_POLICY, cli.DEFAULT_RUNTIME_DIR, cli.DEFAULT_STATE_DIR):
        assert manpage.roff_escape(path) in files
    exit_text = section(page, "EXIT STATUS")
    for row in exits.EXITS:
        assert f"\\fB{int(row.code)}\\fR ({manpage.roff_escape(row.name)})" in exit_text
    journal_text = section(page, "JOURNAL")
    for doc in message_ids.MESSAGES:
        assert f"\\fB{manpage.roff_escape(doc.name)}\\fR {doc.message_id}" in journal_text


def test_source_date_epoch_sets_the_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert '"2023-11-14"' in manpage.render()


def test_roff_escape() -> None:
    assert manpage.roff_escape("a-b") == "a\\-b"
    assert manpage.roff_escape("back\\slash") == "back\\eslash"
    assert manpage.roff_escape(".TH x\n'y") == "\\&.TH x\n\\&'y"


def test_tricky_parser_rendering() -> None:
    text = manpage.render(tricky_parser(), date="2025-01-01")
    assert '.SS "tool alpha"' in text and '.SS "tool beta"' in text
    assert "hidden" not in text
    assert "secret" not in text
    assert "\\&.starts with a dot" in text
    assert "back\\eslash" in text
    assert "\\&'quoted start" in text
    assert "speed (default: fast)" in text
    assert "\\fB\\-\\-mode\\fR \\fI{fast,slow}\\fR" in text
    assert "\\fIPATH [PATH ...]\\fR" in text
    # required option without brackets in the synopsis, optional ones with
    assert "\\fB\\-\\-out\\fR \\fIFILE\\fR" in text
    assert "[\\fB\\-\\-json\\fR]" in text
    assert "\\fIOutput\\fR" in text and "How results are written." in text


def render_warnings(path: Path) -> tuple[str, str]:
    """(groff warnings, man's rendering stderr) for the page at ``path``."""
    page = render(path)
    assert page.man_rc == 0, page.man_err
    assert "COMMANDS" in page.text
    return page.groff_err, page.man_err


@pytest.mark.parametrize("which", ["nvme-agent", "tricky"])
def test_man_renders_without_warnings(tmp_path: Path, which: str) -> None:
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.skip("man/groff missing (make setup installs man-db and groff-base)")
    parser = cli.build_parser() if which == "nvme-agent" else tricky_parser()
    path = tmp_path / "page.8"
    path.write_text(manpage.render(parser, date="2025-01-01"))
    groff_err, man_err = render_warnings(path)
    assert groff_err == ""
    assert man_err == ""


def test_warning_check_catches_bad_roff(tmp_path: Path) -> None:
    """Control: the rendering check does report broken roff."""
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.skip("man/groff missing (make setup installs man-db and groff-base)")
    path = tmp_path / "bad.8"
    path.write_text(manpage.render(date="2025-01-01") + ".XYZZY unknown macro\n\\*[nosuch]\n")
    groff_err, man_err = render_warnings(path)
    assert groff_err or man_err


def test_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "nvme-agent.8"
    assert manpage.main(["-o", str(out), "--date", "2025-01-01"]) == 0
    assert out.read_text() == manpage.render(date="2025-01-01")
