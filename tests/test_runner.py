"""The action runner: ordering, concurrency, cancellation, skipping, dry-run, reporting."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.actions import WAIT, Gate, Results, change

from nvme_agent.actions import messages
from nvme_agent.actions.guard import Guard
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.policy.plan import ActionResult, ActionSpec, ExecSpec, Plan, Status, UnmountSpec
from nvme_agent.topology.changes import ChangeType

ADD, REMOVED = ChangeType.NAMESPACE_ADDED, ChangeType.NAMESPACE_REMOVED


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
def runner(results: Results, tmp_path: Path) -> Iterator[ActionRunner]:
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    r = ActionRunner(
        max_workers=4,
        ledger=MountLedger(str(tmp_path / "mounts.json")),
        on_result=results,
        guard=Guard(fstab=str(fstab)),
    )
    yield r
    r.close(timeout=WAIT)


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[dict[str, Gate]]:
    made: dict[str, Gate] = {}

    class Factory(dict[str, Gate]):
        def __missing__(self, name: str) -> Gate:
            g = made[name] = Gate(tmp_path, name)
            self[name] = g
            return g

    f = Factory()
    yield f
    for g in made.values():
        g.release()  # never leave a hook blocked
        g.close()


def touch(path: Path) -> ExecSpec:
    return ExecSpec(argv=("sh", "-c", 'echo "$NVME_NSID" >> "$1"', "touch", str(path)))


def plan(key: str, kind: ChangeType, *actions: ActionSpec, nsid: int = 1) -> Plan:
    return Plan(
        change=change(kind, nsid),
        key=key,
        rule="test-rule",
        actions=tuple(actions),
        env=(("NVME_NSID", str(nsid)),),
    )


def test_actions_run_in_order_and_failure_skips_the_rest(
    runner: ActionRunner, results: Results, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    runner.submit(
        plan(
            "a",
            ADD,
            touch(log),
            ExecSpec(argv=("sh", "-c", "echo broken >&2; exit 7")),
            touch(log),
        )
    )
    assert runner.wait_idle(WAIT)
    got = results.of("a")
    assert [r.status for r in got] == [Status.OK, Status.FAILED, Status.SKIPPED]
    assert got[1].error is not None and "exited 7" in got[1].error
    assert "exec (action 2) failed" in got[2].message
    assert [dict(r.details)["index"] for r in got] == ["0", "1", "2"]
    assert log.read_text() == "1\n"  # the third action never ran
    assert all(r.nsid == 1 and r.rule == "test-rule" and r.change == ADD.value for r in got)


def test_unmount_in_a_removal_plan_runs_after_a_failure(
    runner: ActionRunner, results: Results, tmp_path: Path
) -> None:
    runner.submit(
        plan(
            "a",
            REMOVED,
            ExecSpec(argv=("false",)),
            UnmountSpec(
                source="/dev/nvme-test-absent",
                target=None,
                mount_root=str(tmp_path / "m"),
                device_gone=True,
            ),
            ExecSpec(argv=("true",)),
        )
    )
    assert runner.wait_idle(WAIT)
    assert [r.status for r in results.of("a")] == [Status.FAILED, Status.OK, Status.SKIPPED]
    assert "nothing to unmount" in results.of("a")[1].message


def test_same_key_runs_in_submission_order(
    runner: ActionRunner, results: Results, tmp_path: Path, gates: dict[str, Gate]
) -> None:
    log = tmp_path / "order"
    runner.submit(plan("k", ADD, ExecSpec(argv=gates["first"].argv), touch(log), nsid=1))
    for n in (2, 3, 4):
        runner.submit(plan("k", ChangeType.NAMESPACE_CHANGED, touch(log), nsid=n))
    assert gates["first"].wait_started(WAIT)
    assert runner.pending("k") == 4
    gates["first"].release()
    assert runner.wait_idle(WAIT)
    assert log.read_text().split() == ["1", "2", "3", "4"]
    assert runner.pending("k") == 0


def test_two_namespaces_in_parallel_while_a_third_is_removed_mid_plan(
    runner: ActionRunner, results: Results, tmp_path: Path, gates: dict[str, Gate]
) -> None:
    done = tmp_path / "done"
    for key in ("a", "b", "c"):
        runner.submit(plan(key, ADD, ExecSpec(argv=gates[key].argv), touch(done / key)))
    done.mkdir()
    # All three hooks are running at the same time: the pool runs different keys in parallel.
    for key in ("a", "b", "c"):
        assert gates[key].wait_started(WAIT), key
    # c: a second add plan is queued, then the namespace goes away.
    runner.submit(plan("c", ChangeType.PARTITION_ADDED, touch(done / "c2")))
    removed = tmp_path / "removed"
    runner.submit(plan("c", REMOVED, touch(removed), nsid=1))
    assert runner.pending("c") == 2  # the running add + the removal; the queued add is gone
    queued = results.wait_for(1)
    assert [(r.plan_key, r.status, r.change) for r in queued] == [
        ("c", Status.CANCELLED, ChangeType.PARTITION_ADDED.value)
    ]
    gates["c"].release()
    # The removal runs as soon as c's current action ends, while a and b are still blocked.
    got = results.wait_for(4)
    c = results.of("c")
    assert [r.status for r in c] == [
        Status.CANCELLED,  # queued add plan, never started
        Status.OK,  # the gate hook that was running finishes
        Status.CANCELLED,  # the rest of the running add plan
        Status.OK,  # the removal
    ]
    assert c[-1].change == REMOVED.value and removed.exists()
    assert not (done / "c").exists() and not (done / "c2").exists()
    assert results.of("a") == [] and results.of("b") == [] and len(got) == 4
    gates["a"].release()
    gates["b"].release()
    assert runner.wait_idle(WAIT)
    for key in ("a", "b"):
        assert [r.status for r in results.of(key)] == [Status.OK, Status.OK]
        assert (done / key).exists()


def test_removal_cancels_a_not_started_add_completely(
    runner: ActionRunner, results: Results, tmp_path: Path, gates: dict[str, Gate]
) -> None:
    runner.submit(plan("n", ChangeType.NAMESPACE_CHANGED, ExecSpec(argv=gates["busy"].argv)))
    assert gates["busy"].wait_started(WAIT)
    added = tmp_path / "added"
    runner.submit(plan("n", ADD, touch(added), touch(added)))
    runner.submit(plan("n", REMOVED, touch(tmp_path / "removed")))
    gates["busy"].release()
    assert runner.wait_idle(WAIT)
    got = results.of("n")
    statuses = [(r.change, r.status) for r in got]
    assert statuses.count((ADD.value, Status.CANCELLED)) == 2
    assert (REMOVED.value, Status.OK) in statuses
    assert not added.exists()
    assert len(got) == 4  # every action reported exactly once


def test_pool_is_bounded(results: Results, tmp_path: Path, gates: dict[str, Gate]) -> None:
    r = ActionRunner(max_workers=1, ledger=MountLedger(None), on_result=results)
    try:
        r.submit(plan("x", ADD, ExecSpec(argv=gates["x"].argv)))
        r.submit(plan("y", ADD, ExecSpec(argv=gates["y"].argv)))
        assert gates["x"].wait_started(WAIT)
        assert not gates["y"].wait_started(0.5)  # the single worker is busy with x
        gates["x"].release()
        assert gates["y"].wait_started(WAIT)
        gates["y"].release()
        assert r.wait_idle(WAIT)
    finally:
        r.close(timeout=WAIT)


def test_dry_run_executes_nothing(
    results: Results, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.actions")
    marker = tmp_path / "ran"
    r = ActionRunner(dry_run=True, ledger=MountLedger(None), on_result=results)
    try:
        r.submit(
            plan(
                "d",
                REMOVED,
                touch(marker),
                UnmountSpec(
                    source="/dev/x",
                    target=str(tmp_path / "m/x"),
                    mount_root=str(tmp_path / "m"),
                    device_gone=True,
                ),
            )
        )
        assert r.wait_idle(WAIT)
    finally:
        r.close()
    got = results.of("d")
    assert [x.status for x in got] == [Status.DRY_RUN, Status.DRY_RUN]
    assert "would run sh -c" in got[0].message
    assert "would lazily detach /dev/x" in got[1].message
    assert not marker.exists()
    ids = {getattr(rec, "MESSAGE_ID", None) for rec in caplog.records}
    assert ids == {messages.DRY_RUN}


def test_outcomes_are_logged_with_message_ids_and_errors(
    runner: ActionRunner, results: Results, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvme_agent.actions")
    runner.submit(
        plan(
            "l", ADD, ExecSpec(argv=("true",)), ExecSpec(argv=("false",)), ExecSpec(argv=("true",))
        )
    )
    assert runner.wait_idle(WAIT)
    recs = [
        r for r in caplog.records if r.name == "nvme_agent.actions" and hasattr(r, "MESSAGE_ID")
    ]
    assert [r.MESSAGE_ID for r in recs] == [
        messages.ACTION_OK,
        messages.ACTION_FAILED,
        messages.ACTION_SKIPPED,
    ]
    assert recs[1].levelno == logging.ERROR and "exited 1" in recs[1].getMessage()
    fields = vars(recs[1])  # the journal fields, set as attributes of the record
    assert fields["NVME_NSID"] == "1" and fields["NVME_ACTION"] == "exec"


def test_on_result_errors_do_not_break_the_runner(tmp_path: Path) -> None:
    calls: list[ActionResult] = []

    def bad(result: ActionResult) -> None:
        calls.append(result)
        raise RuntimeError("subscriber bug")

    r = ActionRunner(ledger=MountLedger(None), on_result=bad)
    try:
        r.submit(plan("e", ADD, ExecSpec(argv=("true",)), ExecSpec(argv=("true",))))
        assert r.wait_idle(WAIT)
    finally:
        r.close()
    assert [c.status for c in calls] == [Status.OK, Status.OK]


def test_async_drain_and_close_cancels_queued(
    results: Results, tmp_path: Path, gates: dict[str, Gate]
) -> None:
    r = ActionRunner(ledger=MountLedger(None), on_result=results)
    r.submit(plan("q", ADD, ExecSpec(argv=gates["q"].argv)))
    r.submit(plan("q", ChangeType.NAMESPACE_CHANGED, ExecSpec(argv=("true",))))
    assert gates["q"].wait_started(WAIT)

    async def main() -> bool:
        return await r.drain(0.2)

    assert asyncio.run(main()) is False  # still running
    closer = threading.Thread(target=r.close, kwargs={"timeout": WAIT})
    closer.start()
    results.wait_for(1)  # the queued plan is cancelled at once
    gates["q"].release()
    closer.join(WAIT)
    got = results.of("q")
    assert sorted(x.status.value for x in got) == ["cancelled", "ok"]
    with pytest.raises(RuntimeError, match="closed"):
        r.submit(plan("q", ADD))


def test_close_without_cancelling_lets_queued_plans_finish(
    results: Results, tmp_path: Path, gates: dict[str, Gate]
) -> None:
    r = ActionRunner(ledger=MountLedger(None), on_result=results)
    r.submit(plan("w", ADD, ExecSpec(argv=gates["w"].argv)))
    r.submit(plan("w", ChangeType.NAMESPACE_CHANGED, touch(tmp_path / "later")))
    assert gates["w"].wait_started(WAIT)
    assert r.close(cancel_pending=False) is False  # does not block; work remains
    gates["w"].release()
    got = results.wait_for(2)
    assert [x.status for x in got] == [Status.OK, Status.OK]
    assert (tmp_path / "later").exists()
    assert r.wait_idle(WAIT)
