"""``nvme-agent`` that can be killed at one exact point of a batch (a script).

Usage: ``kill_agent.py run ARGS...`` with ``NVME_AGENT_TEST_KILL_AT_STATE=PATH`` and
``NVME_AGENT_TEST_KILL_POINT`` (``state`` or ``history``) in the environment.  Once the file
at ``PATH`` exists, the next append to the state log (``state``: before a byte of it is
written) or to the history (``history``: the state line is on disk, the history not) renames
it ``PATH.done`` and sends the daemon ``SIGKILL``: a ``kill -9`` that lands between the
writes of one batch, which a test cannot aim at from outside.  Everything else is the
product's own code.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nvme_agent.cli.main import main
from nvme_agent.outputs.state import History, StateFile

TRIGGER_ENV = "NVME_AGENT_TEST_KILL_AT_STATE"
POINT_ENV = "NVME_AGENT_TEST_KILL_POINT"


def _killing(trigger: Path, write: Callable[..., bool]) -> Callable[..., bool]:
    def write_or_die(self: Any, *args: Any) -> bool:
        if trigger.exists():
            os.replace(trigger, trigger.with_name(trigger.name + ".done"))
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, *args)

    return write_or_die


if __name__ == "__main__":
    trigger = Path(os.environ[TRIGGER_ENV])
    if os.environ.get(POINT_ENV, "state") == "history":
        History.append_lines = _killing(trigger, History.append_lines)  # type: ignore[method-assign]
    else:
        StateFile.append = _killing(trigger, StateFile.append)  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
