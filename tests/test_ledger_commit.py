"""The ledger's group commit (issue 13): concurrent changes share writes, and each change is
on disk when the call that made it returns (a mount point is claimed before its mkdir)."""

from __future__ import annotations

import json
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

    def write(entries: list[LedgerEntry]) -> None:
        writes.append(len(entries))
        if len(writes) == 1:
            first_write.set()
            assert release.wait(WAIT)  # held until every other worker has made its change
        real_write(entries)

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

    def write(entries: list[LedgerEntry]) -> None:
        calls.append(len(entries))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_write(entries)

    monkeypatch.setattr(ledger, "_write", write)
    with pytest.raises(OSError, match="No space"):
        ledger.record_mount(LedgerEntry("/srv/nvme/a", "/dev/nvme0n1", "259:1"))
    assert not path.exists()
    ledger.record_mount(LedgerEntry("/srv/nvme/b", "/dev/nvme0n2", "259:2"))
    assert _on_disk(path) == {"/srv/nvme/a", "/srv/nvme/b"}
