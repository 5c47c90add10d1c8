"""The daemon's bookkeeping, in process and in milliseconds: no udev, no root, no umockdev.

handled / ejected / outstanding plans, the restart diff, and the state-file layout, including
state files of arbitrary shape (hypothesis).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.policy import NQN, added, namespace, partition, removed, topology

from nvme_agent.actions.ledger import LedgerEntry
from nvme_agent.policy import plan_key
from nvme_agent.policy.plan import ActionResult, ExecSpec, Plan, Status, UnmountSpec
from nvme_agent.service.recovery import (
    EJECT_REASON,
    Bookkeeping,
    DiskKey,
    SavedState,
    StateError,
    from_state,
    orphan_mounts,
    unmount_plan,
)
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace, TopologySnapshot

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
HOOK = ExecSpec(argv=("/bin/true",))


def plan(change: Change, actions: int = 1) -> Plan:
    return Plan(change=change, key=plan_key(change), actions=(HOOK,) * actions)


def result(p: Plan, status: Status = Status.OK) -> ActionResult:
    ns = p.change.namespace
    return ActionResult(
        plan_key=p.key,
        action="exec",
        status=status,
        nsid=ns.nsid if ns else None,
        ctrl="nvme0",
        rule="r",
        change=p.change.type.value,
    )


def ns1(diskseq: int | None = 11, **kw: Any) -> Namespace:
    return namespace(1, diskseq=diskseq, **kw)


def saved(
    snap: TopologySnapshot,
    handled: dict[DiskKey, str] | None = None,
    ejected: tuple[DiskKey, ...] = (),
) -> SavedState:
    return SavedState(snap, tuple((handled or {}).items()), ejected)


# ---------------------------------------------------------------------- restore
def test_first_start_plans_controllers_and_everything_present() -> None:
    snap = topology(ns1(partitions=(partition("nvme0n1", 1),)))
    restored = Bookkeeping().restore(None, snap, DIGEST_A)
    assert [c.type for c in restored.changes] == [
        ChangeType.CONTROLLER_ADDED,
        ChangeType.NAMESPACE_ADDED,
        ChangeType.PARTITION_ADDED,
    ]
    assert all(c.coldplug for c in restored.changes) and restored.while_down == 0


def test_a_disk_handled_under_the_same_policy_is_not_planned_again() -> None:
    ns = ns1()
    books = Bookkeeping()
    restored = books.restore(
        saved(topology(ns), {DiskKey.of(ns): DIGEST_A}), topology(ns), DIGEST_A
    )
    assert restored.changes == ()
    assert books.handled == {DiskKey.of(ns): DIGEST_A}


@pytest.mark.parametrize(
    ("handled", "why"),
    [({}, "add plan interrupted by the last run"), ({"x": DIGEST_B}, "policy changed since")],
)
def test_interrupted_or_differently_planned_disks_run_their_add_plans_again(
    handled: dict[str, str], why: str
) -> None:
    ns = ns1()
    previous = saved(topology(ns), {DiskKey.of(ns): d for d in handled.values()})
    restored = Bookkeeping().restore(previous, topology(ns), DIGEST_A)
    assert [(c.type, c.nsid) for c in restored.changes] == [(ChangeType.NAMESPACE_ADDED, 1)]
    assert restored.changes[0].reason is not None and restored.changes[0].reason.startswith(why)


def test_changes_while_down_come_first_and_are_counted() -> None:
    stays, goes, arrives = ns1(), namespace(2, diskseq=12), namespace(3, diskseq=13)
    handled = {DiskKey.of(stays): DIGEST_A, DiskKey.of(goes): DIGEST_A}
    restored = Bookkeeping().restore(
        saved(topology(stays, goes), handled), topology(stays, arrives), DIGEST_A
    )
    assert [(c.type, c.nsid) for c in restored.changes] == [
        (ChangeType.NAMESPACE_REMOVED, 2),
        (ChangeType.NAMESPACE_ADDED, 3),
    ]
    assert restored.while_down == 2
    assert all("while the agent was down" in str(c.reason) for c in restored.changes)


def test_a_new_diskseq_at_the_same_place_is_a_removal_and_an_addition() -> None:
    old, new = ns1(diskseq=11), ns1(diskseq=12, label="fresh")
    restored = Bookkeeping().restore(
        saved(topology(old), {DiskKey.of(old): DIGEST_A}), topology(new), DIGEST_A
    )
    assert [c.type for c in restored.changes] == [
        ChangeType.NAMESPACE_REMOVED,
        ChangeType.NAMESPACE_ADDED,
    ]


def test_an_eject_survives_a_restart_only_for_the_very_same_disk() -> None:
    ns = ns1()
    books = Bookkeeping()
    previous = saved(topology(ns), ejected=(DiskKey.of(ns),))
    assert books.restore(previous, topology(ns), DIGEST_B).changes == ()  # not re-planned
    assert books.is_ejected(ns)
    swapped = ns1(diskseq=99)
    other = Bookkeeping()
    changes = other.restore(previous, topology(swapped), DIGEST_B).changes
    assert not other.is_ejected(swapped)
    assert ChangeType.NAMESPACE_ADDED in [c.type for c in changes]


# ---------------------------------------------------------------------- plans and results
def test_a_disk_is_handled_only_once_every_add_action_reported() -> None:
    part = partition("nvme0n1", 1)
    ns = ns1(partitions=(part,))
    books = Bookkeeping()
    disk, parted = plan(added(ns), 2), plan(added(ns, part), 1)
    books.plan_submitted(disk, DIGEST_A)
    books.plan_submitted(parted, DIGEST_A)
    assert books.result(result(disk)) is False
    assert books.result(result(disk, Status.FAILED)) is False
    assert DiskKey.of(ns) not in books.handled  # the partition's plan is still running
    assert books.result(result(parted)) is True
    assert books.handled == {DiskKey.of(ns): DIGEST_A}


def test_a_plan_with_nothing_to_do_marks_handled_at_once_unless_others_run() -> None:
    ns = ns1()
    books = Bookkeeping()
    books.plan_submitted(plan(added(ns), 0), DIGEST_A)
    assert books.handled == {DiskKey.of(ns): DIGEST_A}
    busy = Bookkeeping()
    running = plan(added(ns), 1)
    busy.plan_submitted(running, DIGEST_A)
    busy.plan_submitted(plan(added(ns, partition("nvme0n1", 1)), 0), DIGEST_A)
    assert busy.handled == {}
    assert busy.result(result(running)) is True


def test_a_removal_forgets_the_handled_mark_and_results_of_others_are_ignored() -> None:
    ns = ns1()
    books = Bookkeeping()
    books.plan_submitted(plan(added(ns), 0), DIGEST_A)
    books.plan_submitted(plan(removed(ns), 1), DIGEST_A)
    assert books.handled == {}
    assert books.result(result(plan(removed(ns), 1))) is False


def test_the_removal_after_an_eject_does_not_run_again_and_then_forgets_the_eject() -> None:
    part = partition("nvme0n1", 1)
    ns = ns1(partitions=(part,))
    books = Bookkeeping()
    assert books.removal_already_ran(removed(ns)) is False
    books.ejected(ns)
    assert books.removal_already_ran(removed(ns, reason=EJECT_REASON)) is False  # the eject's own
    assert books.removal_already_ran(removed(ns, part)) is True
    assert books.is_ejected(ns)  # a partition going does not end it
    assert books.removal_already_ran(removed(ns)) is True
    assert not books.is_ejected(ns)
    assert books.removal_already_ran(removed(ns)) is False
    other_disk = ns1(diskseq=12)
    books.ejected(ns)
    assert books.removal_already_ran(removed(other_disk)) is False


# ---------------------------------------------------------------------- state file
def test_state_round_trip_keeps_every_key_shape() -> None:
    with_seq, without = ns1(diskseq=11), namespace(2, diskseq=None)
    snap = topology(with_seq, without)
    books = Bookkeeping()
    books.plan_submitted(plan(added(with_seq), 0), DIGEST_A)
    books.plan_submitted(plan(added(without), 0), DIGEST_B)
    books.ejected(with_seq)
    data = json.loads(json.dumps(books.to_state(snap, 7)))
    back = from_state(data)
    assert back.topology.to_dict() == snap.to_dict()
    assert dict(back.handled) == books.handled
    assert back.ejected == (DiskKey.of(with_seq),) and back.policy_generation == 7


def test_a_state_file_of_the_previous_release_is_read() -> None:
    ns = ns1()
    data = {
        "topology": topology(ns).to_dict(),
        "ejected": [[NQN, 1, 11]],
        "handled": [[NQN, 1, 11, DIGEST_A]],
        "policy_generation": 3,
    }
    back = from_state(data)
    assert back.handled == ((DiskKey(NQN, 1, 11), DIGEST_A),)
    assert back.ejected == (DiskKey(NQN, 1, 11),)


def test_to_state_sorts_keys_with_and_without_diskseq() -> None:
    books = Bookkeeping()
    for seq in (5, None, 3):
        books.plan_submitted(plan(added(ns1(diskseq=seq)), 0), DIGEST_A)
    state = books.to_state(TopologySnapshot(), 1)
    assert [h[2] for h in state["handled"]] == [None, 3, 5]


@pytest.mark.parametrize(
    "data",
    [
        [],
        "text",
        None,
        {},
        {"topology": []},
        {"topology": {"namespaces": [{}]}},  # a namespace without keys
        {"topology": {"namespaces": [{"nsid": "x"}]}},
        {"topology": {"namespaces": "abc"}},
        {"topology": {}, "handled": [[NQN, 1]]},
        {"topology": {}, "handled": {"a": 1}},
        {"topology": {}, "ejected": [[NQN, "1", None]]},
        {"topology": {}, "handled": [[NQN, 1, None, 5]]},
        {"topology": {}, "policy_generation": "2"},
        {"topology": {"controllers": [{"name": 5, "devpath": "/x"}]}},
    ],
    ids=repr,
)
def test_state_of_the_wrong_shape_is_a_state_error(data: object) -> None:
    with pytest.raises(StateError):
        from_state(data)


def test_a_namespace_with_values_of_the_wrong_type_is_refused() -> None:
    good = topology(ns1()).to_dict()
    for key, bad in (("name", 5), ("controllers", "nvme0"), ("diskseq", "11"), ("nsid", True)):
        data = json.loads(json.dumps(good))
        data["namespaces"][0][key] = bad
        with pytest.raises(StateError):
            from_state({"topology": data})


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    _nested,
    max_leaves=30,
)
KEYS = st.sampled_from([*topology(ns1()).to_dict()["namespaces"][0], "x"])


def _mutated_state(draw: st.DrawFn) -> object:
    """A real state with some values replaced by arbitrary JSON (or arbitrary JSON)."""
    if draw(st.booleans()):
        return draw(JSON)
    ns = ns1(partitions=(partition("nvme0n1", 1),))
    books = Bookkeeping()
    books.plan_submitted(plan(added(ns), 0), DIGEST_A)
    books.ejected(ns)
    data: Any = json.loads(json.dumps(books.to_state(topology(ns), 1)))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["top", "namespace", "partition", "handled"]))
        value = draw(JSON)
        if target == "top":
            data[draw(st.sampled_from(["topology", "handled", "ejected", "x"]))] = value
        elif target == "namespace" and isinstance(data.get("topology"), dict):
            for item in data["topology"].get("namespaces") or []:
                if isinstance(item, dict):
                    item[draw(KEYS)] = value
        elif target == "handled" and isinstance(data.get("handled"), list) and data["handled"]:
            data["handled"][0] = value
    return data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.composite(_mutated_state)())
def test_state_files_of_any_shape_are_read_or_refused_and_restore_never_raises(
    data: object,
) -> None:
    try:
        previous = from_state(data)
    except StateError:
        return
    now = topology(ns1(diskseq=12), namespace(2, diskseq=3))
    restored = Bookkeeping().restore(previous, now, DIGEST_A)
    for change in restored.changes:
        json.dumps(change.to_dict())  # every change can be logged and streamed


# ---------------------------------------------------------------------- orphan mounts
def test_orphans_are_our_mounts_of_devices_neither_present_nor_being_removed() -> None:
    ns = ns1(partitions=(partition("nvme0n1", 1),))
    entries = [
        LedgerEntry(target="/m/a", source="/dev/nvme0n1", dev="259:1"),
        LedgerEntry(target="/m/p", source="/dev/nvme0n1p1", dev="259:2"),
        LedgerEntry(target="/m/gone", source="/dev/nvme0n7", dev="259:3"),
        LedgerEntry(target="/m/planned", source="/dev/nvme0n8", dev="259:4"),
        LedgerEntry(target="/m/old", source="/dev/nvme0n9", dev="259:5", mounted=False),
    ]
    orphans = orphan_mounts(entries, topology(ns), {"/dev/nvme0n8"})
    assert [e.target for e in orphans] == ["/m/gone"]


def test_unmount_plans_outside_namespaces_know_where_we_made_the_mountpoint() -> None:
    entry = LedgerEntry(
        target="/m/data/inner", source="/dev/nvme0n7", dev="259:3", created_dirs=("/m/data",)
    )
    orphan = unmount_plan(entry, "vanished while down", "orphan", device_gone=True)
    stop = unmount_plan(entry, "agent stopping", "stop", device_gone=False)
    assert (orphan.key, stop.key) == ("orphan:/m/data/inner", "stop:/m/data/inner")
    specs = [p.actions[0] for p in (orphan, stop)]
    unmounts = [s for s in specs if isinstance(s, UnmountSpec)]
    assert unmounts == specs
    assert [(s.mount_root, s.device_gone, s.on_busy) for s in unmounts] == [
        ("/m", True, "lazy"),
        ("/m", False, "signal"),
    ]
    assert orphan.change.type is ChangeType.NAMESPACE_REMOVED and orphan.change.namespace is None
