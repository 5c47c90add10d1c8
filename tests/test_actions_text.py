"""Device strings never forge a log line: escaping, summaries, action messages, hook values.

Issue 11.6: a serial with a newline, a label starting ``<0>`` or a terminal escape must not
reach a human message raw (journald splits a stream on newlines and reads a leading ``<N>`` as
the priority).  Property tests run arbitrary text, with the dangerous characters weighted in,
through every place a device string enters a message.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.actions import WAIT, Results

from nvme_agent.actions.hooks import clean_values, hook_env
from nvme_agent.actions.ledger import MountLedger
from nvme_agent.actions.runner import ActionRunner
from nvme_agent.outputs.journal import TopologyLog
from nvme_agent.outputs.logs import OneLineFormatter
from nvme_agent.policy.plan import ExecSpec, MountSpec, Plan, SignalSpec, UnmountSpec
from nvme_agent.topology import text
from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Controller, Filesystem, Identity, Namespace, Partition
from nvme_agent.topology.text import escape, is_unsafe, one_line, strip_unsafe

#: What a hostile disk or user would try first, mixed into arbitrary text.
NASTY = ["\n", "\r", "\x00", "\x1b[2J", "<0>", "<3>", "\\", "\\x0a", "\u2028", "\u202e", "\x85"]
hostile = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(NASTY)), max_size=8).map("".join)

_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|\\)")


def unescape(text: str) -> str:
    """The inverse of :func:`escape`, written independently to prove it is unambiguous."""
    return _ESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), text)


def safe_line(text: str) -> bool:
    """One line, nothing a terminal or journald would act on."""
    return not any(is_unsafe(c) for c in text) and not re.match(r"<\d", text)


@given(hostile)
def test_escape_is_one_safe_line_and_unambiguous(value: str) -> None:
    out = escape(value)
    assert safe_line(out) and "\n" not in out
    assert not out.startswith("<")
    assert unescape(out) == value
    assert one_line(out) == out  # a composed message of escaped parts is left alone


@given(st.one_of(hostile, st.text()), st.booleans())
def test_printable_text_skips_the_walk_to_the_same_answer(value: str, backslash: bool) -> None:
    # The fast path trusts that str.isprintable() rejects every unsafe category: checked
    # against the character-by-character walk over arbitrary code points.
    walked = text._escape_each(value, backslash=backslash)
    walked = "\\x3c" + walked[1:] if walked.startswith("<") else walked
    assert text._escape_chars(value, backslash=backslash) == walked


def test_every_unsafe_category_is_one_isprintable_rejects() -> None:
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if is_unsafe(ch):
            assert not ch.isprintable(), f"U+{cp:04X}"


@given(hostile)
def test_one_line_and_strip_unsafe(value: str) -> None:
    once = one_line(value)
    assert safe_line(once) and one_line(once) == once
    stripped = strip_unsafe(value)
    assert not any(is_unsafe(c) for c in stripped)
    assert all(unicodedata.category(c) not in {"Cc", "Zl", "Zp"} for c in stripped)


def test_escape_examples() -> None:
    assert escape("data") == "data"
    assert escape("a\nb") == "a\\x0ab"
    assert escape("<0>fake") == "\\x3c0>fake"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("\u202eevil") == "\\u202eevil"
    assert escape(None) == "-"


def _namespace(
    serial: str, nqn: str, label: str, name: str, part: str, reason_fs: str
) -> tuple[Namespace, Partition]:
    ident = Identity.derive(uuid=None, nguid=None, eui64=None, wwid=None, subsysnqn=nqn, nsid=3)
    fs = Filesystem(type=reason_fs, usage="filesystem", label=label, uuid=serial)
    ns = Namespace(
        nsid=3,
        name=name,
        devpath="/devices/x",
        devnode=f"/dev/{name}",
        identity=ident,
        subsysnqn=nqn,
        controllers=(name,),
        serial=serial,
        fs=fs,
    )
    return ns, Partition(name=part, devpath="/devices/x/p", devnode=None, number=1, fs=fs)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, hostile, hostile, hostile, hostile, hostile)
def test_no_change_summary_or_topology_line_carries_a_raw_device_string(
    serial: str, nqn: str, label: str, name: str, part: str, other: str
) -> None:
    ns, partition = _namespace(serial, nqn, label, name, part, other)
    ctrl = Controller(name=name, devpath="/devices/c", serial=serial, subsysnqn=nqn)
    changes = [
        Change(ChangeType.NAMESPACE_ADDED, namespace=ns, reason=other),
        Change(ChangeType.PARTITION_ADDED, namespace=ns, partition=partition),
        Change(ChangeType.CONTROLLER_ADDED, controller=ctrl),
    ]
    stream = io.StringIO()
    tlog = TopologyLog("stderr", stream)
    for change in changes:
        assert safe_line(change.summary()), change.summary()
        tlog.change(change)
    tlog.event(f"nsid 3 ({ns.devnode}) ejected: safe to remove", "0" * 32)
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == len(changes) + 2
    assert all(safe_line(line) and line.startswith("nvme-agent[") for line in lines[:-1])


def test_summary_shows_a_hostile_label_escaped() -> None:
    ns, _ = _namespace("S\n<0>x", "nqn.x", "../../etc\n<0>root", "nvme0n3", "p", "ext4")
    text = Change(ChangeType.NAMESPACE_ADDED, namespace=ns).summary()
    assert "label='../../etc\\x0a<0>root'" in text and "\n" not in text


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, hostile, hostile)
def test_no_action_result_or_runner_log_line_carries_a_raw_device_string(
    source: str, label: str, nqn: str
) -> None:
    kept: list[logging.LogRecord] = []
    handler = _Keep(kept)
    logger = logging.getLogger("nvme_agent.actions")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    results = Results()
    runner = ActionRunner(dry_run=True, ledger=MountLedger(None), on_result=results)
    try:
        ns, _ = _namespace(label, nqn, label, "nvme0n3", "p", "ext4")
        actions = (
            MountSpec(source=f"/dev/{source}", target=f"/m/{label}", mount_root="/m"),
            ExecSpec(argv=("/bin/echo", label, source)),
            SignalSpec(signal="HUP", process=label),
            UnmountSpec(source=source, target=f"/m/{label}", mount_root="/m"),
        )
        runner.submit(
            Plan(
                change=Change(ChangeType.NAMESPACE_ADDED, namespace=ns),
                key=f"{nqn}#3",
                rule=label,
                actions=actions,
            )
        )
        got = results.wait_for(len(actions))
        assert runner.wait_idle(WAIT)
    finally:
        runner.close(timeout=WAIT)
        logger.removeHandler(handler)
        logger.setLevel(old)
    for r in got:
        assert safe_line(r.message), r.message
    messages = [r.getMessage() for r in kept]
    assert len(messages) >= len(actions)
    for m in messages:
        assert safe_line(m), m


@given(hostile)
def test_stderr_records_are_one_line_each_with_indented_continuations(value: str) -> None:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "%s", (value,), None)
    text = OneLineFormatter("%(levelname)s %(message)s").format(record)
    first, *rest = text.split("\n")
    assert first.startswith("ERROR ") and safe_line(first)
    assert all(line.startswith("    ") and safe_line(line.lstrip()) for line in rest)


@given(st.lists(st.tuples(st.sampled_from(["ID_FS_LABEL", "NVME_SERIAL", "X"]), hostile)))
def test_hook_values_lose_control_characters_and_keep_the_raw_beside(
    pairs: list[tuple[str, str]],
) -> None:
    env = clean_values(pairs)
    last = dict(pairs)
    for key, value in last.items():
        assert env[key] == strip_unsafe(value)
        assert not any(is_unsafe(c) for c in env[key])
        if strip_unsafe(value) != value:
            assert env[f"{key}_RAW"] == value.replace("\0", "")
    assert all("\0" not in v for v in env.values())


def test_hook_environment_of_a_hostile_label() -> None:
    env = hook_env((("ID_FS_LABEL", "../../etc\n<0>x\x1b[2J"), ("NVME_NSID", "1")), (), None)
    assert env["ID_FS_LABEL"] == "../../etc<0>x[2J"
    assert env["ID_FS_LABEL_RAW"] == "../../etc\n<0>x\x1b[2J"
    assert env["NVME_NSID"] == "1" and "NVME_NSID_RAW" not in env
