"""What ``nvme-agent run`` loads (issue 13): building the command line, as every command does,
imports neither the harness nor pyudev's users outside the daemon's own path."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """\
import json, sys
from nvme_agent.cli.main import build_parser
build_parser()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("nvme_agent.harness"))))
"""


def test_building_the_parser_imports_no_harness_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
