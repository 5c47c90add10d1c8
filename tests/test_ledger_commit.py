"""The ledger's group commit (issue 13): concurrent changes share writes, and each change is
on disk when the call that made it returns (a mount point is claimed before its mkdir)."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvme_agent.actions.ledger import LedgerEntry, MountLedger

WORKERS = 8
WAIT = 30.0

paths = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@given(
    st.builds(
        LedgerEntry,
        target=paths,
        source=paths,
        dev=paths,
        fstype=st.none() | paths,
        created_dirs=st.tuples(paths, paths),
        mounted=st.booleans(),
        mounted_at=st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_an_entry_survives_its_json_form(entry: LedgerEntry) -> None:
    assert LedgerEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    assert set(entry.to_dict()) == set(LedgerEntry.__dataclass_fields__)


def _on_disk(path: Path) -> set[str]:
    return {e["target"] for e in json.loads(path.read_text())["mounts"]}


def test_each_concurrent_change_is_on_disk_when_its_call_returns(tmp_path: Path) -> None:
    path = tmp_path / "mounts.json"
    ledger = MountLedger(str(path))
    start = threading.Barrier(WORKERS)
    missing: list[str] = []

    def claim(n: int) -> None:
        target = f"/srv/nvme/{n}"
        start.wait(WAIT)
        ledger.record_mount(LedgerEntry(target, f"/dev/nvme0n{n}", f"259:{n}", mounted=False))
        if target not in _on_disk(path):
            missing.append(target)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert missing == []
    assert {e.target for e in MountLedger(str(path)).entries()} == {
        f"/srv/nvme/{n}" for n in range(WORKERS)
    }


def test_changes_made_during_a_write_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = MountLedger(str(tmp_path / "mounts.json"))
    real_write, real_changed = ledger._write, ledger._changed
    writes: list[int] = []
    first_write = threading.Event()
    release = threading.Event()
    changed = threading.Semaphore(0)

    def write(lines: list[str]) -> None:
        writes.append(len(lines))
        if len(writes) == 1:
            first_write.set()
            assert release.wait(WAIT)  # held until every other worker has made its change
        real_write(lines)

    def count_change() -> int:
        number = real_changed()
        changed.release()
        return number

    monkeypatch.setattr(ledger, "_write", write)
    monkeypatch.setattr(ledger, "_changed", count_change)

    def record(n: int) -> None:
        ledger.record_mount(LedgerEntry(f"/srv/nvme/{n}", f"/dev/nvme0n{n}", f"259:{n}"))

    first = threading.Thread(target=record, args=(0,))
    first.start()
    assert first_write.wait(WAIT)
    others = [threading.Thread(target=record, args=(n,)) for n in range(1, WORKERS)]
    for thread in others:
        thread.start()
    for _ in range(WORKERS):  # the first worker's change and the seven others'
        assert changed.acquire(timeout=WAIT)
    release.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert writes == [1, WORKERS]  # one write for the first change, one for the seven others
    assert len(MountLedger(str(tmp_path / "mounts.json")).entries()) == WORKERS


def test_a_failed_write_fails_the_change_and_the_next_write_carries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mounts.json"
    ledger = MountLedger(str(path))
    real_write = ledger._write
    calls: list[int] = []

    def write(lines: list[str]) -> None:
        calls.append(len(lines))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_write(lines)

    monkeypatch.setattr(ledger, "_write", write)
    with pytest.raises(OSError, match="No space"):
        ledger.record_mount(LedgerEntry("/srv/nvme/a", "/dev/nvme0n1", "259:1"))
    assert not path.exists()
    ledger.record_mount(LedgerEntry("/srv/nvme/b", "/dev/nvme0n2", "259:2"))
    assert _on_disk(path) == {"/srv/nvme/a", "/srv/nvme/b"}


_ops = st.lists(
    st.tuples(
        st.sampled_from(["record", "unmounted", "forget"]),
        st.sampled_from([f"/srv/nvme/{n}" for n in range(4)]),
        st.integers(0, 2),
    ),
    max_size=12,
)


@given(_ops)
def test_the_file_is_every_entry_encoded_afresh_after_any_changes(
    ops: list[tuple[str, str, int]],
) -> None:
    """Each entry's line is encoded when it changes, not at every write (issue 13): whatever
    the changes, the file says what encoding every entry anew would say, and reads back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mounts.json"
        ledger = MountLedger(str(path))
        for op, target, n in ops:
            if op == "record":
                dirs = tuple(f"{target}/d{i}" for i in range(n))
                entry = LedgerEntry(target, f"/dev/nvme0n{n}", f"259:{n}", "ext4", dirs)
                ledger.record_mount(entry)
            elif op == "unmounted":
                ledger.mark_unmounted(target, tuple(f"{target}/left{i}" for i in range(n)))
            else:
                ledger.forget(target)
        if not ops:
            return
        fresh = [e.to_dict() for e in ledger.entries()]
        if path.exists():
            assert json.loads(path.read_text())["mounts"] == fresh
            assert MountLedger(str(path)).entries() == ledger.entries()
        else:
            assert fresh == []
