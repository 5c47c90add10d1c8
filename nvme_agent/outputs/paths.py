"""Where the daemon keeps its sockets and files: one :class:`RuntimePaths` for all.

The daemon, the command line and the harness all build the same names from a runtime
directory (sockets and the state file, gone at reboot) and a state directory (history and
the mount ledger, kept across reboots).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvme_agent.actions.ledger import LEDGER_FILE

DEFAULT_RUNTIME_DIR = Path("/run/nvme-agent")
DEFAULT_STATE_DIR = Path("/var/lib/nvme-agent")


@dataclass(frozen=True, slots=True)
class RuntimePaths:
    """The daemon's files below ``runtime_dir`` and ``state_dir``."""

    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    state_dir: Path = DEFAULT_STATE_DIR

    @property
    def control_socket(self) -> Path:
        """JSON requests (status, reload, eject...): root and the nvme-agent group."""
        return self.runtime_dir / "control.sock"

    @property
    def events_socket(self) -> Path:
        """The event stream (``nvme-agent watch``)."""
        return self.runtime_dir / "events.sock"

    @property
    def state_file(self) -> Path:
        """The state checkpoint: topology, handled and ejected disks, policy generation."""
        return self.runtime_dir / "topology.json"

    @property
    def state_log(self) -> Path:
        """What changed since the checkpoint, one line per batch, each written before the
        batch's actions run."""
        return self.runtime_dir / "topology.log"

    @property
    def history_file(self) -> Path:
        """The append-only history of topology changes (rotated to ``.1`` ... ``.N``)."""
        return self.state_dir / "history.jsonl"

    @property
    def ledger_file(self) -> Path:
        """The mounts the agent made and the directories it created."""
        return self.state_dir / LEDGER_FILE
