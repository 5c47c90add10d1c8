"""Storms (issue 16): the real daemon in the umockdev bed under a long seeded random mix of
namespace events, policy reloads (some broken), ``kill -9`` + restarts and overruns, with real
mounts of loop-backed ext4 for a subset.  See tests/support/storm.py for what is checked.

The short storm runs in ``make test``; ``make soak`` runs the full one (10,000 steps) and
writes its figures to ``build/soak.json`` (RELIABILITY.md shows them).  A failure names its
seed: ``STORM_SEED=<seed> make soak`` (or the test id) replays the same operations.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.marks import bed_as_root
from support.storm import SHORT, SOAK, StormSpec, counts, schedule, storm_rig, write_figures

pytestmark = bed_as_root()

SOAK_FIGURES = Path(__file__).resolve().parent.parent / "build" / "soak.json"


#: Overrides from the environment: ``STORM_SEED`` replays a failure; ``STORM_STEPS`` and
#: ``STORM_KILLS`` make a reduced run (RELIABILITY.md says so when its figures are one).
OVERRIDES = {"STORM_SEED": "seed", "STORM_STEPS": "steps", "STORM_KILLS": "kills"}


def _seeded(spec: StormSpec) -> StormSpec:
    given = {f: int(os.environ[v]) for v, f in OVERRIDES.items() if os.environ.get(v)}
    return StormSpec(**(spec.__dict__ | given))


def test_the_schedule_is_a_function_of_the_seed() -> None:
    first, again = schedule(SHORT), schedule(SHORT)
    assert first == again
    other = schedule(StormSpec(**(SHORT.__dict__ | {"seed": SHORT.seed + 1})))
    assert other != first
    tried = counts(first)
    assert tried["steps"] >= SHORT.steps
    assert (tried["kill"], tried["overrun"]) == (SHORT.kills, SHORT.overruns)
    assert tried["reload"] + tried["reload (broken)"] == SHORT.reloads
    assert tried["reload (broken)"] == SHORT.broken
    for kind in ("add", "remove", "hot-swap", "resize", "change", "with partitions", "real mounts"):
        assert tried[kind] > 0, kind


def test_short_storm(tmp_path: Path) -> None:
    spec = _seeded(SHORT)
    ops = schedule(spec)
    with storm_rig(tmp_path, spec) as make:
        storm = make()
        figures = storm.run(ops)
        assert storm.stop() == 0
    assert figures.history_records >= spec.steps


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("NVME_AGENT_SOAK"), reason="the soak runs in make soak")
def test_soak(tmp_path: Path) -> None:
    spec = _seeded(SOAK)
    ops = schedule(spec)
    with storm_rig(tmp_path, spec) as make:
        storm = make()
        figures = storm.run(ops)
        assert storm.stop() == 0
    write_figures(SOAK_FIGURES, spec, ops, figures)
