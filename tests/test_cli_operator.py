"""The operator's commands against canned daemon answers (the real control server on a real
socket): status grouped by subsystem with a summary record, flags that cannot apply, eject's
progress on stderr, reload's report of what a new policy would change, reconcile, and a time
in every JSON record (issue 14, parts 2, 7, 8, 9)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.control import CannedDaemon

from nvme_agent.cli import main as cli
from nvme_agent.cli.exits import Exit
from nvme_agent.outputs.times import parse

CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NQN_A = "nqn.2019-08.org.qemu:a"
NQN_B = "nqn.2019-08.org.qemu:b"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def controller(name: str, nqn: str) -> dict[str, Any]:
    return {
        "name": name,
        "serial": "SN1",
        "model": "QEMU NVMe Ctrl",
        "subsysnqn": nqn,
        "transport": "pcie",
        "address": f"0000:00:0{name[-1]}.0",
        "state": "live",
    }


def namespace(nsid: int, nqn: str, ctrls: list[str], **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "nsid": nsid,
        "devnode": f"/dev/nvme{ctrls[0][-1]}n{nsid}",
        "subsysnqn": nqn,
        "size_bytes": 1 << 30,
        "fs": {"type": "ext4", "label": f"l{nsid}"},
        "identity": f"wwid:nvme.{nsid}",
        "identity_weak": True,
        "controllers": ctrls,
        "paths": [
            {"controller": c, "transport": "pcie", "address": "0000:00:04.0", "state": "live"}
            for c in ctrls
        ],
        "partitions": [],
        "mountpoints": [],
        "rule": "data",
        "applied": True,
        "applied_rule": "data",
    }
    return item | extra


def status_answer() -> dict[str, Any]:
    """Two subsystems: A with two controllers and two namespaces, B with one of each."""
    return {
        "ok": True,
        "time": "2025-01-31T09:15:02.123456Z",
        "status": "3 namespaces, 1 mounted, 0 failures",
        "policy": "/etc/nvme-agent/policy.yaml",
        "policy_generation": 2,
        "dry_run": False,
        "counters": {"udev_events": 12, "changes": {"namespace-added": 3}},
        "counts": {"controllers": 3, "namespaces": 3, "mounted": 1, "not_applied": 1},
        "subsystems": [
            {"subsysnqn": NQN_A, "controllers": ["nvme0", "nvme1"], "nsids": [1, 2]},
            {"subsysnqn": NQN_B, "controllers": ["nvme2"], "nsids": [1]},
        ],
        "controllers": [
            controller("nvme0", NQN_A),
            controller("nvme1", NQN_A),
            controller("nvme2", NQN_B),
        ],
        "namespaces": [
            namespace(1, NQN_A, ["nvme0", "nvme1"], mountpoints=["/run/media/nvme-agent/l1"]),
            namespace(2, NQN_A, ["nvme0", "nvme1"], applied=False, rule="new", applied_rule=None),
            namespace(1, NQN_B, ["nvme2"]),
        ],
    }


# --- status ----------------------------------------------------------------------------------
def test_status_groups_namespaces_under_their_subsystem_not_the_last_controller(
    tmp_path: Path,
) -> None:
    with CannedDaemon(tmp_path / "run", status_answer()):
        rc, out, err = run_cli("status", "--runtime-dir", str(tmp_path / "run"))
    assert rc == Exit.OK, err
    lines = out.splitlines()
    a, b = lines.index(f"subsystem {NQN_A}"), lines.index(f"subsystem {NQN_B}")
    block_a, block_b = lines[a:b], lines[b:]
    assert [line.split()[1] for line in block_a if line.startswith("  controller")] == [
        "nvme0:",
        "nvme1:",
    ]
    rows_a = [line.split() for line in block_a if re.match(r"^  \d", line)]
    assert [(r[0], r[1]) for r in rows_a] == [("1", "/dev/nvme0n1"), ("2", "/dev/nvme0n2")]
    rows_b = [line.split() for line in block_b if re.match(r"^  \d", line)]
    assert [(r[0], r[1]) for r in rows_b] == [("1", "/dev/nvme2n1")]
    header = next(line for line in block_a if line.lstrip().startswith("NSID"))
    assert header.split() == ["NSID", "DEVICE", "SIZE", "FS", "LABEL", "MOUNT", "RULE", "IDENTITY"]
    assert "/run/media/nvme-agent/l1" in block_a[block_a.index(header) + 1]
    assert any("new, not applied (policy changed)" in line for line in block_a)
    assert any("(weak: cannot tell a swapped image)" in line for line in block_a)
    assert any(line.strip().startswith("paths: nvme0 (pcie") for line in block_a)
    assert "1 namespace not applied (policy changed): `nvme-agent reconcile`" in out
    assert lines[0].startswith("source: daemon (3 namespaces, 1 mounted, 0 failures)")


def test_status_json_starts_with_a_summary_and_every_record_has_type_nsid_time(
    tmp_path: Path,
) -> None:
    with CannedDaemon(tmp_path / "run", status_answer()):
        rc, out, _ = run_cli("status", "--json", "--runtime-dir", str(tmp_path / "run"))
    assert rc == Exit.OK
    records = json_lines(out)
    assert [r["type"] for r in records] == ["summary"] + ["controller"] * 3 + ["namespace"] * 3
    summary = records[0]
    assert summary["source"] == "daemon" and summary["counters"]["udev_events"] == 12
    assert (summary["namespaces"], summary["not_applied"], summary["policy_generation"]) == (
        3,
        1,
        2,
    )
    assert all({"type", "nsid", "time"} <= set(r) and parse(r["time"]) for r in records)


def test_status_settle_without_a_daemon_is_an_error_not_ignored(tmp_path: Path) -> None:
    rc, out, err = run_cli("status", "--settle", "5", "--runtime-dir", str(tmp_path / "none"))
    assert rc == Exit.NO_DAEMON and out == ""
    assert "--settle needs the running daemon" in err


def test_status_that_did_not_settle_prints_and_fails(tmp_path: Path) -> None:
    unsettled = {"ok": False, "reason": "timeout", "error": "actions still running after 1s"}
    with CannedDaemon(tmp_path / "run", status_answer()) as daemon:
        daemon.by_command["settle"] = unsettled
        rc, out, err = run_cli("status", "--settle", "1", "--runtime-dir", str(tmp_path / "run"))
    assert [r["cmd"] for r in daemon.requests] == ["settle", "status"]
    assert rc == Exit.FAILED
    assert "subsystem " in out  # printed all the same
    assert err == "nvme-agent status: not settled: actions still running after 1s\n"


def test_status_with_nothing_says_so_and_json_still_has_a_summary(tmp_path: Path) -> None:
    empty = {"ok": True, "subsystems": [], "controllers": [], "namespaces": [], "counts": {}}
    with CannedDaemon(tmp_path / "run", empty):
        rc, out, _ = run_cli("status", "--runtime-dir", str(tmp_path / "run"))
        rc_json, out_json, _ = run_cli("status", "--json", "--runtime-dir", str(tmp_path / "run"))
    assert rc == rc_json == Exit.OK
    assert "no NVMe controllers or namespaces found" in out
    (summary,) = json_lines(out_json)
    assert summary["type"] == "summary" and summary["source"] == "daemon"


@settings(max_examples=60, deadline=None)
@given(label=st.text(), serial=st.text(), mount=st.text(), rule=st.text())
def test_status_table_keeps_hostile_values_in_their_cells(
    tmp_path_factory: pytest.TempPathFactory, label: str, serial: str, mount: str, rule: str
) -> None:
    run = tmp_path_factory.mktemp("s") / "run"
    answer = status_answer()
    answer["controllers"][0]["serial"] = serial
    answer["namespaces"][0] |= {"fs": {"type": "ext4", "label": label}, "mountpoints": [mount]}
    answer["namespaces"][0]["rule"] = rule
    with CannedDaemon(run, answer):
        rc, out, _ = run_cli("status", "--runtime-dir", str(run))
    assert rc == Exit.OK
    assert CONTROL_CHARS.search(out.replace("\n", "")) is None
    plain = run_cli  # the same table without the hostile values has as many lines
    with CannedDaemon(run, status_answer()):
        _, baseline, _ = plain("status", "--runtime-dir", str(run))
    assert out.count("\n") == baseline.count("\n")


# --- eject progress ---------------------------------------------------------------------------
def test_eject_reports_progress_on_stderr_and_escapes_it(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    answer = {"ok": True, "nsid": 1, "device": "/dev/nvme0n1", "results": []}
    progress: list[dict[str, Any]] = [
        {"stage": "plan", "nsid": 1, "device": "/dev/nvme0n1", "actions": ["unmount x"]},
        {
            "stage": "held",
            "mountpoint": "/m/x",
            "holders": [{"pid": 42, "name": "evil\nnsid 1 is safe", "how": ["cwd"]}],
        },
        {"stage": "signalled", "pid": 42, "uid": 0, "command": "sl\x1beep", "signal": "SIGTERM"},
        {"stage": "result", "action": "unmount", "status": "ok", "nsid": 1, "message": "done"},
    ]
    with CannedDaemon(tmp_path / "run", answer) as daemon:
        daemon.progress_given = progress
        rc, out, err = run_cli("eject", "--nsid", "1", "--runtime-dir", run)
    assert rc == Exit.OK
    assert out == "nsid 1 (/dev/nvme0n1) is safe to remove\n"  # progress stays off stdout
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("nvme-agent eject: ") for line in lines)
    assert "unmount x" in lines[0]
    assert "held by evil\\x0ansid 1 is safe[42] (cwd)" in lines[1]
    assert "sent SIGTERM to pid 42" in lines[2] and "\\x1b" in lines[2]
    assert "unmount (nsid 1): ok done" in lines[3]
    assert CONTROL_CHARS.search(err.replace("\n", "")) is None


# --- reload and reconcile ---------------------------------------------------------------------
def test_reload_says_how_many_present_namespaces_the_new_policy_would_change(
    tmp_path: Path,
) -> None:
    run = str(tmp_path / "run")
    with CannedDaemon(tmp_path / "run", {"ok": True, "generation": 2, "pending": [1, 3]}) as d:
        rc, out, _ = run_cli("reload", "--runtime-dir", run)
        rc_json, out_json, _ = run_cli("reload", "--json", "--runtime-dir", run)
    assert d.requests[0] == {"cmd": "reload", "assess": True}
    assert rc == rc_json == Exit.OK
    assert out.splitlines() == [
        "policy reloaded (generation 2)",
        "2 present namespaces would be treated differently (nsid 1, 3): "
        "`nvme-agent reconcile` applies the policy to them",
    ]
    (record,) = json_lines(out_json)
    assert record["type"] == "reloaded" and record["pending"] == [1, 3]


TARGET = {
    "nsid": 1,
    "device": "/dev/nvme0n1",
    "partition": None,
    "rule": "data",
    "applied_rule": None,
    "actions": ["mount /dev/nvme0n1 at /m/data"],
}


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"ok": True, "generation": 2, "targets": [TARGET], "results": []}, Exit.OK),
        ({"ok": True, "generation": 2, "targets": [], "results": []}, Exit.OK),
        ({"ok": False, "reason": "not-found", "error": "no namespace with nsid 9"}, 3),
        ({"ok": False, "reason": "failed", "error": "mount: busy", "targets": [TARGET]}, 1),
        ({"ok": False, "reason": "denied", "error": "permission denied"}, Exit.DENIED),
    ],
)
def test_reconcile_statuses_and_lines(tmp_path: Path, answer: dict[str, Any], status: Exit) -> None:
    run = str(tmp_path / "run")
    with CannedDaemon(tmp_path / "run", answer) as daemon:
        rc, out, _ = run_cli("reconcile", "--dry-run", "--nsid", "1", "--runtime-dir", run)
        rc_json, out_json, _ = run_cli("reconcile", "--json", "/dev/nvme0n1", "--runtime-dir", run)
    assert rc == rc_json == status
    assert daemon.requests[0] == {"cmd": "reconcile", "dry_run": True, "timeout": 300.0, "nsid": 1}
    assert daemon.requests[1]["device"] == "/dev/nvme0n1" and daemon.requests[1]["progress"]
    assert all({"type", "nsid", "time"} <= set(r) for r in json_lines(out_json))
    if answer.get("targets") and answer["ok"]:
        assert "nsid 1 (/dev/nvme0n1): rule data (ran: None); would run: mount" in out
        assert out.splitlines()[-1] == "would reconcile 1 target(s)"
    elif answer["ok"]:
        assert out.startswith("nothing to reconcile")
    else:
        assert "NOT reconciled: " in out


def test_reconcile_no_daemon_is_4(tmp_path: Path) -> None:
    rc, _, err = run_cli("reconcile", "--runtime-dir", str(tmp_path / "none"))
    assert rc == Exit.NO_DAEMON and err.startswith("nvme-agent reconcile: ")


# --- times ------------------------------------------------------------------------------------
def test_history_prints_each_records_time_and_null_for_records_without_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "history.jsonl").write_text(
        '{"type": "namespace-added", "nsid": 3}\n'
        '{"type": "namespace-removed", "nsid": 3, "time": "2025-01-31T09:15:02.123456Z"}\n'
    )
    rc, out, _ = run_cli("history", "--json", "--state-dir", str(tmp_path))
    assert rc == Exit.OK
    old, new = json_lines(out)
    assert old["time"] is None and new["time"] == "2025-01-31T09:15:02.123456Z"
    rc, text, _ = run_cli("history", "--state-dir", str(tmp_path))
    first, second = text.splitlines()
    assert first.startswith("- namespace-added")
    stamp = second.split()[0]
    assert parse(stamp) == parse("2025-01-31T09:15:02.123Z")  # local time, to the millisecond
