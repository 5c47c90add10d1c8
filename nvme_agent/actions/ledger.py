"""The mount ledger: which mounts the agent made and which directories it created.

Persisted as JSON in the state directory (``mounts.json``), written atomically (temporary
file, fsync, rename, fsync of the directory), so a restarted daemon knows what is its own
and never unmounts or removes anything else.  All methods are thread-safe.

Writes are group-committed (issue 13): a change returns only once a write that contains it is
durable, but changes made by other workers while one write is under way share the next write
instead of queueing one fsync each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger("nvme_agent.actions")

LEDGER_FILE = "mounts.json"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One mount the agent made (``mounted``), or the directories it left behind.

    ``dev`` is the ``major:minor`` of the device at mount time: after a hot-remove the device
    node is gone, but mountinfo still shows that number, so it identifies the mount.
    ``created_dirs`` lists every directory the agent created for it, outermost first.
    """

    target: str
    source: str
    dev: str
    fstype: str | None = None
    created_dirs: tuple[str, ...] = ()
    mounted: bool = True
    mounted_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies, ~20 us an entry, every write.
        return {
            "target": self.target,
            "source": self.source,
            "dev": self.dev,
            "fstype": self.fstype,
            "created_dirs": list(self.created_dirs),
            "mounted": self.mounted,
            "mounted_at": self.mounted_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerEntry:
        return cls(
            target=str(d["target"]),
            source=str(d["source"]),
            dev=str(d["dev"]),
            fstype=d.get("fstype"),
            created_dirs=tuple(str(x) for x in d.get("created_dirs", ())),
            mounted=bool(d.get("mounted", True)),
            mounted_at=float(d.get("mounted_at", 0.0)),
        )


def _line(entry: LedgerEntry) -> str:
    # One entry a line, by the C encoder (an indented dump is the slow Python one).
    return json.dumps(entry.to_dict(), sort_keys=True)


def set_aside(path: str) -> str:
    """Rename a bad file of ours to ``<path>.corrupt.<time>``, never replacing an earlier one.

    Two bad files within one second, or the wall clock set back, would otherwise give the
    same name, and the evidence of the first would be lost: ``.1``, ``.2``... are added.
    """
    stamp = f"{path}.corrupt.{int(time.time())}"
    for n in range(1000):
        aside = stamp if n == 0 else f"{stamp}.{n}"
        try:
            os.link(path, aside)  # unlike rename, fails when the name is taken
        except FileExistsError:
            continue
        os.unlink(path)
        return aside
    raise FileExistsError(f"{stamp}.*: 1000 files set aside in one second")


class MountLedger:
    """The agent's record of its own mounts, keyed by mount point."""

    def __init__(self, path: str | None) -> None:
        """``path`` is the JSON file; ``None`` keeps the ledger in memory only (dry runs)."""
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, LedgerEntry] = {}
        # Each entry's line of the file, encoded once when it changes: a write joins them
        # instead of encoding every entry again (a burst of n mounts encoded n^2 entries).
        self._lines: dict[str, str] = {}
        # Group commit: _changes counts changes to _entries; _durable is the count the file
        # holds; one writer at a time holds _writing.
        self._writing = threading.Lock()
        self._changes = 0
        self._durable = 0
        if path is not None:
            self._load(path)

    @classmethod
    def in_state_dir(cls, state_dir: str) -> MountLedger:
        """The ledger file ``mounts.json`` in ``state_dir`` (created 0700 if missing)."""
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        return cls(os.path.join(state_dir, LEDGER_FILE))

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            entries = [LedgerEntry.from_dict(d) for d in data.get("mounts", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Forgetting is the safe direction: the agent then touches none of those mounts.
            try:
                aside = set_aside(path)
            except OSError as why:
                log.error("mount ledger %s unreadable (%s); not moved aside: %s", path, exc, why)
            else:
                log.error("mount ledger %s unreadable (%s); moved aside to %s", path, exc, aside)
            return
        self._entries = {e.target: e for e in entries}
        self._lines = {e.target: _line(e) for e in entries}

    def _commit(self, change: int) -> None:
        """Return once the file holds change number ``change`` (or a later state)."""
        if self.path is None:
            return
        with self._writing:
            if self._durable >= change:
                return  # another worker's write, begun after our change, carried it
            with self._lock:
                lines, upto = list(self._lines.values()), self._changes
            self._write(lines)
            self._durable = upto

    def _write(self, lines: list[str]) -> None:
        assert self.path is not None
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}.{threading.get_ident()}"
        body = ",\n".join(lines)
        text = f'{{"version": {_VERSION}, "mounts": [\n{body}\n]}}\n'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def entries(self) -> list[LedgerEntry]:
        """A snapshot of every entry."""
        with self._lock:
            return list(self._entries.values())

    def get(self, target: str) -> LedgerEntry | None:
        with self._lock:
            return self._entries.get(os.path.normpath(target))

    def find(self, *, source: str | None = None, dev: str | None = None) -> list[LedgerEntry]:
        """Mounted entries whose source path or device number matches."""
        with self._lock:
            return [
                e
                for e in self._entries.values()
                if e.mounted
                and (
                    (source is not None and e.source == source)
                    or (dev is not None and e.dev == dev)
                )
            ]

    def _set(self, entry: LedgerEntry) -> int:
        """Put ``entry`` in (under ``_lock``); the change's number for :meth:`_commit`."""
        self._entries[entry.target] = entry
        self._lines[entry.target] = _line(entry)
        return self._changed()

    def _drop(self, target: str) -> int:
        """Take ``target``'s entry out (under ``_lock``); the change's number."""
        del self._entries[target]
        del self._lines[target]
        return self._changed()

    def _changed(self) -> int:
        self._changes += 1
        return self._changes

    def record_mount(self, entry: LedgerEntry) -> None:
        """Remember a mount the agent made (replacing a leftover entry at the same target);
        durable when this returns."""
        with self._lock:
            change = self._set(entry)
        self._commit(change)

    def mark_unmounted(self, target: str, remaining_dirs: tuple[str, ...]) -> None:
        """The mount is gone; keep the entry only while directories it created remain."""
        with self._lock:
            entry = self._entries.get(target)
            if entry is None:
                return
            if remaining_dirs:
                change = self._set(replace(entry, mounted=False, created_dirs=remaining_dirs))
            else:
                change = self._drop(target)
        self._commit(change)

    def forget(self, target: str) -> None:
        with self._lock:
            if target not in self._entries:
                return
            change = self._drop(target)
        self._commit(change)
