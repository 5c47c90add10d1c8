"""The README's generated tables: subcommands, exit statuses, journal MESSAGE_IDs, metrics.

Each lives between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; the rows come from
the argparse tree, :mod:`nvme_agent.cli.exits`, :mod:`nvme_agent.outputs.message_ids` and
:mod:`nvme_agent.outputs.metrics`.
``python3 -m nvme_agent.cli.readme README.md`` rewrites them in place; ``--check`` only says
whether they are current (a test runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nvme_agent.cli import exits
from nvme_agent.cli import main as cli
from nvme_agent.cli.clidoc import describe
from nvme_agent.outputs.message_ids import MESSAGES
from nvme_agent.outputs.metrics import METRICS, PREFIX


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def commands_table() -> str:
    """Every subcommand with its one-line help."""
    rows = ["| command | what it does |", "| --- | --- |"]
    for sub in describe(cli.build_parser()).subcommands:
        rows.append(f"| `{sub.name}` | {_cell(sub.summary)} |")
    return "\n".join(rows)


def exits_table() -> str:
    """The exit statuses every command uses."""
    rows = ["| status | name | meaning |", "| --- | --- | --- |"]
    for row in exits.EXITS:
        rows.append(f"| {int(row.code)} | `{row.name}` | {_cell(row.meaning)} |")
    return "\n".join(rows)


def message_ids_table() -> str:
    """Every MESSAGE_ID with its name and subject."""
    rows = ["| MESSAGE_ID | name | what happened |", "| --- | --- | --- |"]
    for doc in MESSAGES:
        subject = re.sub(r"@([A-Z_]+)@", r"`\1`", doc.subject)
        rows.append(f"| `{doc.message_id}` | `{doc.name}` | {_cell(subject)} |")
    return "\n".join(rows)


def metrics_table() -> str:
    """Every metric of the metrics file, with its ``status --json`` key."""
    rows = [
        "| metric | type | `status --json` counters key | what it counts |",
        "| --- | --- | --- | --- |",
    ]
    for m in METRICS:
        labels = "{" + ",".join(m.labels) + "}" if m.labels else ""
        rows.append(f"| `{PREFIX}{m.name}{labels}` | {m.kind} | `{m.key}` | {_cell(m.help)} |")
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[], str]] = {
    "commands": commands_table,
    "exit-statuses": exits_table,
    "message-ids": message_ids_table,
    "metrics": metrics_table,
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {re.escape(name)} [^\n]*-->\n)(.*?)(<!-- end: {re.escape(name)} -->)",
        re.S,
    )


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda m: f"{m.group(1)}{body}\n{m.group(3)}"


def fill_blocks(
    text: str, blocks: Mapping[str, Callable[[], str]], where: str = "the README"
) -> str:
    """``text`` with each ``<!-- generated: NAME ... -->`` ... ``<!-- end: NAME -->`` block
    rewritten by ``blocks[NAME]()``; a missing block is an error naming ``where``.  (The
    README, RELIABILITY.md and the README's benchmark figures are kept this one way.)"""
    for name, make in blocks.items():
        pattern = _block(name)
        if pattern.search(text) is None:
            raise ValueError(f"no block <!-- generated: {name} ... --> in {where}")
        # A function replacement: the table's text is not a regex template.
        text = pattern.sub(_replacement(make()), text)
    return text


def update(text: str) -> str:
    """``text`` with every generated block rewritten; a missing block is an error."""
    return fill_blocks(text, BLOCKS)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nvme_agent.cli.readme [--check] README``."""
    ap = argparse.ArgumentParser(
        prog="python3 -m nvme_agent.cli.readme",
        description="Rewrite (or check) the generated tables of the README.",
    )
    ap.add_argument("readme", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if a table is out of date")
    args = ap.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = update(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: generated tables out of date; run {ap.prog}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
