"""A man page rendered as the tests check it: groff's warnings and man's own rendering."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rendered:
    groff_rc: int
    groff_err: str
    man_rc: int
    man_err: str
    #: man's output without overstrike bold
    text: str


def render(path: Path) -> Rendered:
    """Run ``groff -ww`` and ``man --warnings -l`` on the page at ``path`` (C locale, 80
    columns)."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=env
        )

    groff = run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)])
    man = run(["man", "--warnings", "-l", str(path)])
    text = re.sub(".\b", "", man.stdout)
    return Rendered(groff.returncode, groff.stderr, man.returncode, man.stderr, text)
