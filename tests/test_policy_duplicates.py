"""Never two mounts of one filesystem (issue 12.3): an add whose mount would mount a filesystem
UUID that another device of the snapshot carries is refused, and which device keeps it is a
function of the snapshot."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from support.policy import NQN, added, namespace, partition, removed

from nvme_agent.policy import REFUSED, Policy, decide, load_policy_text
from nvme_agent.policy.plan import MountSpec, Plan
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Filesystem, Namespace, Partition, TopologySnapshot

POLICY = load_policy_text(
    """\
version: 1
rules:
  - name: data
    on_add:
      - mount: {path: "/run/media/nvme-agent/{devname}"}
      - exec: {argv: [/usr/bin/hello, "{mountpoint}"]}
""",
    "dup.yaml",
)
UUID = "0f3c2b1a-9d8e-4c7b-a6f5-e4d3c2b1a090"


def snap(*namespaces: Namespace) -> TopologySnapshot:
    return TopologySnapshot(namespaces=namespaces)


def disk(
    nsid: int,
    uuid: str | None = UUID,
    *,
    diskseq: int | None = None,
    fstype: str | None = "ext4",
    partitions: tuple[Partition, ...] = (),
) -> Namespace:
    return namespace(
        nsid,
        name=f"nvme0n{nsid}",
        fs_uuid=uuid,
        diskseq=diskseq,
        fstype=fstype,
        partitions=partitions,
    )


def mounts(plan: Plan) -> list[str]:
    return [a.source for a in plan.actions if isinstance(a, MountSpec)]


def refusal(plan: Plan) -> str:
    (line,) = [line for line in plan.explanation if line.startswith(REFUSED)]
    return line


def test_a_device_that_appears_next_to_a_present_one_of_the_same_filesystem_is_refused() -> None:
    first, clone = disk(1, diskseq=7), disk(2, diskseq=9)
    assert mounts(decide(added(first), snap(first), POLICY)) == ["/dev/nvme0n1"]
    plan = decide(added(clone), snap(first, clone), POLICY)
    assert plan.actions == ()  # the whole add plan: its hooks would act on the other mount
    assert plan.rule == "data"
    assert refusal(plan) == (
        f"{REFUSED}rules[0] 'data' on_add[0] (mount): filesystem UUID {UUID!r} is also on "
        "/dev/nvme0n1 (nsid 1, DISKSEQ 7), which is present too: one filesystem is never "
        "mounted twice, and a device that appears next to another one of it is refused"
    )
    # Even when the clone is older (a DISKSEQ lower than the present one's): it came second.
    older = disk(2, diskseq=3)
    assert decide(added(older), snap(first, older), POLICY).actions == ()


def test_at_a_fresh_start_the_device_the_kernel_created_first_keeps_it() -> None:
    a, b, c = disk(1, diskseq=12), disk(2, diskseq=5), disk(3, diskseq=None)
    everything = snap(a, b, c)
    plans = {
        ns.nsid: decide(
            Change(ChangeType.NAMESPACE_ADDED, namespace=ns, coldplug=True), everything, POLICY
        )
        for ns in (c, a, b)  # any order of decisions
    }
    assert mounts(plans[2]) == ["/dev/nvme0n2"]
    assert plans[1].actions == () and plans[3].actions == ()
    assert "is also on /dev/nvme0n2 (nsid 2, DISKSEQ 5), which the kernel created first" in (
        refusal(plans[1])
    )
    # A coldplug change with a reason is a decision made again (policy changed, while the
    # agent was down): the device that may already be mounted keeps it, nobody else mounts.
    again = Change(ChangeType.NAMESPACE_ADDED, namespace=b, coldplug=True, reason="policy changed")
    assert decide(again, everything, POLICY).actions == ()


def test_without_diskseq_the_order_is_nqn_nsid_partition() -> None:
    other_nqn = dataclasses.replace(
        disk(1), subsysnqn="nqn.2000-01.a:first", devnode="/dev/nvme1n1"
    )
    mine = disk(1)
    parts = disk(2, uuid=None, partitions=(partition("nvme0n2", 2, fs_uuid=UUID),))
    everything = snap(mine, parts, other_nqn)
    fresh = [
        Change(ChangeType.NAMESPACE_ADDED, namespace=n, coldplug=True) for n in (mine, other_nqn)
    ]
    fresh.append(
        Change(
            ChangeType.PARTITION_ADDED,
            namespace=parts,
            partition=parts.partitions[0],
            coldplug=True,
        )
    )
    winners = [src for ch in fresh for src in mounts(decide(ch, everything, POLICY))]
    assert winners == ["/dev/nvme1n1"]  # "nqn.2000-01.a:first" < NQN
    assert NQN > "nqn.2000-01.a:first"


def test_partitions_and_whole_disks_are_compared_and_case_does_not_matter() -> None:
    present = disk(1, uuid=UUID.upper())
    clone = disk(2, uuid=None, partitions=(partition("nvme0n2", 1, fs_uuid=UUID),))
    plan = decide(added(clone, clone.partitions[0]), snap(present, clone), POLICY)
    assert plan.actions == ()
    assert "is also on /dev/nvme0n1 (nsid 1)," in refusal(plan)


def test_what_is_not_a_shared_mountable_filesystem_is_no_conflict() -> None:
    one = disk(1)
    luks = dataclasses.replace(disk(2), fs=Filesystem("crypto_LUKS", usage="crypto", uuid=UUID))
    no_uuid = disk(3, uuid=None)
    other = disk(4, uuid="11111111-2222-3333-4444-555555555555")
    everything = snap(one, luks, no_uuid, other)
    for ns in (one, no_uuid, other):
        assert mounts(decide(added(ns), everything, POLICY)) == [f"/dev/nvme0n{ns.nsid}"]


def test_removal_of_the_mounted_one_still_unmounts_it() -> None:
    first, clone = disk(1), disk(2)
    plan = decide(removed(first), snap(clone), POLICY)
    assert [a.kind for a in plan.actions] == ["unmount"]


def test_a_filesystem_that_appears_on_a_present_namespace_is_checked_too() -> None:
    present = disk(1)
    blank = disk(2, fstype=None, uuid=None)
    now = disk(2)  # dd of the same image onto namespace 2
    change = Change(ChangeType.NAMESPACE_CHANGED, namespace=now, previous=blank)
    plan = decide(change, snap(present, now), POLICY)
    assert plan.actions == () and "is also on /dev/nvme0n1" in refusal(plan)


def test_a_hostile_uuid_is_shown_escaped_and_bounded() -> None:
    evil = "x\n<30>nvme-agent: forged\x1b[2J" + "y" * 500
    a, b = disk(1, uuid=evil), disk(2, uuid=evil)
    line = refusal(decide(added(b), snap(a, b), POLICY))
    assert "\n" not in line and "\x1b" not in line
    assert len(line) < 400


def test_decisions_on_alternating_snapshots_do_not_mix() -> None:
    # The index is kept for the last snapshot only; a decision on another snapshot is exact.
    a, b, c = disk(1), disk(2), disk(3, uuid="other")
    with_clone, without = snap(a, b), snap(b, c)
    for _ in range(2):
        assert decide(added(b), with_clone, POLICY).actions == ()
        assert mounts(decide(added(b), without, POLICY)) == ["/dev/nvme0n2"]


# --- whatever arrives in whatever bursts: never two mounts of one filesystem --------------

UUIDS = ["aaaa-0001", "AAAA-0001", "bbbb-0002", None]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Namespace], list[list[tuple[str, int]]]]:
    count = draw(st.integers(2, 7))
    seqs = draw(st.lists(st.integers(1, 50) | st.none(), min_size=count, max_size=count))
    pool = [disk(i + 1, uuid=draw(st.sampled_from(UUIDS)), diskseq=seqs[i]) for i in range(count)]
    bursts = draw(
        st.lists(
            st.lists(
                st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, count - 1)),
                min_size=1,
                max_size=4,
            ),
            max_size=6,
        )
    )
    return pool, bursts


def _mounted_uuids(mounted: dict[int, Namespace]) -> list[str]:
    return [ns.fs.uuid.lower() for ns in mounted.values() if ns.fs and ns.fs.uuid]


@settings(max_examples=300, deadline=None)
@given(history=histories(), start=st.sets(st.integers(0, 6)))
def test_no_order_of_arrivals_mounts_one_filesystem_twice(
    history: tuple[list[Namespace], list[list[tuple[str, int]]]], start: set[int]
) -> None:
    pool, bursts = history
    present = {i: pool[i] for i in sorted(start) if i < len(pool)}
    mounted: dict[int, Namespace] = {}

    def run(changes: list[tuple[int, Change]], policy: Policy = POLICY) -> None:
        now = snap(*present.values())
        plans: list[tuple[int, Plan]] = []
        for i, change in changes:
            plan = decide(change, now, policy)
            plans.append((i, plan))
            if mounts(plan):
                mounted[i] = pool[i]
            elif change.type is ChangeType.NAMESPACE_REMOVED:
                mounted.pop(i, None)
        uuids = _mounted_uuids(mounted)
        assert len(uuids) == len(set(uuids)), (uuids, [(i, p.explanation) for i, p in plans])

    # a fresh start: one device of each filesystem present is mounted
    run(
        [
            (i, Change(ChangeType.NAMESPACE_ADDED, namespace=n, coldplug=True))
            for i, n in present.items()
        ]
    )
    carried = {n.fs.uuid.lower() for n in present.values() if n.fs and n.fs.uuid}
    assert set(_mounted_uuids(mounted)) == carried
    # then bursts of live adds and removals, each decided on the snapshot after its burst
    for burst in bursts:
        changes: list[tuple[int, Change]] = []
        for op, i in burst:
            if op == "add" and i not in present:
                present[i] = pool[i]
                changes.append((i, added(pool[i])))
            elif op == "remove" and i in present:
                del present[i]
                changes.append((i, removed(pool[i])))
        run(changes)
