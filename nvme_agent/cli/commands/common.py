"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nvme_agent.cli.clidoc import Completion, hint
from nvme_agent.cli.exits import (
    CliError,
    DeniedError,
    Exit,
    NoDaemonError,
    describe_exits,
    error_for_os,
)
from nvme_agent.cli.main import DEFAULT_POLICY, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR
from nvme_agent.outputs.paths import RuntimePaths
from nvme_agent.service.control import ControlError, request


def with_exits(description: str, meanings: dict[Exit, str]) -> str:
    """A subcommand's description followed by the exit statuses it uses."""
    return f"{description}\n\n{describe_exits(meanings)}"


def add_runtime_dir(p: argparse.ArgumentParser) -> None:
    action = p.add_argument(
        "--runtime-dir",
        type=Path,
        default=Path(DEFAULT_RUNTIME_DIR),
        metavar="DIR",
        help=f"where the daemon's sockets and state file live (default {DEFAULT_RUNTIME_DIR})",
    )
    hint(action, Completion.DIRECTORY)


def add_state_dir(p: argparse.ArgumentParser) -> None:
    action = p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(DEFAULT_STATE_DIR),
        metavar="DIR",
        help=f"history and mount ledger (default {DEFAULT_STATE_DIR})",
    )
    hint(action, Completion.DIRECTORY)


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
    return str(RuntimePaths(runtime_dir=runtime_dir).control_socket)


def ask(runtime_dir: Path, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """One control request; an unreachable daemon raises the matching :class:`CliError`."""
    path = control_socket(runtime_dir)
    try:
        return request(path, payload, timeout=timeout)
    except ControlError as exc:
        if isinstance(exc.__cause__, PermissionError):
            raise DeniedError(
                f"{exc} (root or a member of the nvme-agent group only)", Exit.DENIED
            ) from exc
        raise NoDaemonError(str(exc)) from exc


def policy_problem(path: str | Path) -> CliError | None:
    """Why the policy given on the command line cannot be used, or None when it is valid."""
    from nvme_agent.policy import PolicyError, load_policy

    try:
        load_policy(path)
    except OSError as exc:
        return error_for_os(exc, f"policy {path}")
    except PolicyError as exc:
        return CliError(f"invalid policy {path}:\n{exc}", Exit.FAILED)
    return None
