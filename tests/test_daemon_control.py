"""The control socket of the real daemon (in process, on this machine's udev): who may do
what, and what a local peer cannot do to it (issues 11.1, 11.7).

Peers of other users are child processes with their own uid and groups: membership comes
from the kernel (SO_PEERCRED, SO_PEERGROUPS), so two existing groups stand in for
``nvme-agent`` and the policy's admin group.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.inproc import NOBODY, InProcess, as_peer, two_groups
from support.readable import readable_source

from nvme_agent.service.access import Right
from nvme_agent.service.answers import REASONS, Reason
from nvme_agent.service.requests import COMMANDS

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: peers of other users, sockets below /run"
)

READ_GROUP, ADMIN_GROUP = two_groups() if os.geteuid() == 0 else ("", "")
POLICY_WITH_ADMIN = f"version: 1\ndefaults:\n  admin_group: {ADMIN_GROUP}\nrules: []\n"

#: A harmless request per command: each one reaches its handler when the right is there.
HARMLESS: dict[str, dict[str, Any]] = {
    "status": {"cmd": "status"},
    "history": {"cmd": "history", "limit": 5},
    "watch": {"cmd": "watch"},
    "settle": {"cmd": "settle", "timeout": 5},
    "reload": {"cmd": "reload"},
    "eject": {"cmd": "eject", "nsid": 4242},  # no such namespace: not-found, after the check
    "reconcile": {"cmd": "reconcile", "dry_run": True},
}


def gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    with InProcess(monkeypatch, policy=POLICY_WITH_ADMIN, group=READ_GROUP) as d:
        yield d


def test_the_table_covers_every_command_and_acting_commands_need_admin() -> None:
    assert set(HARMLESS) == set(COMMANDS)
    admin = {n for n, c in COMMANDS.items() if c.right is Right.ADMIN}
    assert admin == {"eject", "reload", "reconcile"}


def test_a_read_group_member_may_look_but_not_act(daemon: InProcess) -> None:
    for name, payload in HARMLESS.items():
        answer = as_peer(daemon.control_socket, payload, groups=(gid(READ_GROUP),))
        if COMMANDS[name].right is Right.READ:
            assert answer["ok"] is True, (name, answer)
            continue
        assert answer["ok"] is False and answer["reason"] == "denied", (name, answer)
        assert f"{name} needs the admin right" in answer["error"]
        assert repr(ADMIN_GROUP) in answer["error"]  # who holds it
    assert daemon.daemon is not None and daemon.daemon.generation == 1  # nothing reloaded


def test_an_admin_group_member_may_do_everything(daemon: InProcess) -> None:
    groups = (gid(READ_GROUP), gid(ADMIN_GROUP))
    answers = {
        name: as_peer(daemon.control_socket, p, groups=groups) for name, p in HARMLESS.items()
    }
    assert answers.pop("eject")["reason"] == "not-found"  # past the check, into the lookup
    assert all(a["ok"] for a in answers.values()), answers
    assert daemon.daemon is not None and daemon.daemon.generation == 2


def test_root_may_do_everything(daemon: InProcess) -> None:
    answers = {name: as_peer(daemon.control_socket, p, uid=0) for name, p in HARMLESS.items()}
    assert answers.pop("eject")["reason"] == "not-found"
    assert all(a["ok"] for a in answers.values()), answers


def test_a_peer_without_rights_is_refused_by_the_socket_and_by_the_daemon(
    daemon: InProcess,
) -> None:
    for payload in HARMLESS.values():
        assert as_peer(daemon.control_socket, payload) == {"connect": "Permission denied"}
    os.chmod(daemon.control_socket, 0o666)  # a misconfigured socket: the daemon still checks
    for name, payload in HARMLESS.items():
        answer = as_peer(daemon.control_socket, payload)
        assert answer["reason"] == "denied", (name, answer)
        assert "needs the read right" in answer["error"]


#: The CLI's own client (nvme_agent.service.control.request), run as the peer.
CLI_CLIENT = f"""\
import json, sys
sys.path.insert(0, {readable_source()!r})
from nvme_agent.service.control import request
print(json.dumps(request(sys.argv[1], json.loads(sys.argv[2]))))
"""


def test_the_cli_client_shows_the_refusal_of_a_peer_refused_unread(daemon: InProcess) -> None:
    os.chmod(daemon.control_socket, 0o666)
    for _ in range(5):  # the refusal races the request's write: either way, the answer
        answer = as_peer(daemon.control_socket, {"cmd": "status"}, script=CLI_CLIENT)
        assert answer["reason"] == "denied", answer


def test_the_admin_group_is_the_current_policys(monkeypatch: pytest.MonkeyPatch) -> None:
    with InProcess(monkeypatch, group=READ_GROUP) as d:  # no admin_group at first
        groups = (gid(READ_GROUP), gid(ADMIN_GROUP))
        refused = as_peer(d.control_socket, {"cmd": "reload"}, groups=groups)
        assert refused["reason"] == "denied"
        assert "root only (the policy names no defaults.admin_group)" in refused["error"]
        d.policy.write_text(POLICY_WITH_ADMIN)
        assert d.request({"cmd": "reload"})["ok"] is True  # root
        assert as_peer(d.control_socket, {"cmd": "reload"}, groups=groups)["ok"] is True


def test_an_unknown_command_is_refused_before_dispatch(daemon: InProcess) -> None:
    answer = as_peer(daemon.control_socket, {"cmd": "eject2"}, groups=(gid(READ_GROUP),))
    assert answer["reason"] == "unknown-command" and "eject2" in answer["error"]
    assert daemon.request({"cmd": "__init__"})["reason"] == "unknown-command"


# ---------------------------------------------------------------------- exhaustion (11.7)
def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _answer(s: socket.socket) -> dict[str, Any]:
    s.settimeout(30)
    with s.makefile() as fh:
        line = fh.readline()
    result: dict[str, Any] = json.loads(line)
    return result


def test_idle_connections_time_out_and_others_are_answered_meanwhile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with InProcess(monkeypatch) as d:
        assert d.daemon is not None
        d.daemon.control.read_timeout = 0.5
        idle = [_connect(d.control_socket) for _ in range(40)]
        partial = _connect(d.control_socket)
        partial.sendall(b'{"cmd": "sta')  # a slow peer: never finishes its line
        try:
            assert d.request({"cmd": "status"})["ok"] is True
            answers = [_answer(s) for s in [*idle, partial]]
            assert {a["reason"] for a in answers} == {"timeout"}
            assert all(s.recv(1) == b"" for s in idle)  # closed by the daemon: fds released
        finally:
            for s in [*idle, partial]:
                s.close()
        assert d.request({"cmd": "status"})["ok"] is True
        timeouts = [r for r in caplog.records if "no complete request line" in r.getMessage()]
        assert len(timeouts) == 1  # the first of 41, the rest counted
    summary = [r.getMessage() for r in caplog.records if "more refusal(s)" in r.getMessage()]
    assert any(
        m.startswith("40 more refusal(s) of this kind: control request timed out") for m in summary
    )


#: Holds ``held`` connections open, then makes ``more`` requests and prints their answers.
HOLDER = """\
import json, socket, sys
path, held, more = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keep = []
for _ in range(held):
    s = socket.socket(socket.AF_UNIX); s.connect(path); keep.append(s)
answers = []
for _ in range(more):
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    try:
        s.sendall(b'{"cmd": "status"}\\n')
    except BrokenPipeError:
        pass  # refused before the request was read
    answers.append(json.loads(s.makefile().readline())); s.close()
print(json.dumps(answers))
"""


def test_connections_per_user_are_capped_and_the_flood_is_logged_once(
    daemon: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    assert daemon.daemon is not None
    daemon.daemon.control.max_per_uid = 3
    daemon.daemon.control.read_timeout = 60.0
    script = HOLDER.replace("sys.argv[2]", "'3'").replace("sys.argv[3]", "'25'")
    answers: Any = as_peer(daemon.control_socket, "", groups=(gid(READ_GROUP),), script=script)
    assert [a["reason"] for a in answers] == ["busy"] * 25
    assert "uid 65534 already has 3 control connections open" in answers[0]["error"]
    assert daemon.request({"cmd": "status"})["ok"] is True  # root is not capped, nor blocked
    logged = [r for r in caplog.records if "per-user limit" in r.getMessage()]
    assert len(logged) == 1 and f"uid {NOBODY}" in logged[0].getMessage()
    after = as_peer(daemon.control_socket, {"cmd": "status"}, groups=(gid(READ_GROUP),))
    assert after["ok"] is True  # the held connections closed with the child


SUBSCRIBERS = """\
import json, socket, sys
path, count = sys.argv[1], int(sys.argv[2])
keep = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX); s.connect(path); keep.append(s)
s = socket.socket(socket.AF_UNIX); s.connect(path); s.settimeout(30)
print(s.makefile().readline().strip() or "{}")
"""


@pytest.mark.parametrize(("per_uid", "total", "held"), [(2, 64, 2), (16, 3, 3)])
def test_event_subscribers_are_capped(
    daemon: InProcess, caplog: pytest.LogCaptureFixture, per_uid: int, total: int, held: int
) -> None:
    assert daemon.daemon is not None
    daemon.daemon.events.max_per_uid = per_uid
    daemon.daemon.events.max_subscribers = total
    script = SUBSCRIBERS.replace("int(sys.argv[2])", str(held))
    refused = as_peer(daemon.daemon.events_socket, "", groups=(gid(READ_GROUP),), script=script)
    assert refused["type"] == "refused" and refused["reason"] == "busy"
    assert str(per_uid if per_uid == held else total) in refused["error"]
    assert [r for r in caplog.records if "event subscriber" in r.getMessage()]


# ---------------------------------------------------------------------- any input (issue 11)
def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)


REQUEST_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _nested,
    max_leaves=8,
)
REQUESTS = st.builds(
    lambda cmd, fields: json.dumps({**fields, "cmd": cmd}).encode() + b"\n",
    st.sampled_from([*COMMANDS, "nope"]),
    st.dictionaries(
        st.sampled_from(["limit", "timeout", "nsid", "device", "ctrl", "cmd2"]),
        REQUEST_VALUES,
        max_size=3,
    ),
)
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"") + b"\n"),
    REQUESTS,
    st.integers(1, 4).map(lambda n: b"x" * (n * 70_000)),  # oversized
)


class Kept(logging.Handler):
    """Every record of the agent's loggers, for the whole module."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def kept() -> Iterator[Kept]:
    handler = Kept()
    logger = logging.getLogger("nvme_agent")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def fuzzed(kept: Kept) -> Iterator[InProcess]:
    with pytest.MonkeyPatch.context() as mp, InProcess(mp) as d:
        yield d


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=PAYLOADS, finish=st.sampled_from(["close", "hold"]))
def test_random_partial_oversized_and_slow_input_gets_an_answer_and_harms_nothing(
    fuzzed: InProcess, payload: bytes, finish: str
) -> None:
    s = _connect(fuzzed.control_socket)
    try:
        try:
            s.sendall(payload)
            if finish == "close":
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon already answered an oversized request and hung up
        assert fuzzed.request({"cmd": "status"})["ok"] is True  # others are served meanwhile
        if finish == "hold" and not payload.endswith(b"\n") and len(payload) <= 65536:
            return  # a slow peer: it gets its timeout later; the daemon did not wait for it
        try:
            answer = _answer(s)
        except (ConnectionResetError, json.JSONDecodeError):
            return  # reset after an oversized request: the answer was lost with the data
    finally:
        s.close()
    assert isinstance(answer.get("ok"), bool)
    if not answer["ok"]:
        assert Reason(answer["reason"]) in REASONS and answer["reason"] != "internal"
        assert isinstance(answer["error"], str) and answer["error"]


def test_the_fuzzed_daemon_logged_no_traceback(fuzzed: InProcess, kept: Kept) -> None:
    for payload in (b"\xff\xfe\n", b"[" * 100_000, b'{"cmd": "settle", "timeout": NaN}\n'):
        s = _connect(fuzzed.control_socket)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            answer = _answer(s)
        finally:
            s.close()
        assert answer["reason"] == "bad-request"
    assert fuzzed.request({"cmd": "status"})["ok"] is True
    assert kept.records  # the handler saw the daemon's records (its start, at least)
    assert not [r for r in kept.records if r.exc_info or r.levelno >= logging.ERROR]
