"""Generate the nvme-agent(8) man page (roff) from the argparse tree.

Every subcommand, option and help text comes from :func:`nvme_agent.cli.main.build_parser`;
file locations from :mod:`nvme_agent.cli.main`; exit statuses from :mod:`nvme_agent.cli.exits`;
journal MESSAGE_IDs from :mod:`nvme_agent.outputs.message_ids`; metrics from
:mod:`nvme_agent.outputs.metrics`.  Run
``python3 -m nvme_agent.cli.manpage -o nvme-agent.8`` (the package builds do);
``man -l nvme-agent.8`` shows it.

The date in ``.TH`` is taken from ``SOURCE_DATE_EPOCH`` when set, so package builds are
reproducible.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from collections.abc import Iterable, Sequence

from nvme_agent import __version__
from nvme_agent.cli import catalog, exits
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import CommandDoc, OptionDoc, describe, write_output
from nvme_agent.outputs import message_ids, metrics

SECTION = 8
#: Where the packages install the example policy and the JSON Schema.
SHARE_DIR = "/usr/share/nvme-agent/"


def roff_escape(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (as minus), and control characters.

    A line starting with ``.`` or ``'`` would be read as a request, so it is protected
    with the zero-width ``\\&``.
    """
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n")]
    return "\n".join(lines)


def _paragraphs(text: str) -> list[str]:
    """Split help prose into paragraphs, joining argparse's hand-wrapped lines."""
    paras = re.split(r"\n\s*\n", text.strip())
    return [" ".join(p.split()) for p in paras if p.strip()]


def _prose(text: str) -> list[str]:
    out: list[str] = []
    for i, para in enumerate(_paragraphs(text)):
        if i:
            out.append(".PP")
        out.append(roff_escape(para))
    return out


def _option_term(opt: OptionDoc) -> str:
    """``\\fB\\-p\\fR, \\fB\\-\\-policy\\fR \\fIFILE\\fR`` or ``\\fINAME\\fR``."""
    if opt.positional:
        return f"\\fI{roff_escape(opt.args)}\\fR"
    flags = ", ".join(f"\\fB{roff_escape(flag)}\\fR" for flag in opt.flags)
    if opt.takes_value:
        flags += f" \\fI{roff_escape(opt.args)}\\fR"
    return flags


def _synopsis_item(opt: OptionDoc) -> str:
    # Unbreakable spaces (``\\ ``) keep an option and its value on one line.
    value = roff_escape(opt.args).replace(" ", "\\ ")
    if opt.positional:
        return f"\\fI{value}\\fR"
    item = f"\\fB{roff_escape(opt.flags[0])}\\fR"
    if opt.takes_value:
        item += f"\\ \\fI{value}\\fR"
    return item if opt.required else f"[{item}]"


def _synopsis(cmd: CommandDoc) -> list[str]:
    words = [f"\\fB{roff_escape(cmd.name)}\\fR"]
    words += [_synopsis_item(opt) for opt in cmd.options]
    if cmd.subcommands:
        words.append("\\fISUBCOMMAND\\fR [\\fIOPTIONS\\fR]")
    # Left-adjusted and unhyphenated, as synopses are; both restored afterwards.
    return [".PP", ".ad l", ".nh", " ".join(words), ".hy", ".ad"]


def _options(cmd: CommandDoc) -> list[str]:
    out: list[str] = []
    for group in cmd.groups:
        if len(cmd.groups) > 1 or group.description:
            out += [".PP", f"\\fI{roff_escape(group.title.capitalize())}\\fR"]
            if group.description:
                out += _prose(group.description)
        for opt in group.options:
            out += [".TP", _option_term(opt)]
            out += _prose(opt.help) if opt.help else ['.\\" (no help text)']
    return out


def _command_section(cmd: CommandDoc) -> list[str]:
    out = [f'.SS "{roff_escape(cmd.name)}"']
    out += _synopsis(cmd)
    body = cmd.description or cmd.summary
    if body:
        out += [".PP", *_prose(body)]
    out += _options(cmd)
    if cmd.epilog:
        out += [".PP", *_prose(cmd.epilog)]
    return out


def _name_line(top: CommandDoc) -> str:
    """NAME section text: the program and the first clause of its description."""
    first = re.split(r"[:.;]", top.description, maxsplit=1)[0].strip()
    return f"{roff_escape(top.name)} \\- {roff_escape(first or top.name)}"


def _files() -> list[str]:
    entries = (
        (cli.DEFAULT_POLICY, "The policy (YAML): which namespaces to mount where, and hooks."),
        (
            cli.DEFAULT_RUNTIME_DIR,
            "Runtime directory: the control and event sockets of the running daemon.",
        ),
        (cli.DEFAULT_STATE_DIR, "State kept across restarts (history, what the agent mounted)."),
        (
            SHARE_DIR,
            "examples/policy.yaml (every policy feature, commented) and schema.json (the "
            "policy's JSON Schema, for editors).",
        ),
        (catalog.INSTALL_PATH, "The journal catalog: journalctl \\-x explains each MESSAGE_ID."),
    )
    out: list[str] = []
    for path, text in entries:
        out += [".TP", f"\\fI{roff_escape(path)}\\fR", roff_escape(text)]
    return out


def _exit_status() -> list[str]:
    out = [
        "Every command uses the same statuses for the same situations, so a script can "
        "tell \\(lqretry later\\(rq from \\(lqgive up\\(rq; each command's description "
        "above says which it uses."
    ]
    for row in exits.EXITS:
        out += [".TP", f"\\fB{int(row.code)}\\fR ({roff_escape(row.name)})"]
        out += [roff_escape(row.meaning)]
    return out


def _message_ids() -> list[str]:
    example = message_ids.MESSAGES[0].message_id
    out = [
        "The daemon writes one structured journal entry per topology change, per daemon "
        "event and per action outcome, each with a fixed MESSAGE_ID (they never change "
        "between releases); \\fBjournalctl \\-x\\fR explains each from the installed "
        "catalog.  Filter with, e.g.,",
        ".PP",
        ".RS",
        ".nf",
        f"journalctl \\-u nvme\\-agent MESSAGE_ID={example}",
        ".fi",
        ".RE",
    ]
    # Field names (NVME_IDENTITY_WEAK) must not be hyphenated: they are typed into journalctl.
    out.append(".nh")
    for doc in message_ids.MESSAGES:
        out += [".TP", f"\\fB{roff_escape(doc.name)}\\fR {doc.message_id}"]
        out += [roff_escape(doc.body)]
    out.append(".hy")
    return out


def _metrics() -> list[str]:
    out = [
        "\\fBrun \\-\\-metrics\\-file\\fR \\fIFILE\\fR keeps \\fIFILE\\fR current in the "
        "Prometheus text format, for node_exporter's textfile collector (point "
        "\\fB\\-\\-collector.textfile.directory\\fR at its directory): replaced atomically, "
        "at most once a second and only after a change.  \\fBstatus \\-\\-json\\fR shows the "
        "same counts in its summary record's \\fIcounters\\fR, under the key given after "
        "each metric's type; \\fBnvme_agent_info{version}\\fR is 1 and names the "
        "version.  No label carries a value from a disk.",
        ".nh",
    ]
    for m in metrics.METRICS:
        labels = "{" + ",".join(m.labels) + "}" if m.labels else ""
        term = f"\\fB{roff_escape(metrics.PREFIX + m.name + labels)}\\fR ({m.kind}; {m.key})"
        out += [".TP", term, roff_escape(m.help[0].upper() + m.help[1:] + ".")]
    out.append(".hy")
    return out


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), tz=datetime.UTC)
        if epoch
        else datetime.datetime.now(tz=datetime.UTC)
    )
    return when.strftime("%Y-%m-%d")


def render(parser: argparse.ArgumentParser | None = None, date: str | None = None) -> str:
    """The whole man page as roff text."""
    parser = parser if parser is not None else cli.build_parser()
    top = describe(parser)
    prog = top.name
    lines: list[str] = [
        '.\\" Generated by nvme_agent.cli.manpage from the argparse definitions; do not edit.',
        f'.TH "{prog.upper()}" "{SECTION}" "{date or _date()}" '
        f'"{prog} {__version__}" "System Administration"',
        ".SH NAME",
        _name_line(top),
        ".SH SYNOPSIS",
        *_synopsis(top),
    ]
    for sub in top.subcommands:
        lines += [".br", f"\\fB{roff_escape(sub.name)}\\fR [\\fIOPTIONS\\fR]"]
    lines += [".SH DESCRIPTION", *_prose(top.description)]
    if top.epilog:
        lines += [".PP", *_prose(top.epilog)]
    if top.options:
        lines += [".SH OPTIONS", *_options(top)]
    lines += [".SH COMMANDS"]
    for cmd in _subcommands(top):
        lines += _command_section(cmd)
    lines += [".SH FILES", *_files()]
    lines += [".SH JOURNAL", *_message_ids()]
    lines += [".SH METRICS", *_metrics()]
    lines += [".SH EXIT STATUS", *_exit_status()]
    lines += [
        ".SH SEE ALSO",
        ".BR nvme\\-agent.policy (5),",
        ".BR systemctl (1),",
        ".BR journalctl (1),",
        ".BR systemd.service (5),",
        ".BR udev (7)",
    ]
    return "\n".join(lines) + "\n"


def _subcommands(top: CommandDoc) -> Iterable[CommandDoc]:
    return top.walk()[1:]


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nvme_agent.cli.manpage [-o FILE]``: write the man page."""
    ap = argparse.ArgumentParser(
        prog="python3 -m nvme_agent.cli.manpage", description="Write the nvme-agent(8) man page."
    )
    ap.add_argument("-o", "--output", help="output file (default: standard output)")
    ap.add_argument("--date", help="date for the page header (default: SOURCE_DATE_EPOCH/today)")
    args = ap.parse_args(argv)
    write_output(render(date=args.date), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
