"""The probe helpers (issue 13): the mount-time reprobe without an exec of blkid per mount.

The helper must say what ``blkid -p`` says (checked against it on real loop devices: a
filesystem, another one, nothing, an ambivalent device, a missing path), and a helper that
dies, hangs or talks nonsense must cost nothing but a fallback to ``blkid -p`` (or, when it
hangs, the action's deadline): never a wrong answer, never a stuck daemon.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.actions import Loop, guard, ledger, loops, needs_loop, root

from nvme_agent.actions import guard as guard_module
from nvme_agent.actions.guard import Guard, probe_fstype
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.mount import do_mount
from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.prober import Probe, Prober
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.policy.plan import MountSpec

__all__ = ["guard", "ledger", "loops", "root"]  # fixtures, re-exported for pytest

DEADLINE = 30.0


def _answer(prober: Prober, devnode: str, deadline: float = DEADLINE) -> Probe:
    """The helper's answer: the first probe of a fresh pool starts the helper and returns
    None (its caller runs blkid -p); the next one waits for the started helper."""
    assert prober.probe(devnode, Deadline(deadline)) is None
    answer = prober.probe(devnode, Deadline(deadline))
    assert answer is not None
    return answer


def _script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "helper.py"
    script.write_text(body)
    return [sys.executable, "-I", "-S", str(script)]


@pytest.fixture
def prober() -> Iterator[Prober]:
    pool = Prober(2)
    yield pool
    pool.close()


def _bfs_magic(loop: Loop) -> None:
    """A second signature (bfs's magic in the sector ext4 leaves unused): ambivalent."""
    with open(loop.dev, "r+b") as dev:
        dev.write(b"\xce\xfa\xad\x1b")


@pytest.mark.root
@needs_loop
@pytest.mark.parametrize("content", ["ext4", "xfs", "nothing", "ambivalent", "missing"])
def test_the_helper_answers_what_blkid_p_answers(
    loops: Callable[..., Loop], prober: Prober, content: str
) -> None:
    loop = loops("xfs" if content == "xfs" else "ext4")
    devnode = loop.dev
    if content == "nothing":
        subprocess.run(["wipefs", "-a", "-q", loop.dev], check=True)
    elif content == "ambivalent":
        _bfs_magic(loop)
    elif content == "missing":
        devnode = "/dev/nvme-agent-no-such-device"
    subprocess.run(["blockdev", "--flushbufs", loop.dev], check=True)
    by_blkid = guard_module._blkid_p(devnode, Deadline(DEADLINE))
    helper = _answer(prober, devnode)
    assert (helper.rc, helper.fstype) == (by_blkid.rc, by_blkid.fstype)
    expected = {"ext4": (0, "ext4"), "xfs": (0, "xfs"), "ambivalent": (8, None)}
    assert (helper.rc, helper.fstype) == expected.get(content, (2, None))


@pytest.mark.root
@needs_loop
def test_a_mount_through_the_helper_still_refuses_an_ambivalent_device(
    loops: Callable[..., Loop], root: Path, ledger: MountLedger, guard: Guard, prober: Prober
) -> None:
    loop = loops("ext4")
    _answer(prober, loop.dev)  # the helper is up and free: the mount's probe is its
    _bfs_magic(loop)
    asked: list[Probe | None] = []
    probe = prober.probe

    def recorded(devnode: str, deadline: Deadline) -> Probe | None:
        asked.append(probe(devnode, deadline))
        return asked[-1]

    prober.probe = recorded  # type: ignore[method-assign]
    spec = MountSpec(source=loop.dev, target=str(root / "d"), mount_root=str(root), fstype="ext4")
    with pytest.raises(ActionError, match="several filesystem signatures"):
        do_mount(spec, ledger=ledger, guard=guard, deadline=Deadline(DEADLINE), prober=prober)
    assert asked == [Probe(8)]
    assert not (root / "d").exists() and ledger.entries() == []


def test_a_helper_that_dies_falls_back_to_blkid_and_is_replaced(tmp_path: Path) -> None:
    pool = Prober(1, _script(tmp_path, "import sys\nsys.stdin.readline()\n"))
    try:
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None  # started
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None  # died: blkid -p
        (dead,) = pool._helpers
        assert dead.dead
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None  # replaced
        (fresh,) = pool._helpers
        assert fresh is not dead and not fresh.dead
    finally:
        pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        "nonsense",
        '{"rc": "0", "type": "ext4"}',
        '{"rc": 0, "type": 4}',
        '{"type": "ext4"}',
        "x" * 10000,  # no end of line within the bound
    ],
)
def test_a_helper_talking_nonsense_is_never_believed(tmp_path: Path, answer: str) -> None:
    body = f"import sys\nsys.stdin.readline()\nsys.stdout.write({answer!r} + '\\n')\n"
    body += "sys.stdout.flush()\nsys.stdin.readline()\n"
    pool = Prober(1, _script(tmp_path, body))
    try:
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None
        assert pool._helpers[0].dead
    finally:
        pool.close()


def test_a_hanging_helper_costs_the_deadline_and_is_killed(tmp_path: Path) -> None:
    body = "import sys, threading\nsys.stdin.readline()\nthreading.Event().wait()\n"
    pool = Prober(1, _script(tmp_path, body))
    try:
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None
        (helper,) = pool._helpers
        with pytest.raises(ActionError, match=r"did not finish within 0\.2s"):
            pool.probe("/dev/null", Deadline(0.2))
        assert helper.dead
        assert helper.proc.wait(timeout=DEADLINE) != 0  # killed
    finally:
        pool.close()


def test_a_busy_pool_sends_the_probe_to_blkid(tmp_path: Path) -> None:
    pool = Prober(1, _script(tmp_path, "import sys\nfor _ in sys.stdin: pass\n"))
    try:
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None  # started
        held = pool._take()  # another worker's probe is running on the only helper
        assert held is not None
        assert pool.probe("/dev/null", Deadline(DEADLINE)) is None
        assert len(pool._helpers) == 1
        held.lock.release()
    finally:
        pool.close()


def test_a_path_that_is_not_one_line_goes_to_blkid(prober: Prober) -> None:
    for devnode in ("/dev/a\nb", "/dev/a\0b"):
        assert prober.probe(devnode, Deadline(DEADLINE)) is None
    assert prober._helpers == []


def test_close_ends_the_helpers_and_later_probes_go_to_blkid(prober: Prober) -> None:
    _answer(prober, "/dev/nvme-agent-no-such-device")
    (helper,) = prober._helpers
    prober.close()
    assert helper.proc.poll() is not None
    assert prober.probe("/dev/null", Deadline(DEADLINE)) is None
    assert prober._helpers == []


def test_probe_fstype_reads_the_helpers_answer(prober: Prober) -> None:
    answer = _answer(prober, "/dev/nvme-agent-no-such-device")
    assert answer.rc != 0 and answer.fstype is None
    with pytest.raises(ActionError, match="no-such-device"):
        probe_fstype("/dev/nvme-agent-no-such-device", Deadline(DEADLINE), prober)


def test_the_runner_has_helpers_only_when_it_acts(tmp_path: Path) -> None:
    ledger = MountLedger(None)
    assert ActionRunner(dry_run=True, ledger=ledger, on_result=lambda _r: None).prober is None
    runner = ActionRunner(max_workers=3, ledger=ledger, on_result=lambda _r: None)
    assert runner.prober is not None and runner.prober.size == 3
    _answer(runner.prober, "/dev/nvme-agent-no-such-device")
    (helper,) = runner.prober._helpers
    assert runner.close()
    assert helper.proc.poll() is not None
