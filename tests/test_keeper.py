"""The state and the history across a kill (issue 16's soak found both orders wrong): in
process, with real files.  A "kill" here is a run whose history append never happens, or
happens in part; the next run is a fresh :class:`Keeper` on the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.policy import namespace

from nvme_agent.outputs.state import History, StateFile, render_record
from nvme_agent.service.keeper import Keeper
from nvme_agent.service.recovery import Bookkeeping
from nvme_agent.topology.model import Namespace, TopologySnapshot


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root

    def keeper(self, history: type[History] = History) -> Keeper:
        state = StateFile(self.root / "topology.json", self.root / "topology.log")
        return Keeper(state, history(self.root / "history.jsonl"))

    def history(self) -> list[dict[str, Any]]:
        return list(History(self.root / "history.jsonl").read())


class Killed(History):
    """A history whose next append never happens: the run was killed after the state."""

    def append_lines(self, lines: Any) -> bool:
        return True


class KilledMidway(History):
    """A history that gets half a batch, the last record cut in the middle of its line."""

    def append_lines(self, lines: Any) -> bool:
        lines = list(lines)
        half = len(lines) // 2
        data = "".join(f"{line}\n" for line in lines[:half]) + lines[half][:10]
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
        return True


def snap(*namespaces: Namespace) -> TopologySnapshot:
    return TopologySnapshot(controllers=(), namespaces=namespaces)


def batch(keeper: Keeper, *nsids: int) -> None:
    for nsid in nsids:
        keeper.record({"type": "namespace-added", "nsid": nsid})


def start(files: Files) -> Keeper:
    keeper = files.keeper()
    previous = keeper.previous()
    assert previous is not None
    keeper.record_late(previous.history)
    return keeper


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def test_a_batch_is_in_the_state_and_then_in_the_history(files: Files) -> None:
    keeper, books = files.keeper(), Bookkeeping()
    keeper.checkpoint(books, snap(), 1)
    batch(keeper, 1, 2)
    keeper.commit(books, snap(namespace(1), namespace(2)), 1)
    assert [r["nsid"] for r in files.history()] == [1, 2]
    assert len({r["rid"] for r in files.history()}) == 2
    again = start(files)  # a clean stop and start: nothing is late
    assert [r["nsid"] for r in files.history()] == [1, 2]
    again.close()


@pytest.mark.parametrize("history", [Killed, KilledMidway])
def test_records_a_kill_kept_from_the_history_are_appended_once_at_the_next_start(
    files: Files, history: type[History]
) -> None:
    books = Bookkeeping()
    first = files.keeper()
    first.checkpoint(books, snap(), 1)
    batch(first, 1)
    first.commit(books, snap(namespace(1)), 1)
    first.close()
    killed = files.keeper(history)
    previous = killed.previous()
    assert previous is not None
    killed.checkpoint(books, snap(namespace(1)), 1)  # as every start does
    batch(killed, 2, 3, 4)
    killed.commit(books, snap(*(namespace(n) for n in (1, 2, 3, 4))), 1)
    start(files)
    assert sorted(r["nsid"] for r in files.history()) == [1, 2, 3, 4]
    start(files)  # and a second start adds nothing
    assert sorted(r["nsid"] for r in files.history()) == [1, 2, 3, 4]


def test_a_kill_before_the_state_leaves_neither(files: Files) -> None:
    books = Bookkeeping()
    keeper = files.keeper()
    keeper.checkpoint(books, snap(), 1)
    batch(keeper, 7)  # decided, never committed
    again = files.keeper()
    previous = again.previous()
    assert previous is not None and previous.topology.namespaces == ()
    assert again.record_late(previous.history) == 0
    assert files.history() == []


def test_records_are_rendered_once_for_both_files(files: Files) -> None:
    keeper, books = files.keeper(), Bookkeeping()
    keeper.checkpoint(books, snap(), 1)
    batch(keeper, 5)
    keeper.commit(books, snap(namespace(5)), 1)
    (record,) = files.history()
    previous = files.keeper().previous()
    assert previous is not None
    (saved,) = previous.history
    assert render_record(saved) == render_record(record)


def test_a_start_reads_only_the_end_of_a_long_history(files: Files) -> None:
    """The last batch is the end of the history: found there however long the file is (the
    start reads a window of twice the batch, not the whole file)."""
    old = History(files.root / "history.jsonl")
    old.append_lines(
        [render_record({"type": "x", "nsid": n, "rid": f"old-{n}"}) for n in range(5000)]
    )
    old.close()
    books = Bookkeeping()
    first = files.keeper()
    first.checkpoint(books, snap(), 1)
    batch(first, 1, 2)
    first.commit(books, snap(namespace(1), namespace(2)), 1)
    first.close()
    again = files.keeper()
    previous = again.previous()
    assert previous is not None
    assert again.record_late(previous.history) == 0  # both found in the window
    assert [r["nsid"] for r in files.history()][-2:] == [1, 2]
    assert len(files.history()) == 5002
