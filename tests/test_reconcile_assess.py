"""Calling off an assessment (``service.reconcile.assess``): after a reload the daemon decides
every present target under the new policy in a worker thread, close to a second of CPU with
a thousand namespaces and rules.  When another reload begins or the daemon stops, that answer
is moot: ``called_off`` is asked before each target and the assessment ends there, having
decided nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.policy import namespace, topology

from nvme_agent.policy import decide, load_policy_text
from nvme_agent.service import reconcile
from nvme_agent.service.reconcile import Applied, CalledOff, Target, assess, drift
from nvme_agent.service.recovery import present_changes


def mounting_below(directory: str) -> str:
    return (
        "version: 1\ndefaults: {mount_root: /srv/nvme}\nrules:\n  - match: {fs_type: ext4}\n"
        f'    on_add: [{{mount: {{path: "/srv/nvme/{directory}/{{label}}"}}}}]\n'
    )


OLD = load_policy_text(mounting_below("old"))
NEW = load_policy_text(mounting_below("new"))
SNAP = topology(*(namespace(n, label=f"disk{n}") for n in range(1, 7)))
APPLIED = {t: Applied(OLD) for c in present_changes(SNAP) if (t := Target.of(c)) is not None}


def after(n: int) -> Callable[[], bool]:
    """False for the first ``n`` questions, then True."""
    asked = [0]

    def called_off() -> bool:
        asked[0] += 1
        return asked[0] > n

    return called_off


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The nsid of every decision ``assess`` makes (the real ``decide``, counted)."""
    seen: list[int] = []

    def counted(change: Any, *args: Any) -> Any:
        seen.append(change.nsid)
        return decide(change, *args)

    monkeypatch.setattr(reconcile, "decide", counted)
    return seen


def test_never_called_off_it_decides_every_target(decisions: list[int]) -> None:
    found = drift(SNAP, NEW, APPLIED, called_off=after(10**6))
    assert [d.nsid for d in found] == [1, 2, 3, 4, 5, 6]
    # the new policy's plan and the old one's (its actions were never recorded)
    assert decisions == [n for n in range(1, 7) for _ in (NEW, OLD)]


@pytest.mark.parametrize("targets", [0, 1, 3, 5])
def test_called_off_it_stops_before_the_next_target(decisions: list[int], targets: int) -> None:
    with pytest.raises(CalledOff):
        assess(SNAP, NEW, APPLIED, called_off=after(1 + targets))  # asked first, then per target
    assert decisions == [n for n in range(1, targets + 1) for _ in (NEW, OLD)]


def test_called_off_before_it_began_it_decides_nothing_even_with_no_targets(
    decisions: list[int],
) -> None:
    for snap in (SNAP, topology()):
        with pytest.raises(CalledOff):
            drift(snap, NEW, APPLIED, called_off=lambda: True)
    assert decisions == []
