"""SECURITY.md stays true to the tree: every test it cites exists, and the limits it quotes
are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from nvme_agent.outputs import events
from nvme_agent.policy.loader import LIMITS
from nvme_agent.service import control

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "SECURITY.md").read_text(encoding="utf-8")


def test_every_cited_test_exists() -> None:
    cited = set(re.findall(r"`(test_[a-z_]+\.py)`", TEXT))
    assert cited, "SECURITY.md cites no tests"
    missing = sorted(name for name in cited if not (REPO / "tests" / name).is_file())
    assert not missing, missing
    assert (REPO / "tests" / "fixtures" / "hostile-policies").is_dir()


def test_quoted_limits_are_the_code_s() -> None:
    assert control.MAX_REQUEST == 64 * 1024 and "at most 64 KiB" in TEXT
    assert f"within {control.DEFAULT_READ_TIMEOUT:.0f} s" in TEXT
    assert f"within {control.DEFAULT_WRITE_TIMEOUT:.0f} s" in TEXT
    assert f"may hold {control.DEFAULT_MAX_PER_UID} connections" in TEXT
    assert f"at most {events.DEFAULT_MAX_PER_UID} subscribers per user" in TEXT
    assert f"{events.DEFAULT_MAX_SUBSCRIBERS} for all users but root" in TEXT
    assert events.DEFAULT_MAX_BUFFER == 1 << 20 and "more than 1 MiB behind" in TEXT


def test_quoted_policy_bounds_are_the_loader_s() -> None:
    assert LIMITS.max_bytes == 1 << 20 and "at most 1 MiB" in TEXT
    assert f"{LIMITS.max_depth} levels of nesting" in TEXT
    assert f"{LIMITS.max_nodes:,} nodes" in TEXT
