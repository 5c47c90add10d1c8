"""The daemon's own log: native journal entries with fields under systemd, one line on stderr.

Issue 11.6: Python logging went to stderr, which systemd connects to a journal stream: a
newline in a device string split an entry in two and a leading ``<0>`` chose the priority of
the second.  Under systemd (``JOURNAL_STREAM`` naming stderr) or with ``--log-target journal``
the daemon now logs through ``systemd.journal.JournalHandler`` with fields.  The wire test
binds a private journald socket in a private mount namespace (the host journal is untouched)
and reads what the real systemd-python sends.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.journald import parse_native

from nvme_agent.actions import messages
from nvme_agent.cli import main as cli
from nvme_agent.outputs.logs import (
    FieldJournalHandler,
    OneLineFormatter,
    stderr_is_journal,
    wants_journal,
)

HOSTILE_DEV = "/dev/nvme0n1\n<0>sshd[1]: Accepted password for root"

CHILD = textwrap.dedent(
    """
    import logging, os, socket, struct, sys
    os.makedirs("/run/systemd/journal", exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/run/systemd/journal/socket")
    from nvme_agent.actions.ledger import MountLedger
    from nvme_agent.actions.runner import ActionRunner
    from nvme_agent.cli.main import setup_logging
    from nvme_agent.policy.plan import MountSpec, Plan
    from nvme_agent.topology.changes import Change, ChangeType
    from nvme_agent.topology.model import Identity, Namespace

    setup_logging(1, sys.argv[1])
    dev = sys.argv[2]
    ns = Namespace(
        nsid=7, name="nvme0n7", devpath="/d", devnode=dev, subsysnqn="nqn.x",
        identity=Identity.derive(
            uuid=None, nguid=None, eui64=None, wwid=None, subsysnqn="nqn.x", nsid=7
        ),
    )
    spec = MountSpec(source=dev, target="/m/x", mount_root="/m")
    change = Change(ChangeType.NAMESPACE_ADDED, namespace=ns)
    runner = ActionRunner(dry_run=True, ledger=MountLedger(None), on_result=lambda r: None)
    runner.submit(Plan(change=change, key="nqn.x#7", rule="r", actions=(spec,)))
    assert runner.wait_idle(20)
    runner.close()
    logging.getLogger("nvme_agent.test").warning("two\\nlines")
    # Each record was one sendmsg to our socket, queued before the call returned: drain it.
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            break
        sys.stdout.buffer.write(struct.pack("<Q", len(data)) + data)
    """
)


def run_child(
    tmp_path: Path, target: str, journal_stream: str | None
) -> tuple[list[dict[str, bytes]], str]:
    """Run CHILD with stderr on a pipe; JOURNAL_STREAM names that pipe when asked."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    r, w = os.pipe()
    st = os.fstat(w)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream == "this-stderr":
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    argv = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs tmpfs /run/systemd && exec "$@"',
        "sh",
        sys.executable,
        str(script),
        target,
        HOSTILE_DEV,
    ]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=w, env=env)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as err_pipe:
        err = err_pipe.read().decode("utf-8", "replace")
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        if "unshare" in err or "mount" in err.split("\n", 1)[0]:
            pytest.skip(f"cannot make a private mount namespace here: {err.strip()}")
        raise AssertionError(f"child failed ({proc.returncode}): {err}")
    entries: list[dict[str, bytes]] = []
    i = 0
    while i < len(out):
        (size,) = struct.unpack("<Q", out[i : i + 8])
        entries.append(parse_native(out[i + 8 : i + 8 + size]))
        i += 8 + size
    return entries, err


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount ns")


@needs_root
@pytest.mark.parametrize("how", ["under-systemd", "asked"])
def test_daemon_logs_natively_with_fields_under_systemd(tmp_path: Path, how: str) -> None:
    if how == "under-systemd":
        entries, err = run_child(tmp_path, "auto", "this-stderr")
    else:
        entries, err = run_child(tmp_path, "journal", None)
    assert err == ""  # nothing on the stream: it would be split on newlines
    action = next(e for e in entries if e.get("NVME_ACTION") == b"mount")
    assert action["MESSAGE_ID"] == messages.DRY_RUN.encode()
    assert action["NVME_NSID"] == b"7"
    assert action["DEVNAME"] == HOSTILE_DEV.encode()  # a field is data: kept exactly
    assert action["SYSLOG_IDENTIFIER"] == b"nvme-agent"
    assert action["PRIORITY"] == b"6"
    assert action["LOGGER"] == b"nvme_agent.actions"
    assert b"\n" not in action["MESSAGE"]
    assert b"/dev/nvme0n1\\x0a<0>sshd[1]" in action["MESSAGE"]
    # Only journal fields: not the record's attributes (msg, args with the raw values, ...).
    assert all(k == k.upper() for k in action), sorted(action)
    assert "CODE_ARGS" not in action
    plain = next(e for e in entries if e.get("LOGGER") == b"nvme_agent.test")
    assert plain["MESSAGE"] == b"two\nlines" and plain["PRIORITY"] == b"4"


@needs_root
@pytest.mark.parametrize("stream", [None, "0:0"])
def test_elsewhere_every_record_is_one_line_on_stderr(tmp_path: Path, stream: str | None) -> None:
    entries, err = run_child(tmp_path, "auto", stream)
    assert entries == []
    lines = err.splitlines()
    action = [line for line in lines if "mount dry-run" in line]
    assert len(action) == 1 and "/dev/nvme0n1\\x0a\\x3c0>sshd[1]" not in action[0]
    assert "/dev/nvme0n1\\x0a<0>sshd[1]" in action[0]
    assert not any(line.startswith("<") for line in lines)
    assert "    lines" in lines  # a continuation, indented: never a line of its own


def test_journal_stream_must_name_this_very_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as fh:
        st = os.fstat(fh.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, fh.fileno())
        assert wants_journal("auto", env) is stderr_is_journal(env, 2)
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
    assert not stderr_is_journal({})
    assert wants_journal("journal", {}) and not wants_journal("stderr", env)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_setup_logging_installs_exactly_one_handler(root_logger: logging.Logger) -> None:
    cli.setup_logging(0, "journal")
    assert len(root_logger.handlers) == 1
    assert isinstance(root_logger.handlers[0], FieldJournalHandler)
    cli.setup_logging(2, "stderr")
    (handler,) = root_logger.handlers
    assert isinstance(handler.formatter, OneLineFormatter)
    assert root_logger.level == logging.DEBUG


def test_field_handler_sends_only_fields(root_logger: logging.Logger) -> None:
    sent: list[tuple[str, dict[str, object]]] = []
    handler = FieldJournalHandler(sender_function=lambda m, **kw: sent.append((m, kw)))
    log = logging.getLogger("nvme_agent.fieldtest")
    log.addHandler(handler)
    try:
        log.error("x %s", "a\nb", extra={"NVME_NSID": "3", "lower": "no", "DEVNAME": ""})
    finally:
        log.removeHandler(handler)
    ((message, fields),) = sent
    assert message == "x a\nb"
    assert fields["NVME_NSID"] == "3" and fields["PRIORITY"] == "3"
    assert "lower" not in fields and "DEVNAME" not in fields and "msg" not in fields
