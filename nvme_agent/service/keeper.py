"""What the daemon keeps on disk, written in the order that survives a ``kill -9``.

Two files must agree: the state (a checkpoint plus a log of what changed, see
:mod:`~nvme_agent.service.persist`) and the history (``history.jsonl``).  Each batch of
changes is written as

1. the state line, carrying the batch's history records (each with an id, ``"rid"``);
2. the history records, in one append;

and only then do the batch's actions start.  A kill before (1) leaves neither: the next start
finds the changes in its diff ("while the agent was down") and records them once.  A kill
between (1) and (2), or in the middle of (2), leaves records the state knows and the history
lacks: the next start appends exactly those (:meth:`Keeper.record_late`).  Appending the
history first would record such a change twice; appending it after without the records in
the state would lose it (the soak of issue 16 showed both).

No journal, no loop: tested in process with real files.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from typing import Any

from nvme_agent.outputs.state import History, StateFile, render_record
from nvme_agent.service.persist import StateWriter, merge
from nvme_agent.service.recovery import Bookkeeping, SavedState, StateError, from_state
from nvme_agent.topology.model import TopologySnapshot

#: The state log is compacted into a checkpoint once it is larger than the last checkpoint
#: and than this (bytes): a small topology need not be rewritten every few batches.
MIN_STATE_LOG = 256 * 1024


class Keeper:
    """The state file, its writer and the history, with the records of the batch at hand."""

    def __init__(self, state_file: StateFile, history: History) -> None:
        self.state_file = state_file
        self.history = history
        self.writer = StateWriter()
        self._unrecorded: list[dict[str, Any]] = []
        run = secrets.token_hex(4)  # ids unique across runs without a counter on disk
        self._rids = (f"{run}-{n}" for n in itertools.count(1))

    # ------------------------------------------------------------------ a batch
    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Give ``record`` its id and keep it for the batch's :meth:`commit`."""
        record["rid"] = next(self._rids)
        self._unrecorded.append(record)
        return record

    def commit(
        self,
        books: Bookkeeping,
        snapshot: TopologySnapshot,
        generation: int,
        *,
        checkpoint: bool = False,
    ) -> None:
        """Write what changed (the whole state with ``checkpoint``) with the batch's records,
        then append those to the history (a failing history is logged there)."""
        lines = [render_record(r) for r in self._unrecorded]
        self._unrecorded = []
        carried = f"[{', '.join(lines)}]" if lines else ""
        if checkpoint:
            self.checkpoint(books, snapshot, generation, carried)
        else:
            self.persist(books, snapshot, generation, carried)
        self.history.append_lines(lines)

    def persist(
        self, books: Bookkeeping, snapshot: TopologySnapshot, generation: int, carried: str = ""
    ) -> None:
        """Append what changed since the last write to the state log (nothing when nothing
        did); a checkpoint once the log is as large as the last one."""
        line = self.writer.line(books, snapshot, generation, carried)
        if line is None:
            return
        self.state_file.append(line)
        if self.state_file.log_bytes > max(self.state_file.checkpoint_bytes, MIN_STATE_LOG):
            self.checkpoint(books, snapshot, generation, carried)

    def checkpoint(
        self, books: Bookkeeping, snapshot: TopologySnapshot, generation: int, carried: str = ""
    ) -> None:
        """Write the whole state (and empty the log)."""
        self.state_file.checkpoint(self.writer.checkpoint(books, snapshot, generation, carried))

    # ------------------------------------------------------------------ a start
    def previous(self) -> SavedState | None:
        """What the last run left (None: nothing, or files of another shape, moved aside)."""
        data = self.state_file.load()
        if data is None:
            return None
        try:
            return from_state(merge(data, self.state_file.load_log()))
        except StateError as exc:
            self.state_file.move_aside(str(exc))
            return None

    def record_late(self, saved: Sequence[dict[str, Any]]) -> int:
        """Append the records of the last run's last batch that the history lacks; how many."""
        if not saved:
            return 0
        lines = {r["rid"]: render_record(r) for r in saved}
        # A batch is appended in one write, after any rotation, and nothing follows it
        # before this start: its lines are at the very end of the history, so a window of
        # twice their size (and a line's worth) holds them, however large the file is.
        window = 2 * sum(len(line) + 1 for line in lines.values()) + 4096
        there = self.history.recorded_ids(lines, window)
        late = [line for rid, line in lines.items() if rid not in there]
        if late:
            self.history.append_lines(late)
        return len(late)

    def close(self) -> None:
        self.state_file.close()
        self.history.close()
