"""One RuntimePaths (nvme_agent/outputs/paths.py) and one size formatter
(nvme_agent/policy/units.format_size) for the daemon, the CLI and the harness (issue 15.4)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nvme_agent.actions.ledger import LEDGER_FILE
from nvme_agent.cli import main as cli
from nvme_agent.harness.agent import AgentProcess
from nvme_agent.outputs.paths import DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR, RuntimePaths
from nvme_agent.policy.units import format_size, parse_size


def test_runtime_paths() -> None:
    paths = RuntimePaths(Path("/r"), Path("/s"))
    assert paths.control_socket == Path("/r/control.sock")
    assert paths.events_socket == Path("/r/events.sock")
    assert paths.state_file == Path("/r/topology.json")
    assert paths.history_file == Path("/s/history.jsonl")
    assert paths.ledger_file == Path("/s") / LEDGER_FILE
    default = RuntimePaths()
    assert (default.runtime_dir, default.state_dir) == (DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR)
    assert str(DEFAULT_RUNTIME_DIR) == cli.DEFAULT_RUNTIME_DIR
    assert str(DEFAULT_STATE_DIR) == cli.DEFAULT_STATE_DIR


def test_the_harness_uses_the_same_names(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "policy.yaml", {}, workdir=tmp_path)
    paths = RuntimePaths(tmp_path / "run", tmp_path / "state")
    assert agent.control_socket == str(paths.control_socket)
    assert agent.events_socket == str(paths.events_socket)
    assert agent.command()[agent.command().index("--runtime-dir") + 1] == str(paths.runtime_dir)


def test_format_size() -> None:
    assert format_size(None) == "?"
    assert format_size(0) == "0B"
    assert format_size(1000) == "1000B"
    assert format_size(512 * 2**20) == "512MiB"
    assert format_size(3 * 2**40) == "3TiB"
    assert format_size(1000204886016) == "931.5GiB (1000204886016B)"
    # Truncated: just below 1GiB never reads as 1GiB.
    assert format_size(2**30 - 1) == "1023.9MiB (1073741823B)"


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_names_the_exact_bytes_or_an_exact_unit(size: int) -> None:
    text = format_size(size)
    exact = text.rsplit("(", 1)[-1].rstrip(")") if "(" in text else text
    assert parse_size(exact) == size
