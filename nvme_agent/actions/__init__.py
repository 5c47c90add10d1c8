"""The agent's hands: mount, unmount, hooks, units, signals, grow, and the runner for plans."""

from nvme_agent.actions.ledger import LedgerEntry, MountLedger
from nvme_agent.actions.runner import ActionRunner

__all__ = ["ActionRunner", "LedgerEntry", "MountLedger"]
