"""Topology log fields and fallback, state file atomicity, history rotation."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from nvme_agent.outputs.journal import CHANGE_MESSAGE_IDS, TopologyLog, change_fields
from nvme_agent.outputs.state import History, read_json, write_json_atomic
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Filesystem, Identity, Namespace


def namespace(nsid: int = 1) -> Namespace:
    ident = Identity.derive(
        uuid=None,
        nguid=None,
        eui64=None,
        wwid=f"nvme.1b36-aa-bb-{nsid:08x}",
        subsysnqn="nqn.x",
        nsid=nsid,
    )
    return Namespace(
        nsid=nsid,
        name=f"nvme0n{nsid}",
        devpath=f"/devices/x/nvme0n{nsid}",
        devnode=f"/dev/nvme0n{nsid}",
        identity=ident,
        subsysnqn="nqn.x",
        controllers=("nvme0",),
        size_bytes=1 << 30,
        wwid=f"nvme.1b36-aa-bb-{nsid:08x}",
        fs=Filesystem("ext4", "filesystem", "data", "1234"),
    )


def test_every_change_type_has_a_distinct_message_id() -> None:
    assert set(CHANGE_MESSAGE_IDS) == set(ChangeType)
    ids = list(CHANGE_MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_change_fields_carry_identity_and_device() -> None:
    fields = change_fields(Change(ChangeType.NAMESPACE_ADDED, namespace=namespace(3)))
    assert fields["NVME_NSID"] == "3"
    assert fields["NVME_CTRL"] == "nvme0"
    assert fields["NVME_WWID"].endswith("00000003")
    assert fields["NVME_IDENTITY_WEAK"] == "1"
    assert fields["DEVNAME"] == "/dev/nvme0n3"
    assert fields["SIZE_BYTES"] == str(1 << 30)
    assert fields["ID_FS_LABEL"] == "data"
    assert "NVME_NS_UUID" not in fields  # absent identifiers are not invented


def test_without_journal_records_go_to_stderr_readably() -> None:
    stream = io.StringIO()
    tlog = TopologyLog("stderr", stream)
    tlog.change(Change(ChangeType.NAMESPACE_ADDED, namespace=namespace(1)))
    line = stream.getvalue()
    assert line.startswith("nvme-agent[info]: namespace-added nsid=1")
    assert "weak" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace")
def test_journal_target_sends_native_fields(tmp_path: Path) -> None:
    # Bind a datagram socket where journald would listen, in a private mount namespace,
    # and check the real systemd-python sendmsg reaches it with our fields.
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import os, socket, sys\n"
        "os.makedirs('/run/systemd/journal', exist_ok=True)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.bind('/run/systemd/journal/socket')\n"
        "from nvme_agent.outputs.journal import TopologyLog, MSG_DAEMON_READY\n"
        "TopologyLog('auto').event('hello', MSG_DAEMON_READY, fields={'NVME_NSID': '7'})\n"
        "s.settimeout(5); sys.stdout.buffer.write(s.recv(65536))\n"
    )
    unshare = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        f"mount -t tmpfs tmpfs /run/systemd && {sys.executable} {script}",
    ]
    try:
        out = subprocess.run(unshare, capture_output=True, timeout=30, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a private mount namespace here: {exc}")
    assert b"MESSAGE=hello" in out
    assert b"MESSAGE_ID=777515e766af45cb9b766bb2b65e26a7" in out
    assert b"NVME_NSID=7" in out
    assert b"SYSLOG_IDENTIFIER=nvme-agent" in out


def test_state_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "topology.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["topology.json"]  # no temp left
    path.write_text("{broken")
    assert read_json(path) is None
    assert read_json(tmp_path / "missing.json") is None


def test_history_rotates_and_reads_oldest_first(tmp_path: Path) -> None:
    hist = History(tmp_path / "history.jsonl", max_bytes=200, backups=2)
    for i in range(30):
        hist.append({"type": "namespace-added", "nsid": i})
    got = [r["nsid"] for r in hist.read()]
    assert got == sorted(got) and got[-1] == 29
    assert len(got) < 30  # the oldest were rotated away, bounded by backups
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["history.jsonl", "history.jsonl.1", "history.jsonl.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    (tmp_path / "history.jsonl").open("a").write("garbage\n")
    assert [r["nsid"] for r in hist.read()][-1] == 29
    assert json.loads(json.dumps(list(hist.read())))  # plain JSON


def test_history_reading_skips_bad_bytes_and_non_objects_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.jsonl"
    lines = [
        b'{"nsid": 1}',
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b"5",
        b'"text"',
        b"{",
        b'{"nsid": 2}',
    ]
    path.write_bytes(b"\n".join(lines * 50) + b"\n")
    assert [r["nsid"] for r in History(path).read()] == [1, 2] * 50
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: skipped 250 corrupt history line(s), the first at line 2"]


def test_the_history_command_survives_a_corrupt_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "history.jsonl").write_bytes(
        b'{"type": "namespace-added", "nsid": 3}\n\xff\xfe\n[1]\nnull\n{"type": "x", "nsid": 4}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "nvme_agent", "history", "--json", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["nsid"] for line in done.stdout.splitlines()] == [3, 4]
    assert "Traceback" not in done.stderr


def test_history_append_failures_are_logged_once_and_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.jsonl"
    path.mkdir()  # what a full or read-only /var does to appends: they fail
    hist = History(path)
    assert [hist.append({"nsid": i}) for i in range(100)] == [False] * 100
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Is a directory" in errors[0]
    path.rmdir()
    assert hist.append({"nsid": 100}) is True
    assert [r["nsid"] for r in hist.read()] == [100]
    recovered = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    assert recovered == [f"appending to history {path} works again after 100 failure(s)"]


def test_state_file_writes_failing_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nvme_agent.outputs.state import StateFile

    blocker = tmp_path / "run"
    blocker.write_text("a file where the directory should be")
    state = StateFile(blocker / "topology.json")
    assert [state.save({"n": i}) for i in range(20)] == [False] * 20
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    assert state.load() is None  # cannot be read either: logged, not raised


def test_a_state_file_that_is_not_json_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nvme_agent.outputs.state import StateFile

    for content in (b"{broken", b"\xff\xfe", b"[" * 100_000):
        path = tmp_path / "topology.json"
        path.write_bytes(content)
        assert StateFile(path).load() is None
        aside = sorted(tmp_path.glob("topology.json.corrupt.*"))
        assert len(aside) == 1 and aside[0].read_bytes() == content
        assert not path.exists()
        aside[0].unlink()
    assert len([r for r in caplog.records if "moved aside" in r.getMessage()]) == 3


def test_recorded_ids_are_those_of_complete_lines_in_the_newest_files(tmp_path: Path) -> None:
    hist = History(tmp_path / "history.jsonl", max_bytes=300, backups=2)
    for n in range(12):  # rotates: the first ids are in history.jsonl.1 and .2
        assert hist.append({"type": "namespace-added", "nsid": n, "rid": f"r-{n}"})
    hist.close()
    newest = {f"r-{n}" for n in range(12)} & hist.recorded_ids(f"r-{n}" for n in range(12))
    assert "r-11" in newest and "r-10" in newest
    assert hist.recorded_ids(["r-99"]) == set()
    # A run killed in the middle of a line: that record is not there; the next append
    # ends the torn line first, so its own record reads back whole.
    with open(hist.path, "ab") as fh:
        fh.write(b'{"nsid": 12, "rid": "r-12", "type": "namespace-a')
    assert hist.recorded_ids(["r-12"]) == set()
    assert hist.append({"type": "namespace-added", "nsid": 12, "rid": "r-12"})
    assert hist.recorded_ids(["r-12"]) == {"r-12"}
    assert [r["rid"] for r in hist.read()][-1] == "r-12"


def test_append_lines_is_one_write_and_nothing_for_none(tmp_path: Path) -> None:
    hist = History(tmp_path / "history.jsonl")
    assert hist.append_lines([])
    assert not hist.path.exists()
    assert hist.append_lines(['{"rid": "x-1", "type": "a"}', '{"rid": "x-2", "type": "b"}'])
    assert [r["rid"] for r in hist.read()] == ["x-1", "x-2"]
