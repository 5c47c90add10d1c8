"""``nvme-agent`` that can be killed at one exact point: as it writes its state (a script).

Usage: ``kill_agent.py run ARGS...`` with ``NVME_AGENT_TEST_KILL_AT_STATE=PATH`` in the
environment.  Once the file at ``PATH`` exists, the next append to the state log renames it
``PATH.done`` and sends the daemon ``SIGKILL`` before a byte is written: a ``kill -9`` that
lands after a batch was decided and streamed and before its state reached the disk, which
a test cannot aim at from outside.  Everything else is the product's own code.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from nvme_agent.cli.main import main
from nvme_agent.outputs.state import StateFile

TRIGGER_ENV = "NVME_AGENT_TEST_KILL_AT_STATE"


def _killed_at_append(trigger: Path) -> None:
    append = StateFile.append

    def append_or_die(self: StateFile, line: str) -> bool:
        if trigger.exists():
            os.replace(trigger, trigger.with_name(trigger.name + ".done"))
            os.kill(os.getpid(), signal.SIGKILL)
        return append(self, line)

    StateFile.append = append_or_die  # type: ignore[method-assign]


if __name__ == "__main__":
    _killed_at_append(Path(os.environ[TRIGGER_ENV]))
    sys.exit(main(sys.argv[1:]))
