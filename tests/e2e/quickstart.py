"""The README's "Quick start: the operator's first five minutes", read from README.md.

The commands the test runs in the guest are the README's own shell blocks: a change of the
README changes what the test runs, and a command the test does not know fails it (so README
and test cannot drift apart).  Each command keeps the comment the README prints after it
(what the operator is promised to see).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTION = "## Quick start: the operator's first five minutes"


@dataclass(frozen=True)
class Command:
    """One command of the quick start: the shell text and the promise in its comment."""

    shell: str
    promise: str


def section(text: str) -> str:
    """The quick start section (up to the next heading of any level)."""
    start = text.index(SECTION) + len(SECTION)
    end = re.search(r"^#{2,3} ", text[start:], re.MULTILINE)
    return text[start : start + end.start()] if end else text[start:]


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```sh blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[Command]:
    """A block's commands: a here-document is one command (its comment lines are data), any
    other line is a command with an optional ``# promise``."""
    if "<<'EOF'" in block:
        return [Command(block.rstrip("\n") + "\n", "")]
    found = []
    for line in block.splitlines():
        shell, _, promise = line.partition("  # ")
        if shell.strip():
            found.append(Command(shell.strip(), promise.strip()))
    return found


def quick_start(readme: Path = README) -> list[Command]:
    """Every command of the README's quick start, in order."""
    return [c for b in shell_blocks(section(readme.read_text())) for c in commands(b)]
