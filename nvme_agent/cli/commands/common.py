"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from nvme_agent.cli.main import DEFAULT_POLICY, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR


def add_runtime_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime-dir",
        type=Path,
        default=Path(DEFAULT_RUNTIME_DIR),
        help=f"where the daemon's sockets and state file live (default {DEFAULT_RUNTIME_DIR})",
    )


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(DEFAULT_STATE_DIR),
        help=f"history and mount ledger (default {DEFAULT_STATE_DIR})",
    )


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        default=Path(DEFAULT_POLICY),
        help=f"policy file (default {DEFAULT_POLICY})",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON lines (one object per record, each with 'type' and 'nsid')",
    )


def control_socket(runtime_dir: Path) -> str:
    return str(runtime_dir / "control.sock")


def policy_problem(path: str | Path) -> str | None:
    """Why the policy given on the command line cannot be used, or None when it is valid."""
    from nvme_agent.policy import PolicyError, load_policy

    try:
        load_policy(path)
    except (OSError, PolicyError) as exc:
        return f"policy {path}: {exc}"
    return None
