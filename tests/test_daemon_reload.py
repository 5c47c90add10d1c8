"""Reloads and start-up with bad files, on the real daemon in process with a real
NOTIFY_SOCKET (issues 11.2 and 11.9).

The loader is the real one, wrapped where a test needs it to raise or to wait on an Event
(released by the test, never a sleep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.inproc import InProcess, gate, gated

from nvme_agent.cli.commands import run as run_command
from nvme_agent.cli.main import main as cli_main
from nvme_agent.policy import load_policy
from nvme_agent.policy.spec import Policy
from nvme_agent.service import operations, reconcile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sockets below /run")

BROKEN = "version: 1\nrules:\n  - name: broken\n    match: {fs_typo: ext4}\n"
OTHER = "version: 1\nrules: []\n# another digest\n"


def raising(exc: BaseException) -> Any:
    """The real loader for the start, ``exc`` for every reload."""
    calls = [0]

    def load(path: Path) -> Policy:
        calls[0] += 1
        if calls[0] > 1:
            raise exc
        return load_policy(path)

    return load


def ready_after_reloading(lines: list[str], start: int = 0) -> bool:
    """Every RELOADING=1 from ``start`` on is followed by a READY=1 before the next one."""
    waiting = False
    for line in lines[start:]:
        if line == "RELOADING=1":
            if waiting:
                return False
            waiting = True
        elif line == "READY=1":
            waiting = False
    return not waiting


def test_a_broken_policy_is_refused_and_ready_follows_reloading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with InProcess(monkeypatch) as d:
        d.policy.write_text(BROKEN)
        answer = d.request({"cmd": "reload"})
        assert answer["ok"] is False and answer["reason"] == "invalid-policy"
        assert any(":4:" in e and "fs_typo" in e for e in answer["errors"])
        assert "not reloaded" in answer["error"] and answer["generation"] == 1
        start = d.notify.wait_for("RELOADING=1")
        d.notify.wait_for("READY=1", after=start)
        assert ready_after_reloading(d.notify.snapshot())


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (MemoryError(), "too large"),
        (UnicodeError("odd"), "UnicodeError"),
    ],
    ids=["RecursionError", "MemoryError", "other"],
)
def test_whatever_the_loader_raises_is_an_answer_and_the_old_policy_stays(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, words: str
) -> None:
    with InProcess(monkeypatch, load=raising(exc)) as d:
        assert d.daemon is not None
        old = d.daemon.policy
        answer = d.request({"cmd": "reload"})
        assert answer["reason"] == "invalid-policy" and words in answer["error"], answer
        assert d.daemon.policy is old
        start = d.notify.wait_for("RELOADING=1")
        d.notify.wait_for("READY=1", after=start)
        assert d.request({"cmd": "status"})["ok"] is True


def test_the_loop_serves_requests_and_the_watchdog_while_a_parse_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with gate() as (entered, release):
        load = gated(entered, release)
        with InProcess(monkeypatch, load=load, watchdog_usec=100_000) as d:
            reload: dict[str, Any] = {}
            asking = threading.Thread(target=lambda: reload.update(d.request({"cmd": "reload"})))
            asking.start()
            assert entered.wait(30)
            reloading = d.notify.wait_for("RELOADING=1")
            d.notify.wait_for("WATCHDOG=1", after=reloading)  # pings go on
            assert d.request({"cmd": "status"})["ok"] is True  # so do answers
            assert d.request({"cmd": "history"})["ok"] is True
            assert reload == {} and "READY=1" not in d.notify.snapshot()[reloading:]
            release.set()
            asking.join(30)
            assert reload["ok"] is True and reload["generation"] == 2
            d.notify.wait_for("READY=1", after=reloading)


def test_reloads_during_a_parse_coalesce_into_one_more_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with gate() as (entered, release), InProcess(monkeypatch, load=gated(entered, release)) as d:
        assert d.daemon is not None
        first = d.submit(d.daemon.ops.reload())
        assert entered.wait(30)
        d.policy.write_text(OTHER)  # written after the first parse began
        joined = [d.submit(d.daemon.ops.reload()) for _ in range(3)]

        async def probe() -> int:  # runs after the three reloads reached their await
            assert d.daemon is not None
            return d.daemon.reloader.parses

        assert d.call(probe()) == 1
        release.set()
        answers = [f.result(30) for f in (first, *joined)]
        assert [a["generation"] for a in answers] == [2, 3, 3, 3]
        assert d.daemon.reloader.parses == 2
        assert d.daemon.policy.digest == load_policy(d.policy).digest  # the newer file
        second = d.notify.wait_for("RELOADING=1", after=d.notify.wait_for("RELOADING=1") + 1)
        d.notify.wait_for("READY=1", after=second)  # datagrams may trail the answers
        lines = d.notify.snapshot()
        assert lines.count("RELOADING=1") == 2 and ready_after_reloading(lines)


def test_a_parse_that_never_ends_times_out_and_the_next_reload_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with gate() as (entered, release):
        load = gated(entered, release)
        with InProcess(monkeypatch, load=load, reload_timeout=0.5) as d:
            assert d.daemon is not None
            answer = d.request({"cmd": "reload"})
            assert answer["reason"] == "timeout" and "not read within" in answer["error"]
            d.notify.wait_for("READY=1", after=d.notify.wait_for("RELOADING=1"))
            assert ready_after_reloading(d.notify.snapshot())
            release.set()  # the stuck parse ends now; its late result is dropped
            assert d.request({"cmd": "reload"})["generation"] == 2
            assert d.daemon.generation == 2


def test_sighup_while_a_reload_runs_is_coalesced_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with gate() as (entered, release), InProcess(monkeypatch, load=gated(entered, release)) as d:
        assert d.daemon is not None and d.loop is not None
        asked = d.submit(d.daemon.ops.reload())
        assert entered.wait(30)
        d.loop.call_soon_threadsafe(d.daemon.reloader.request)  # what SIGHUP runs
        release.set()
        assert asked.result(30)["ok"] is True
        d.notify.wait_for("READY=1", after=d.notify.wait_for("RELOADING=1", after=0) + 1)
        assert d.request({"cmd": "reload"})["generation"] == 4  # 2: asked, 3: SIGHUP


# ---------------------------------------------------------------------- assessments
class GatedDrift:
    """The real ``drift`` of the daemon's assessments, its first call held at ``release``;
    how each call ended is kept, in order."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0
        self.outcomes: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(60)
        try:
            found = reconcile.drift(*args)
        except reconcile.CalledOff:
            self._ended("called off")
            raise
        self._ended("done")
        return found

    def _ended(self, how: str) -> None:
        with self._cond:
            self.outcomes.append(how)
            self._cond.notify_all()

    def wait(self, count: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.outcomes) >= count, 60), self.outcomes
            return list(self.outcomes)


@pytest.fixture
def assessments(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedDrift]:
    gated_drift = GatedDrift()
    monkeypatch.setattr(operations, "drift", gated_drift)
    try:
        yield gated_drift
    finally:
        gated_drift.release.set()


def reload_to(d: InProcess, text: str, **request: Any) -> dict[str, Any]:
    d.policy.write_text(text)
    return d.request({"cmd": "reload", **request})


def assessment_task(d: InProcess) -> Any:
    async def task() -> Any:
        assert d.daemon is not None
        return d.daemon.ops._assessment

    return d.call(task())


def test_a_reload_that_begins_calls_off_the_last_ones_assessment_and_a_failed_one_assesses_again(
    monkeypatch: pytest.MonkeyPatch, assessments: GatedDrift
) -> None:
    with InProcess(monkeypatch) as d:
        assert reload_to(d, OTHER)["generation"] == 2
        assert assessments.entered.wait(30)  # generation 2's assessment, held
        assert reload_to(d, BROKEN)["ok"] is False  # called it off as it began
        assert assessments.wait(1) == ["done"]  # generation 2, which stays, assessed again
        assessments.release.set()
        assert assessments.wait(2) == ["done", "called off"]  # no decision after the gate
        assert assessments.calls == 2


def test_a_failed_reload_after_a_finished_assessment_assesses_nothing_again(
    monkeypatch: pytest.MonkeyPatch, assessments: GatedDrift
) -> None:
    assessments.release.set()
    with InProcess(monkeypatch) as d:
        # With ``assess`` the answer waits for the assessment: it is over.
        assert reload_to(d, OTHER, assess=True)["pending"] == []
        finished = assessment_task(d)
        assert finished.done() and assessments.outcomes == ["done"]
        assert reload_to(d, BROKEN)["ok"] is False
        assert assessment_task(d) is finished  # none was started for the policy that stays
        assert assessments.calls == 1


def test_an_assessed_reload_whose_follow_up_fails_still_says_what_is_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The follow-up parse of a reload asked meanwhile calls off the first one's assessment as
    it begins; when it fails, the first policy stays and its answer waits for its assessment
    made again."""
    read, release = threading.Event(), threading.Event()
    calls = [0]

    def load(path: Path) -> Policy:
        policy = load_policy(path)  # read first (the follow-up raises here), then held
        calls[0] += 1
        if calls[0] == 2:
            read.set()
            release.wait(60)
        return policy

    with InProcess(monkeypatch, load=load) as d:
        assert d.daemon is not None
        d.policy.write_text(OTHER)
        first = d.submit(d.daemon.ops.reload(assess=True))
        assert read.wait(30)
        d.policy.write_text(BROKEN)
        follow_up = d.submit(d.daemon.ops.reload())
        release.set()
        assert follow_up.result(30)["ok"] is False
        assert first.result(30) == {"ok": True, "generation": 2, "pending": []}


def test_a_stop_calls_off_the_running_assessment(
    monkeypatch: pytest.MonkeyPatch, assessments: GatedDrift
) -> None:
    with InProcess(monkeypatch) as d:
        assert reload_to(d, OTHER)["generation"] == 2
        assert assessments.entered.wait(30)
    assessments.release.set()  # the daemon has stopped
    assert assessments.wait(1) == ["called off"]


# ---------------------------------------------------------------------- start-up
def run_agent(tmp: Path, policy: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("UMOCKDEV_DIR", "LD_PRELOAD")}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nvme_agent",
            "run",
            "--policy",
            str(policy),
            "--runtime-dir",
            str(tmp / "run"),
            "--state-dir",
            str(tmp / "state"),
            "--log-target",
            "stderr",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nrules: " + "[" * 50_000 + "]" * 50_000 + "\n",  # RecursionError today
        "version: 1\nrules:\n"
        + "".join(f"  - {{name: r{i}, match: {{nsid: x}}}}\n" for i in range(300)),
    ],
    ids=["deeply-nested", "300-errors"],
)
def test_a_bad_policy_at_start_is_one_screen_and_exit_1(tmp_path: Path, text: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    done = run_agent(tmp_path, policy)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert str(policy) in done.stderr
    assert len(done.stderr.splitlines()) <= 25, done.stderr


@pytest.mark.parametrize(
    "state",
    ["[]", '{"topology": {"namespaces": [{}]}}', "{broken", '{"topology": {}, "handled": 5}'],
    ids=["list", "namespace-without-keys", "not-json", "handled-not-a-list"],
)
def test_a_bad_state_file_is_moved_aside_and_the_daemon_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, state: str
) -> None:
    d = InProcess(monkeypatch)
    (d.base / "run" / "topology.json").write_text(state)
    with d:
        aside = [p.name for p in (d.base / "run").iterdir() if ".corrupt." in p.name]
        assert len(aside) == 1 and aside[0].startswith("topology.json.corrupt.")
        assert (d.base / "run" / aside[0]).read_text() == state
        assert json.loads((d.base / "run" / "topology.json").read_text())["topology"]
        assert any("moved aside" in r.getMessage() for r in caplog.records)
        assert d.request({"cmd": "status"})["ok"] is True


def test_the_daemon_program_switches_threads_every_millisecond(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``nvme-agent run`` owns its process and sets the interval before the daemon starts
    (an event's wait behind a reload's parse is bounded by it); a library caller's process
    keeps its own."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BROKEN)
    before = sys.getswitchinterval()
    assert before != run_command.SWITCH_INTERVAL  # CPython's default: the test can fail
    argv = ["run", "--policy", str(policy), "--runtime-dir", str(tmp_path / "run")]
    assert cli_main([*argv, "--state-dir", str(tmp_path / "state")]) == 1  # a bad policy
    assert sys.getswitchinterval() == pytest.approx(run_command.SWITCH_INTERVAL)
    sys.setswitchinterval(before)  # (after a failure, conftest's switch_interval restores it)
    with InProcess(monkeypatch) as d:  # the daemon alone leaves it as it is
        assert d.request({"cmd": "status"})["ok"] is True
        assert sys.getswitchinterval() == before
