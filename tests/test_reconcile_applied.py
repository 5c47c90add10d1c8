"""The daemon's record of the add plan that ran for each target (``AppliedPlans``), kept per
disk so a namespace's removal does not look at every other target (issue 13): after any
sequence of plans it holds exactly what a flat table of targets holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.policy import added, namespace, partition, removed

from nvme_agent.policy import Policy
from nvme_agent.policy.plan import Plan
from nvme_agent.service.reconcile import RECONCILE_REASON, Applied, AppliedPlans, Target
from nvme_agent.topology.changes import ADD_KINDS, REMOVE_KINDS, Change, ChangeType

POLICY = Policy(rules=())
KINDS = ("add", "add-part", "changed", "changed-part", "remove", "remove-part", "reconcile")


class Flat:
    """The reference: one table of targets, a namespace's removal a scan of all of them."""

    def __init__(self) -> None:
        self.table: dict[Target, Applied] = {}

    def noted(self, plan: Plan) -> None:
        change = plan.change
        target = Target.of(change)
        assert target is not None
        if change.type in ADD_KINDS or change.type is ChangeType.NAMESPACE_CHANGED:
            if change.type is ChangeType.NAMESPACE_CHANGED and change.partition is None:
                target = Target(target.disk)
            self.table[target] = Applied(POLICY, plan.rule, plan.actions)
        elif change.type in REMOVE_KINDS:
            if change.partition is not None or change.reason == RECONCILE_REASON:
                self.table.pop(target, None)
            else:
                for t in [t for t in self.table if t.disk == target.disk]:
                    del self.table[t]


def change_for(kind: str, nsid: int, diskseq: int, part: int) -> Change:
    ns = namespace(nsid, diskseq=diskseq)
    p = partition(ns.name, part)
    if kind == "add":
        return added(ns)
    if kind == "add-part":
        return added(ns, p)
    if kind in ("changed", "changed-part"):
        return Change(
            ChangeType.NAMESPACE_CHANGED, 4, namespace=ns, partition=p if "part" in kind else None
        )
    if kind == "remove":
        return removed(ns)
    if kind == "remove-part":
        return removed(ns, p)
    return removed(ns, p if part % 2 else None, reason=RECONCILE_REASON)


STEP = st.tuples(
    st.sampled_from(KINDS), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.text()
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_any_sequence_of_plans_leaves_what_a_flat_table_leaves(
    steps: list[tuple[str, int, int, int, str]],
) -> None:
    applied, flat = AppliedPlans(), Flat()
    for kind, nsid, diskseq, part, rule in steps:
        change = change_for(kind, nsid, diskseq, part)
        plan = Plan(change=change, key=f"k{nsid}", rule=rule)
        applied.noted(plan, POLICY)
        flat.noted(plan)
        assert applied.copy() == flat.table
    for nsid in (1, 2, 3):
        for diskseq in (1, 2):
            ns = namespace(nsid, diskseq=diskseq)
            for target in (Target.of(added(ns)), Target.of(added(ns, partition(ns.name, 1)))):
                assert target is not None
                assert applied.get(target) == flat.table.get(target)
