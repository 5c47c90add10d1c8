"""The state on disk as a checkpoint plus a log of what changed (issue 13): in process, with
real files.  Whatever sequence of batches was written, the checkpoint and the log read back
to exactly the state the daemon held; torn and stale lines are handled; bad lines refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.policy import NQN, added, controller, namespace, partition, removed

from nvme_agent.outputs.state import JsonFragments, StateFile
from nvme_agent.policy import plan_key
from nvme_agent.policy.plan import ActionResult, ExecSpec, Plan, Status
from nvme_agent.service.persist import StateWriter, merge
from nvme_agent.service.recovery import Bookkeeping, StateError, from_state, namespace_json
from nvme_agent.topology.changes import Change
from nvme_agent.topology.lookup import Lookup
from nvme_agent.topology.model import Namespace, TopologySnapshot

HOOK = ExecSpec(argv=("/bin/true",))
DIGEST = "d" * 64


def snap(*namespaces: Namespace, controllers: int = 1) -> TopologySnapshot:
    ctrls = tuple(controller(f"nvme{i}") for i in range(controllers))
    return TopologySnapshot(controllers=ctrls, namespaces=tuple(namespaces))


def handle(books: Bookkeeping, ns: Namespace) -> None:
    """``ns``'s add plan had nothing to run: the disk is handled at once."""
    change = added(ns)
    books.plan_submitted(Plan(change=change, key=plan_key(change)), DIGEST)


def read_back(files: StateFile) -> Any:
    return merge(files.load(), files.load_log())


def expected(books: Bookkeeping, topology: TopologySnapshot, generation: int) -> Any:
    return json.loads(json.dumps(books.to_state(topology, generation), sort_keys=True))


def test_checkpoint_then_lines_read_back_to_the_state_held(tmp_path: Path) -> None:
    files, writer, books = StateFile(tmp_path / "topology.json"), StateWriter(), Bookkeeping()
    a, b = namespace(1, diskseq=1), namespace(2, diskseq=2, label="b")
    files.checkpoint(writer.checkpoint(books, snap(a), 1))
    handle(books, a)
    line = writer.line(books, snap(a, b), 1)
    assert line is not None and files.append(line)
    grown = dataclasses.replace(b, size_bytes=2 << 30, partitions=(partition("nvme0n2", 1),))
    books.ejected(a)
    line = writer.line(books, snap(grown, controllers=2), 2)
    assert line is not None and files.append(line)
    assert writer.line(books, snap(grown, controllers=2), 2) is None  # nothing changed
    assert read_back(files) == expected(books, snap(grown, controllers=2), 2)
    back = from_state(read_back(files))
    assert back.policy_generation == 2 and [n.nsid for n in back.topology.namespaces] == [2]


def test_a_line_holds_only_what_changed(tmp_path: Path) -> None:
    writer, books = StateWriter(), Bookkeeping()
    many = [namespace(i, diskseq=i) for i in range(1, 201)]
    writer.checkpoint(books, snap(*many), 1)
    changed = dataclasses.replace(many[10], size_bytes=1 << 40)
    line = writer.line(books, snap(*many[:10], changed, *many[11:199]), 1)
    assert line is not None
    data = json.loads(line)
    assert [n["nsid"] for n in data["namespaces"]] == [11]
    assert data["gone"] == [[NQN, 200]]
    assert set(data) == {"log", "namespaces", "gone"}
    assert len(line) < 3 * len(namespace_json(changed))


def test_namespaces_are_rendered_once_per_object() -> None:
    writer, books = StateWriter(), Bookkeeping()
    many = [namespace(i, diskseq=i) for i in range(1, 51)]
    writer.checkpoint(books, snap(*many), 1)
    assert writer.fragments.rendered == 50
    added_one = namespace(51, diskseq=51)
    writer.line(books, snap(*many, added_one), 1)
    writer.checkpoint(books, snap(*many, added_one), 1)
    assert writer.fragments.rendered == 51  # the checkpoint reused every text


def test_a_torn_last_line_is_ignored_and_lines_of_an_older_checkpoint_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, writer, books = StateFile(tmp_path / "topology.json"), StateWriter(), Bookkeeping()
    a, b, c = (namespace(i, diskseq=i) for i in (1, 2, 3))
    files.checkpoint(writer.checkpoint(books, snap(a), 1))
    stale = writer.line(books, snap(a, b), 1)
    assert stale is not None
    # A crash between the new checkpoint and emptying the log: its lines stay behind.
    files.checkpoint(writer.checkpoint(books, snap(a, b), 1))
    with open(files.log_path, "a", encoding="utf-8") as fh:
        fh.write(stale.replace('"nsid": 2', '"nsid": 9') + "\n")
    line = writer.line(books, snap(a, b, c), 1)
    assert line is not None and files.append(line)
    with open(files.log_path, "a", encoding="utf-8") as fh:
        fh.write(line[: len(line) // 2])  # the daemon died writing this one
    got = from_state(read_back(files))
    assert [n.nsid for n in got.topology.namespaces] == [1, 2, 3]
    assert any("incomplete last record" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"log": "ID", "namespaces": "abc"}',
        b'{"log": "ID", "namespaces": [{"nsid": "1"}]}',
        b'{"log": "ID", "gone": [[1, 2]]}',
        b'{"log": "ID", "gone": {"a": 1}}',
        b'{"log": "ID", "handled": [["n", 1, null]]}',
        b'{"log": "ID", "handled": [["n", 1, [2], "d"]]}',
        b'{"log": "ID", "unhandled": [["n", true, null]]}',
        b'{"log": "ID", "unhandled": "x"}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
    ids=repr,
)
def test_bad_lines_are_state_errors(line: bytes) -> None:
    checkpoint = {"log_id": "ID", "topology": {"controllers": [], "namespaces": []}}
    with pytest.raises(StateError):
        merge(checkpoint, [line])


def test_a_line_of_the_wrong_types_is_refused_by_from_state() -> None:
    checkpoint = {"log_id": "ID", "topology": {"controllers": [], "namespaces": []}}
    good = json.loads(namespace_json(namespace(1)))
    bad = json.dumps({"log": "ID", "namespaces": [{**good, "controllers": "nvme0"}]}).encode()
    with pytest.raises(StateError):
        from_state(merge(checkpoint, [bad]))
    assert merge(["not", "an", "object"], [bad]) == ["not", "an", "object"]


def test_the_fragment_cache_keeps_only_what_it_was_last_given() -> None:
    fragments: JsonFragments[Namespace] = JsonFragments(namespace_json)
    a, b = namespace(1), namespace(2)
    assert fragments.texts(iter([a, b])) == [namespace_json(a), namespace_json(b)]
    fragments.texts([b])
    fragments.text(a)
    assert fragments.rendered == 3  # a was forgotten, so rendered again


def finished(change: Change) -> ActionResult:
    ns = change.namespace
    assert ns is not None
    key, kind = plan_key(change), change.type.value
    return ActionResult(key, "exec", Status.OK, ns.nsid, "nvme0", "r", kind)


# --- whatever happened, the files say what the daemon held -------------------------------
STEP = st.tuples(
    st.sampled_from(
        ["add", "remove", "resize", "handle", "unhandle", "finish", "eject", "reload", "ctrl"]
    ),
    st.integers(1, 6),
)


@dataclasses.dataclass
class Held:
    """What the daemon holds as the steps happen: what its files must read back as."""

    books: Bookkeeping = dataclasses.field(default_factory=Bookkeeping)
    present: dict[int, Namespace] = dataclasses.field(default_factory=dict)
    controllers: int = 1
    generation: int = 1
    running: list[Change] = dataclasses.field(default_factory=list)

    def step(self, kind: str, nsid: int) -> None:
        """One STEP; one that does not apply now (removing what is not there) does nothing."""
        ns = self.present.get(nsid)
        if kind == "add" and ns is None:
            self.present[nsid] = namespace(nsid, diskseq=nsid)
        elif kind == "remove" and ns is not None:
            self.books.plan_submitted(Plan(change=removed(ns), key=plan_key(removed(ns))), DIGEST)
            del self.present[nsid]
        elif kind == "resize" and ns is not None:
            self.present[nsid] = dataclasses.replace(ns, size_bytes=(ns.size_bytes or 0) + 512)
        elif kind == "handle" and ns is not None:
            handle(self.books, ns)
        elif kind == "unhandle" and ns is not None:
            self.books.plan_submitted(Plan(added(ns), plan_key(added(ns)), actions=(HOOK,)), "x")
            self.running.append(added(ns))
        elif kind == "finish" and self.running:  # the oldest running plan's action reports
            self.books.result(finished(self.running.pop(0)))
        elif kind == "eject" and ns is not None:
            self.books.ejected(ns)
        elif kind == "reload":
            self.generation += 1
        elif kind == "ctrl":
            self.controllers = 1 + nsid % 3

    #: With one, snapshots are made as the tracker makes them, with its log of what it
    #: touched, so the writer takes the changes from the log instead of comparing.
    lookup: Lookup | None = None
    shown: dict[int, Namespace] = dataclasses.field(default_factory=dict)

    def topology(self) -> TopologySnapshot:
        plain = snap(*(self.present[k] for k in sorted(self.present)), controllers=self.controllers)
        if self.lookup is None:
            return plain
        for nsid in sorted(set(self.shown) | set(self.present)):
            old, new = self.shown.get(nsid), self.present.get(nsid)
            if old is not new:
                self.lookup.put(old, new)
        self.shown = dict(self.present)
        return TopologySnapshot.indexed(plain.controllers, plain.namespaces, self.lookup.share())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.lists(STEP, max_size=5), max_size=12), st.integers(0, 12), st.booleans())
def test_any_sequence_of_batches_reads_back_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, int]]],
    every: int,
    tracked: bool,
) -> None:
    """``every``: a checkpoint after that many lines (0: never), as the daemon compacts;
    ``tracked``: snapshots with the tracker's log of what changed."""
    files = StateFile(tmp_path_factory.mktemp("state") / "topology.json")
    writer, held, lines = StateWriter(), Held(lookup=Lookup() if tracked else None), 0
    files.checkpoint(writer.checkpoint(held.books, held.topology(), held.generation))
    for batch in batches:
        for kind, nsid in batch:
            held.step(kind, nsid)
        now = held.topology()
        line = writer.line(held.books, now, held.generation)
        if line is not None:
            assert files.append(line)
            lines += 1
        if every and lines >= every:
            files.checkpoint(writer.checkpoint(held.books, now, held.generation))
            lines = 0
        assert read_back(files) == expected(held.books, now, held.generation)


# ---------------------------------------------------------------------- the batch's history
def records(*rids: str) -> list[dict[str, Any]]:
    return [{"type": "namespace-added", "nsid": i, "rid": rid} for i, rid in enumerate(rids)]


def rendered(items: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(json.dumps(r, sort_keys=True) for r in items) + "]"


def test_the_last_batchs_records_read_back_from_the_checkpoint_or_a_later_line(
    tmp_path: Path,
) -> None:
    files, writer, books = StateFile(tmp_path / "t.json"), StateWriter(), Bookkeeping()
    one, two = namespace(1), namespace(2)
    files.checkpoint(writer.checkpoint(books, snap(one), 1, rendered(records("a-1"))))
    assert [r["rid"] for r in from_state(read_back(files)).history] == ["a-1"]
    line = writer.line(books, snap(one, two), 1, rendered(records("a-2", "a-3")))
    assert line is not None
    files.append(line)
    assert [r["rid"] for r in from_state(read_back(files)).history] == ["a-2", "a-3"]
    handle(books, two)  # a later line without records (a result) keeps the last batch's
    line = writer.line(books, snap(one, two), 1)
    assert line is not None and '"history"' not in line
    files.append(line)
    assert [r["rid"] for r in from_state(read_back(files)).history] == ["a-2", "a-3"]


def test_records_alone_make_a_line() -> None:
    writer, books = StateWriter(), Bookkeeping()
    writer.checkpoint(books, snap(), 1)
    assert writer.line(books, snap(), 1) is None
    assert writer.line(books, snap(), 1, rendered(records("b-1"))) is not None


@pytest.mark.parametrize("bad", [[1], [{"type": "x"}], [{"rid": 5}], {"rid": "x"}])
def test_saved_records_without_their_id_are_refused(bad: Any) -> None:
    doc = expected(Bookkeeping(), snap(), 1) | {"history": bad}
    with pytest.raises(StateError, match="history"):
        from_state(doc)
