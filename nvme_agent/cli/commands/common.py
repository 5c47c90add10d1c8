"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys
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
from nvme_agent.cli.output import printable
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
        help="print JSON lines (one object per record, each with 'type', 'nsid' and 'time')",
    )


def control_socket(runtime_dir: Path) -> str:
    return str(RuntimePaths(runtime_dir=runtime_dir).control_socket)


def ask(
    runtime_dir: Path,
    payload: dict[str, Any],
    timeout: float = 120.0,
    *,
    progress: str | None = None,
) -> dict[str, Any]:
    """One control request; an unreachable daemon raises the matching :class:`CliError`.

    ``progress``: ask for progress lines and print each on stderr, prefixed with this (the
    command's name), and say every :data:`TICK` seconds without one that it still waits.
    """
    path = control_socket(runtime_dir)
    try:
        if progress is None:
            return request(path, payload, timeout=timeout)
        prefix = progress
        return request(
            path,
            payload,
            timeout=timeout,
            on_progress=lambda line: _say(prefix, progress_text(line)),
            tick=TICK,
            on_tick=lambda seconds: _say(prefix, f"still working ({seconds:.0f} s)"),
        )
    except ControlError as exc:
        if isinstance(exc.__cause__, PermissionError):
            raise DeniedError(
                f"{exc} (root or a member of the nvme-agent group only)", Exit.DENIED
            ) from exc
        raise NoDaemonError(str(exc)) from exc


#: Seconds without progress after which a waiting command says it still waits.
TICK = 10.0


def _say(prefix: str, text: str) -> None:
    print(printable(f"{prefix}: {text}"), file=sys.stderr, flush=True)


def progress_text(line: dict[str, Any]) -> str:
    """One human line for a progress line of eject or reconcile (values escaped by the
    caller: holders' commands are any local user's choice)."""
    stage = line.get("stage")
    if stage == "plan" and "targets" in line:
        return f"applying the policy to {len(line['targets'])} target(s)"
    if stage == "plan":
        actions = "; ".join(str(a) for a in line.get("actions") or []) or "nothing to run"
        return f"nsid {line.get('nsid')} ({line.get('device')}): {actions}"
    if stage == "held":
        holders = ", ".join(
            f"{h.get('name')}[{h.get('pid')}] ({','.join(h.get('how') or [])})"
            for h in line.get("holders") or []
        )
        return f"{line.get('mountpoint')} is held by {holders}"
    if stage == "signalled":
        return (
            f"sent {line.get('signal')} to pid {line.get('pid')} (uid {line.get('uid')}, "
            f"{line.get('command')}) holding {line.get('mountpoint')}; waiting for it"
        )
    if stage == "result":
        nsid = line.get("nsid")
        text = f"{line.get('action')} (nsid {nsid}): {line.get('status')} {line.get('message', '')}"
        return text + (f" ({line['error']})" if line.get("error") else "")
    return str({k: v for k, v in line.items() if k != "progress"})


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
