"""The state on disk, written cheaply: a checkpoint plus a log of what changed (pure).

The contract (README): the daemon's state (the topology, which disks are handled and which
were ejected, the policy generation) is on disk before any action of a batch runs, so a
``kill -9`` at any point loses no topology.  Writing the whole topology before every batch
was most of the daemon's time with a thousand namespaces (rendering and writing a megabyte
per batch), so the state is kept as

* a **checkpoint** (``topology.json``): the whole state in the layout of
  :meth:`~nvme_agent.service.recovery.Bookkeeping.to_state`, plus ``"log_id"``; written at
  start, at stop, and when the log has grown as large as the checkpoint;
* a **log** (``topology.log``): one JSON object per line, one line per batch, with only what
  changed since the line before::

      {"log": "<log_id>",
       "namespaces": [<Namespace.to_dict()>, ...],      # added or changed, whole
       "gone": [[nqn, nsid], ...],                      # removed
       "handled": [[nqn, nsid, diskseq, digest], ...],  # set
       "unhandled": [[nqn, nsid, diskseq], ...],        # dropped
       "controllers": [...], "ejected": [...],          # whole, when they changed
       "policy_generation": n,                          # when it changed
       "history": [<record>, ...]}                      # the batch's history records

The history is appended after the state line of its batch is on disk, so a ``kill -9`` in
between leaves records that the state knows and the history does not: the next start appends
those of the last ``"history"`` whose ``"rid"`` the history's newest lines lack
(:meth:`~nvme_agent.outputs.state.History.recorded_ids`).  The other order would record a
change twice, once by the killed run and once as "while the agent was down".

Reading (:func:`merge`) applies the lines of the checkpoint's ``log_id`` in order to the
checkpoint and yields the document :func:`~nvme_agent.service.recovery.from_state` reads.
Lines of another ``log_id`` are skipped: a crash between writing a checkpoint and emptying the
log leaves lines that the checkpoint already holds.  The file layer drops a last line without
its newline (:meth:`~nvme_agent.outputs.state.StateFile.load_log`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvme_agent.outputs.state import JsonFragments
from nvme_agent.service.recovery import Bookkeeping, DiskKey, StateError, namespace_json
from nvme_agent.topology.model import Controller, Namespace, TopologySnapshot

#: (subsystem NQN or "", nsid): a namespace's place, as the topology keys it.
Key = tuple[str, int]


@dataclass(slots=True)
class _Persisted:
    """What the checkpoint and the log lines written so far hold, together."""

    snapshot: TopologySnapshot
    namespaces: dict[Key, Namespace]
    handled: dict[DiskKey, str]
    ejected: list[list[Any]]
    generation: int
    controllers: tuple[Controller, ...]


class StateWriter:
    """Composes checkpoints and log lines, remembering what was written (no I/O here)."""

    def __init__(self) -> None:
        self.fragments: JsonFragments[Namespace] = JsonFragments(namespace_json)
        self.log_id = ""
        self._last: _Persisted | None = None

    def checkpoint(
        self, books: Bookkeeping, snapshot: TopologySnapshot, generation: int, history: str = ""
    ) -> str:
        """The whole state as JSON text, with a fresh ``log_id`` for the lines that follow
        (``history``: see :meth:`line`)."""
        self.log_id = secrets.token_hex(8)
        books.take_handled_touched()  # the checkpoint holds them all
        text = books.state_text(snapshot, generation, self.fragments)
        self._last = _Persisted(
            snapshot=snapshot,
            namespaces={ns.key: ns for ns in snapshot.namespaces},
            handled=dict(books.handled),
            ejected=books.ejected_rows(),
            generation=generation,
            controllers=snapshot.controllers,
        )
        extra = f'"history": {history}, ' if history else ""
        return f'{{"log_id": "{self.log_id}", {extra}{text[1:]}'

    def line(
        self, books: Bookkeeping, snapshot: TopologySnapshot, generation: int, history: str = ""
    ) -> str | None:
        """One log line with what changed since the last checkpoint or line (None: nothing).

        ``history``: the batch's history records (a JSON list), which the daemon appends to
        the history only once this line is on disk; the next start appends those a kill
        kept from it.  Costs a look at every namespace's identity (not its contents) when
        the topology changed, and at every handled entry.
        """
        last = self._last
        if last is None:
            raise RuntimeError("a log line needs a checkpoint first")
        parts: list[str] = [f'"log": "{self.log_id}"']
        if history:
            parts.append(f'"history": {history}')
        if snapshot is not last.snapshot:
            parts += self._topology(last, snapshot)
        parts += _handled(last.handled, books.handled, books.take_handled_touched())
        ejected = books.ejected_rows()
        if ejected != last.ejected:
            parts.append(f'"ejected": {json.dumps(ejected)}')
            last.ejected = ejected
        if generation != last.generation:
            parts.append(f'"policy_generation": {generation}')
            last.generation = generation
        if len(parts) == 1:
            return None
        return "{" + ", ".join(parts) + "}"

    def _topology(self, last: _Persisted, snapshot: TopologySnapshot) -> list[str]:
        parts: list[str] = []
        changed, gone = _namespace_changes(last, snapshot)
        if changed:
            texts = ", ".join(self.fragments.text(ns) for ns in changed)
            parts.append(f'"namespaces": [{texts}]')
        if gone:
            parts.append(f'"gone": {json.dumps(gone)}')
        if snapshot.controllers != last.controllers:
            controllers = [c.to_dict() for c in snapshot.controllers]
            parts.append(f'"controllers": {json.dumps(controllers, sort_keys=True)}')
        last.snapshot, last.controllers = snapshot, snapshot.controllers
        return parts


def _namespace_changes(
    last: _Persisted, snapshot: TopologySnapshot
) -> tuple[list[Namespace], list[list[Any]]]:
    """The namespaces changed and the keys gone since ``last`` (which is brought up to date),
    in key order.  From the tracker's log of what it touched when the snapshots have it: a
    batch costs what it changed, not a look at every namespace (issue 13)."""
    touched = snapshot.touched_since(last.snapshot)
    if touched is None:
        now = {ns.key: ns for ns in snapshot.namespaces}
        changed = [ns for key, ns in now.items() if last.namespaces.get(key) is not ns]
        gone = [list(key) for key in last.namespaces if key not in now]
        last.namespaces = now
        return changed, gone
    changed, gone = [], []
    for key, ns in sorted(dict(touched).items(), key=lambda item: item[0]):
        if ns is None:
            if last.namespaces.pop(key, None) is not None:
                gone.append(list(key))
        elif last.namespaces.get(key) is not ns:
            changed.append(ns)
            last.namespaces[key] = ns
    return changed, gone


def _handled(
    before: dict[DiskKey, str], now: Mapping[DiskKey, str], touched: Iterable[DiskKey]
) -> list[str]:
    """The ``handled``/``unhandled`` parts for the ``touched`` keys whose entry differs from
    ``before`` (which is brought up to date), in key order."""
    set_: list[list[Any]] = []
    dropped: list[list[Any]] = []
    for k in sorted(touched, key=DiskKey.sort_key):
        digest, was = now.get(k), before.get(k)
        if digest == was:
            continue  # set and dropped again within the batch
        if digest is None:
            del before[k]
            dropped.append([k.subsysnqn, k.nsid, k.diskseq])
        else:
            before[k] = digest
            set_.append([k.subsysnqn, k.nsid, k.diskseq, digest])
    parts: list[str] = []
    if set_:
        parts.append(f'"handled": {json.dumps(set_)}')
    if dropped:
        parts.append(f'"unhandled": {json.dumps(dropped)}')
    return parts


# ---------------------------------------------------------------------- reading it back
def merge(checkpoint: object, lines: Iterable[bytes]) -> object:
    """The document the checkpoint and its log lines add up to (see the module docstring).

    A checkpoint that is not an object, or whose topology is not one, is returned as it is
    (``from_state`` refuses it); a line that is not a JSON object of the layout above, or
    that does not fit the checkpoint, raises :class:`StateError`.
    """
    if not isinstance(checkpoint, Mapping):
        return checkpoint
    doc = dict(checkpoint)
    log_id = doc.pop("log_id", None)
    parsed = [_line(raw, number) for number, raw in enumerate(lines, 1)]
    # Lines of another log_id were written before the checkpoint: it holds them already.
    mine = [(n, line) for n, line in enumerate(parsed, 1) if log_id and line.get("log") == log_id]
    topology = doc.get("topology")
    if not mine or not isinstance(topology, Mapping):
        return doc
    topology = dict(topology)
    namespaces = _by_key(topology.get("namespaces", []))
    handled = _handled_map(doc.get("handled", []))
    for number, line in mine:
        _apply(line, number, namespaces, handled, topology, doc)
    topology["namespaces"] = [namespaces[k] for k in sorted(namespaces)]
    doc["topology"] = topology
    doc["handled"] = [[*key, digest] for key, digest in sorted(handled.items(), key=_order)]
    return doc


def _order(item: tuple[tuple[str, int, int | None], str]) -> tuple[str, int, int]:
    nqn, nsid, diskseq = item[0]
    return (nqn, nsid, -1 if diskseq is None else diskseq)


def _line(raw: bytes, number: int) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateError(f"log line {number} is not JSON: {str(exc)[:100]}") from None
    if not isinstance(value, dict):
        raise StateError(f"log line {number} is not an object")
    return value


def _key(item: object, where: str) -> Key:
    if isinstance(item, Mapping):
        nqn, nsid = item.get("subsysnqn"), item.get("nsid")
        nqn = "" if nqn is None else nqn
    elif isinstance(item, list) and len(item) == 2:
        nqn, nsid = item
    else:
        raise StateError(f"{where}: {item!r:.100} names no namespace")
    if not isinstance(nqn, str) or type(nsid) is not int:
        raise StateError(f"{where}: {item!r:.100} names no namespace")
    return (nqn, nsid)


def _by_key(items: object) -> dict[Key, Any]:
    if not isinstance(items, list):
        raise StateError('"topology.namespaces" is not a list')
    return {_key(item, "topology.namespaces"): item for item in items}


def _handled_map(rows: object) -> dict[tuple[str, int, int | None], str]:
    if not isinstance(rows, list):
        raise StateError('"handled" is not a list')
    out: dict[tuple[str, int, int | None], str] = {}
    for row in rows:
        key = _disk(row, 4, "handled")  # checks the row before its digest is read
        out[key] = row[3]
    return out


def _disk(row: object, length: int, name: str) -> tuple[str, int, int | None]:
    """(NQN, nsid, diskseq) of a handled or unhandled row, checked (the digest too)."""
    if not isinstance(row, list) or len(row) != length:
        raise StateError(f'"{name}": {row!r:.100} is not a list of {length} items')
    nqn, nsid, diskseq = row[:3]
    ok = isinstance(nqn, str) and type(nsid) is int and (diskseq is None or type(diskseq) is int)
    if not ok or (length == 4 and not isinstance(row[3], str)):
        raise StateError(f'"{name}": {row!r:.100} is not [NQN, nsid, diskseq, ...]')
    return (nqn, nsid, diskseq)


def _apply(
    line: dict[str, Any],
    number: int,
    namespaces: dict[Key, Any],
    handled: dict[tuple[str, int, int | None], str],
    topology: dict[str, Any],
    doc: dict[str, Any],
) -> None:
    where = f"log line {number}"
    for key, ns in _by_key(line.get("namespaces", [])).items():
        namespaces[key] = ns
    gone = line.get("gone", [])
    if not isinstance(gone, list):
        raise StateError(f'{where}: "gone" is not a list')
    for item in gone:
        namespaces.pop(_key(item, where), None)
    handled.update(_handled_map(line.get("handled", [])))
    dropped = line.get("unhandled", [])
    if not isinstance(dropped, list):
        raise StateError(f'{where}: "unhandled" is not a list')
    for row in dropped:
        handled.pop(_disk(row, 3, "unhandled"), None)
    if "controllers" in line:
        topology["controllers"] = line["controllers"]
    for name in ("ejected", "policy_generation", "history"):
        if name in line:
            doc[name] = line[name]
