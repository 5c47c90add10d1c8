"""Persistence: the current topology (atomic state file) and the change history (JSON lines).

Both are our own files, and both can go bad (a crash, a full or read-only ``/var``, an
editor): a state file that cannot be read is moved aside and logged, a failing write is
logged once (not once per record) while the agent goes on acting, and a history line that is
not a JSON object is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from nvme_agent.actions.ledger import set_aside

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What reading a JSON file of ours may raise besides OSError (deep nesting included).
_DECODE_ERRORS = (ValueError, RecursionError)


def write_json_atomic(path: str | Path, data: Any, mode: int = 0o640) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never half."""
    # One line through the C encoder: json.dump with an indent takes the pure-Python encoder.
    write_text_atomic(path, json.dumps(data, sort_keys=True, default=str) + "\n", mode)


def write_text_atomic(path: str | Path, text: str, mode: int = 0o640, fsync: bool = True) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never half;
    with ``fsync`` (flushed to the device first) a crash after this returns keeps the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class JsonFragments(Generic[T]):
    """The JSON text of frozen value objects, rendered once per object.

    The daemon persists what changed before the actions of every batch run, and now and
    then its whole topology; with a thousand namespaces, rendering each one again
    (``to_dict`` and the encoder) was most of the loop's time.  The topology replaces a
    namespace object when it changes, so an object seen before renders to the text kept for
    it.  The cache holds the objects themselves, so no ``id`` is reused while its text is
    kept; :meth:`texts` keeps only the objects it was given.
    """

    def __init__(self, render: Callable[[T], str]) -> None:
        self._render = render
        self._kept: dict[int, tuple[T, str]] = {}
        self.rendered = 0  # how many objects were rendered (not found): for tests

    def text(self, item: T) -> str:
        """The JSON text of ``item`` (kept until the next :meth:`texts`)."""
        hit = self._kept.get(id(item))
        if hit is None or hit[0] is not item:
            hit = self._kept[id(item)] = (item, self._render(item))
            self.rendered += 1
        return hit[1]

    def texts(self, items: Iterable[T]) -> list[str]:
        """The JSON text of each of ``items``, in order; forgets every other object."""
        items = list(items)
        out = [self.text(item) for item in items]
        self._kept = {id(item): self._kept[id(item)] for item in items}
        return out


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable (logged)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, *_DECODE_ERRORS) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, _cause(exc))
        return None


def _cause(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return text if len(text) <= 200 else text[:200] + "..."


class FailureLog:
    """Logs the first failure of a repeated operation with its cause, counts the rest, and
    logs once more (with the count) when the operation works again."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.logger = logger
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        if not self.failures:
            self.logger.error(
                "%s failed: %s (further failures are counted, not logged)", self.what, exc
            )
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            self.logger.warning("%s works again after %d failure(s)", self.what, self.failures)
            self.failures = 0


class StateFile:
    """The daemon's state: a checkpoint (``topology.json``, replaced atomically) and a log
    beside it (``topology.log``) of JSON lines, each flushed to the device when appended.

    What the lines mean is the caller's business (:mod:`nvme_agent.service.persist`); this
    class keeps them safe: :meth:`append` returns only once the line is on the device, and
    :meth:`load_log` drops a last line without its newline (the writer died while writing
    it).  A failing write is logged once, not once per call.
    """

    def __init__(self, path: str | Path, log_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.log_path = Path(log_path) if log_path is not None else self.path.with_suffix(".log")
        self._writes = FailureLog(f"writing state file {self.path}")
        self._log_fd: int | None = None
        #: Bytes in the checkpoint written last and in the log since (for compaction).
        self.checkpoint_bytes = 0
        self.log_bytes = 0

    def load(self) -> Any | None:
        """The checkpoint's JSON, or None when it is missing; an unreadable or unparsable
        file is moved aside (logged), so that the next start does not trip over it again."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read state file %s: %s; starting without it", self.path, exc)
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, *_DECODE_ERRORS) as exc:
            self.move_aside(f"not JSON: {_cause(exc)}")
            return None

    def load_log(self) -> list[bytes]:
        """The log's complete lines, in order (none when it is missing or unreadable)."""
        try:
            with open(self.log_path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error(
                "cannot read state log %s: %s; using the checkpoint alone", self.log_path, exc
            )
            return []
        lines = raw.split(b"\n")
        if lines[-1]:
            log.warning(
                "state log %s: ignoring an incomplete last record (%d bytes): the agent "
                "stopped while writing it, before any action of that batch ran",
                self.log_path,
                len(lines[-1]),
            )
        return [line for line in lines[:-1] if line.strip()]

    def move_aside(self, why: str) -> str | None:
        """Rename the checkpoint and its log to ``<name>.corrupt.<time>`` (as the mount ledger
        does, never replacing an earlier one); logged."""
        with contextlib.suppress(OSError):
            set_aside(str(self.log_path))
        try:
            aside = set_aside(str(self.path))
        except OSError as exc:
            log.error(
                "state file %s is bad (%s) and cannot be moved aside: %s", self.path, why, exc
            )
            return None
        log.error("state file %s is bad (%s); moved aside to %s", self.path, why, aside)
        return aside

    def save(self, data: Any) -> bool:
        """Replace the checkpoint with ``data`` and empty the log; logged once on failure."""
        return self.checkpoint(json.dumps(data, sort_keys=True, default=str) + "\n")

    def checkpoint(self, text: str) -> bool:
        """Replace the checkpoint with ``text`` (JSON composed by the caller), then empty
        the log.  Readers must ignore log lines of an older checkpoint: a crash between the
        two steps leaves them."""
        try:
            write_text_atomic(self.path, text)
            self._close_log()
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            os.close(fd)
        except OSError as exc:
            self._writes.failed(exc)
            return False
        self.checkpoint_bytes, self.log_bytes = len(text), 0
        self._writes.succeeded()
        return True

    def append(self, line: str) -> bool:
        """Append one line to the log and flush it to the device; logged once on failure."""
        data = line.encode("utf-8") + b"\n"
        try:
            if self._log_fd is None:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._log_fd = os.open(self.log_path, flags, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(self._log_fd, view) :]
            os.fsync(self._log_fd)
        except OSError as exc:
            self._close_log()
            self._writes.failed(exc)
            return False
        self.log_bytes += len(data)
        self._writes.succeeded()
        return True

    def close(self) -> None:
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None


class History:
    """Append-only history of changes as JSON lines, rotated when it grows past ``max_bytes``.

    ``history.jsonl`` is the newest file; ``history.jsonl.1`` ... ``.N`` are older.  The file
    stays open between appends (a burst appends hundreds of records); one ``stat`` per
    append notices when someone moved or removed it, and the next append reopens it.
    """

    def __init__(self, path: str | Path, max_bytes: int = 4 * 1024 * 1024, backups: int = 3):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._writes = FailureLog(f"appending to history {self.path}")
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file

    def append(self, record: dict[str, Any]) -> bool:
        """Add ``record``; False when it could not be written (logged once per outage)."""
        return self.append_lines([render_record(record)])

    def append_lines(self, lines: Sequence[str]) -> bool:
        """Add records rendered by :func:`render_record`, in one write; False when they
        could not be written (logged once per outage)."""
        if not lines:
            return True
        try:
            self._append("".join(f"{line}\n" for line in lines).encode("utf-8"))
        except OSError as exc:
            self.close()
            self._writes.failed(exc)
            return False
        self._writes.succeeded()
        return True

    def recorded_ids(self, wanted: Iterable[str], window: int | None = None) -> set[str]:
        """Which of the record ids ``wanted`` (``"rid"``) the newest records carry, in
        complete lines: what a run killed while appending a batch did write.  Reads the
        current file and the one rotated last, from their ends, ``window`` bytes in all
        (default ``max_bytes``)."""
        wanted = set(wanted)
        found: set[str] = set()
        budget = self.max_bytes if window is None else window
        for file in (self.path, self.path.with_name(f"{self.path.name}.1")):
            if not wanted - found or budget <= 0:
                break
            data = _tail(file, budget)
            budget -= len(data)
            for line in data.split(b"\n")[:-1]:  # the last piece has no newline yet
                rid = _rid(line)
                if rid is not None and rid in wanted:
                    found.add(rid)
        return found

    def _append(self, data: bytes) -> None:
        fd, size = self._open()
        if size and size + len(data) > self.max_bytes:
            self.close()
            self._rotate()
            fd, size = self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _open(self) -> tuple[int, int]:
        """The open file and its size; (re)opened when the path names another file now."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fd is not None and st is not None and (st.st_dev, st.st_ino) == self._ident:
            return self._fd, st.st_size
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o640)
        st = os.fstat(fd)
        size = st.st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A run killed in the middle of a line: end that line, or the next record
            # would be glued to it and both lost to a reader.
            size += os.write(fd, b"\n")
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        return fd, size

    def close(self) -> None:
        """Close the file (the next append opens it again)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = self._ident = None

    def _rotate(self) -> None:
        for i in range(self.backups, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            dst = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, dst)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first (rotated files included).

        Lines that are not UTF-8, not JSON or not a JSON object are skipped; each file with
        such lines gets one warning with their count and the first line number.
        """
        files = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        files.append(self.path)
        for file in files:
            yield from _records(file)


def render_record(record: dict[str, Any]) -> str:
    """A history record as its line (without the newline)."""
    return json.dumps(record, sort_keys=True, default=str)


_RID = b'"rid": "'


def _rid(line: bytes) -> str | None:
    """The ``"rid"`` of a complete record line (one that ends its object), else None."""
    start = line.find(_RID)
    if start < 0 or not line.rstrip().endswith(b"}"):
        return None
    start += len(_RID)
    end = line.find(b'"', start)
    return line[start:end].decode("ascii", "replace") if end > 0 else None


def _tail(file: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of ``file`` from a line start (empty when it is missing)."""
    try:
        with open(file, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - limit)
            fh.seek(start)
            data = fh.read(limit)
    except OSError:
        return b""
    if start:
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return data


def _records(file: Path) -> Iterator[dict[str, Any]]:
    bad, first = 0, 0
    try:
        with open(file, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                record = _record(raw)
                if record is None:
                    if raw.strip():
                        bad, first = bad + 1, first or lineno
                    continue
                yield record
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot read history %s: %s", file, exc)
    finally:
        if bad:
            log.warning(
                "%s: skipped %d corrupt history line(s), the first at line %d", file, bad, first
            )


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, *_DECODE_ERRORS):
        return None
    return value if isinstance(value, dict) else None
