"""The package where an unprivileged user can import it.

Tests run commands as ``nobody`` (rights, refusals).  The checkout may sit where nobody else
can read it: a clone under ``/root`` (0700 on Debian) or in a private temporary directory,
and the venv's python lives there too.  So those commands run Debian's ``/usr/bin/python3``
(``make setup`` installs the dependencies as Debian packages) on a copy of the package in
a directory anyone may read.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.cache
def readable_source() -> str:
    """A directory holding a copy of ``nvme_agent`` that every user can read (for
    ``PYTHONPATH`` or ``sys.path``); removed when the test run ends."""
    top = Path(tempfile.mkdtemp(prefix="nvme-agent-src-"))
    atexit.register(shutil.rmtree, top, True)
    top.chmod(0o755)
    shutil.copytree(
        REPO / "nvme_agent", top / "nvme_agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in top.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return str(top)
