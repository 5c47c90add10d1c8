"""Replay: every real-guest capture yields the changes it shows; captures of fabrics
controllers, two controllers and PCIe hotplug replay; any text replays without a traceback,
and what is not understood is named with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.captures import monitor_text

from nvme_agent.cli.main import main
from nvme_agent.harness.layout import ControllerConfig, Event, Layout, NamespaceConfig
from nvme_agent.harness.replay import Replay, implied_present, read_capture, udev_events

CAPTURES = Path(__file__).parent / "fixtures" / "captures"
A, R, PA, PR = "namespace-added", "namespace-removed", "partition-added", "partition-removed"
CA, CR = "controller-added", "controller-removed"

#: step prefix -> (type, nsid) the capture shows, in order (partitions of one disk by set)
EXPECTED: dict[str, list[tuple[str, int]]] = {
    "01": [(A, 2)],
    "02": [(A, 4), (PA, 4), (PA, 4)],
    "03": [(A, 3)],
    "04": [],
    "05": [],
    "06": [(PR, 4), (PR, 4), (R, 4)],
    "07": [],
    "08": [(R, 3)],
    "09": [(R, 2)],
    "10": [(R, 1)],
    "11": [(A, 1)],
    "12": [(A, 2), (R, 2)],
}
STEPS = sorted(
    p
    for folder in ("multipath", "no-multipath")
    for p in (CAPTURES / folder).glob("[0-9][0-9]-*.udev-monitor.txt")
)
EVERY_FILE = sorted(CAPTURES.rglob("*.txt"))


def changes(text: str) -> list[tuple[str, int | None]]:
    result = Replay(text, lambda _rec, _text: None).run()
    assert result.error is None, result.error
    return [(c["type"], c["nsid"]) for c in result.changes]


@pytest.mark.umockdev
@pytest.mark.parametrize("path", STEPS, ids=[f"{p.parent.name}/{p.name[:2]}" for p in STEPS])
def test_replay_matches_capture(path: Path, bed_support: None) -> None:
    text = path.read_text()
    result = Replay(text, lambda _rec, _text: None).run()
    assert result.error is None
    got = [(c["type"], c["nsid"]) for c in result.changes]
    assert got == EXPECTED[path.name[:2]]
    # removed devices the capture never added were present at coldplug
    present = implied_present(udev_events(text))
    cold_ns = [c for c in result.coldplug if c["type"] == A]
    assert len(cold_ns) == len(
        {r.properties.get("ID_NSID") for r in present if r.properties.get("DEVTYPE") == "disk"}
    )
    # a stored capture is understood line by line; only guesses are noted
    assert not [n for n in result.notes if "not understood" in n.text], result.notes


@pytest.mark.umockdev
@pytest.mark.parametrize("path", EVERY_FILE, ids=[str(p.relative_to(CAPTURES)) for p in EVERY_FILE])
def test_cli_replays_every_stored_capture(
    path: Path, bed_support: None, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(path), "--json"]) == 0
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_udev_events_ignore_kernel_events() -> None:
    text = (CAPTURES / "multipath" / "02-attach-ns4-gpt-2-partitions.udev-monitor.txt").read_text()
    events = udev_events(text)
    assert len(events) == 6  # bdi, ng, disk, change, 2 partitions (KERNEL duplicates dropped)
    assert [e.action for e in events].count("change") == 1


# --------------------------------------------------------------------------- shapes
BOOT = ControllerConfig("nvme0", serial="BOOT", subsysnqn="nqn.2019-08.org.qemu:boot")
TCP = ControllerConfig(
    "nvme1", serial="3f9a1c07", subsysnqn="nqn.2024-01.io.example:vol1", transport="tcp"
)


def _capture(events: list[Event], command: str) -> str:
    # the fabrics ctl device exists from module load: a connect does not show it
    return monitor_text([e for e in events if e.device.subsystem != "nvme-fabrics"], command)


def tcp_captures() -> dict[str, str]:
    """nvme connect, target namespace enable/disable, nvme disconnect (native multipath)."""
    layout = Layout(multipath=True)
    layout.add_controller(BOOT)
    ns1 = NamespaceConfig("nvme1", 1, fs="ext4", label="tcpdata")
    connect = layout.add_controller(TCP) + layout.connect("nvme1") + layout.attach(ns1)
    enable = layout.attach(NamespaceConfig("nvme1", 2, fs="xfs", label="more"))
    disable = layout.detach("nvme1", 2)
    disconnect = layout.remove_controller("nvme1")
    return {
        "connect": _capture(connect, "nvme connect -t tcp -a 127.0.0.1 -s 4420 -n vol1"),
        "enable": _capture(enable, "echo 1 > .../namespaces/2/enable"),
        "disable": _capture(disable, "echo 0 > .../namespaces/2/enable"),
        "disconnect": _capture(disconnect, "nvme disconnect -d nvme1"),
    }


@pytest.mark.umockdev
def test_replay_of_an_nvme_tcp_session(bed_support: None) -> None:
    # Before: "bed apply failed: ValueError: device .../nvme-subsys1 already exists".
    caps = tcp_captures()
    assert "/devices/virtual/nvme-fabrics/ctl/nvme1 (nvme)" in caps["connect"]
    assert "nvme-subsys1 (nvme-subsystem)" in caps["connect"]  # the capture adds it itself
    assert changes(caps["connect"]) == [(CA, None), (A, 1)]
    assert changes(caps["disconnect"]) == [(R, 1), (CR, None)]
    whole = "".join(caps.values())
    assert changes(whole) == [(CA, None), (A, 1), (A, 2), (R, 2), (R, 1), (CR, None)]


@pytest.mark.umockdev
def test_replayed_fabrics_controller_keeps_transport_and_address(bed_support: None) -> None:
    records: list[dict[str, object]] = []
    result = Replay(tcp_captures()["connect"], lambda rec, _t: records.append(rec)).run()
    assert result.error is None
    (added,) = [r for r in records if r["type"] == CA]
    ctrl = added["controller"]
    assert isinstance(ctrl, dict)
    assert (ctrl["transport"], ctrl["address"]) == ("tcp", "traddr=127.0.0.1,trsvcid=4420")
    # what replay had to guess is said, with a line number
    notes = [str(n) for n in result.notes]
    assert any("NQN is not in the capture" in n and n.startswith("line ") for n in notes), notes


@pytest.mark.umockdev
def test_replay_of_pcie_hotplug_and_two_controllers(bed_support: None) -> None:
    layout = Layout(multipath=True)
    hot = ControllerConfig(
        "nvme0", serial="SNHOT", root_port="0000:00:1c.0", pci_address="0000:01:00.0"
    )
    plug = layout.add_controller(hot) + layout.attach(NamespaceConfig("nvme0", 1, fs="ext4"))
    unplug = layout.remove_controller("nvme0")
    text = monitor_text(plug + unplug, "device_add nvme,bus=rp1 ...; device_del hot")
    assert changes(text) == [(CA, None), (A, 1), (R, 1), (CR, None)]

    # multipath=N, two controllers of one subsystem: one namespace, two disks; a path goes
    nomp = Layout(multipath=False)
    shared = "nqn.2019-08.org.qemu:shared"
    nomp.add_controller(ControllerConfig("nvme0", "S", subsysnqn=shared))
    nomp.add_controller(ControllerConfig("nvme1", "S", subsysnqn=shared))
    events = nomp.attach(NamespaceConfig("nvme0", 1, fs="ext4")) + nomp.add_path("nvme1", 1)
    events += nomp.remove_path("nvme1", 1)
    replay = Replay(monitor_text(events, "attach-ns -c 0,1; detach-ns -c 1"), lambda *_: None)
    assert replay.run().error is None


# --------------------------------------------------------------------------- any text
GOOD = (
    CAPTURES / "no-multipath" / "12-back-to-back-attach-detach-ns2.udev-monitor.txt"
).read_text()
#: Lines replay cannot understand anywhere: no '=', not a comment, an event or the preamble.
garbage = st.text(
    alphabet=st.characters(
        exclude_categories=["Cs"],
        exclude_characters="=\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    min_size=1,
    max_size=40,
).filter(
    lambda s: (
        s.strip() != ""
        and not s.startswith(("#", "KERNEL", "UDEV"))
        and s.strip() != "monitor will print the received events for:"
    )
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=2000))
def test_any_text_reads_without_a_traceback(text: str) -> None:
    events, notes = read_capture(text)
    lines = len(text.splitlines())
    assert all(1 <= n.line <= max(lines, 1) for n in notes)
    assert all(1 <= e.line <= lines for e in events)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 10_000), garbage), min_size=1, max_size=8))
def test_every_line_not_understood_is_named(inserts: list[tuple[int, str]]) -> None:
    lines = GOOD.splitlines()
    for pos, junk in inserts:
        lines.insert(pos % (len(lines) + 1), junk)
    text = "\n".join(lines)
    _events, notes = read_capture(text)
    noted = {n.line for n in notes}
    inserted = {j for _, j in inserts}
    junk_lines = {i for i, line in enumerate(text.splitlines(), 1) if line in inserted}
    assert junk_lines <= noted, (junk_lines - noted, notes)


HOSTILE = [
    "DEVPATH=/devices/../../../etc/nvme-agent-escape",
    "DEVPATH=/../../tmp/x",
    "DEVNAME=/dev/../../etc/passwd",
    "DEVNAME=../../etc/shadow",
    "SUBSYSTEM=../../../../etc",
    "MAJOR=259999999999999",
    "MINOR=-1",
    "SEQNUM=not-a-number",
    "ACTION=explode",
    "ID_NSID=99999999999999999999999",
    "ID_FS_LABEL=../../../etc",
    "UDEV  [1.2.3] add      /devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n9 (block)",
    "UDEV  [5.0] add      /devices/../../etc/nvme-agent-escape (block)",
    "UDEV  [5.0] remove   /devices/virtual/nvme-subsystem/nvme-subsys0 (nvme-subsystem)",
    "UDEV  [5.0] add      /devices/virtual/nvme-fabrics/ctl/nvme7 (nvme)",
]


def _mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines() or [""]
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["drop", "dup", "swap", "junk", "hostile", "chars"]))
        if kind == "drop" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "junk":
            lines.insert(i, " ".join(data.draw(st.text(max_size=60)).splitlines()))
        elif kind == "hostile":
            lines.insert(i, data.draw(st.sampled_from(HOSTILE)))
        elif kind == "chars":
            line, k = lines[i], data.draw(st.integers(0, 80))
            lines[i] = line[:k] + " ".join(data.draw(st.text(max_size=3)).splitlines()) + line[k:]
    return "\n".join(lines) + "\n"


@pytest.mark.umockdev
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_garbled_captures_replay_without_a_traceback(
    bed_support: None, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from([GOOD, *tcp_captures().values()]))
    text = _mutate(base, data)
    result = Replay(text, lambda _rec, _text: None, timeout=15).run()
    assert result.error is None or isinstance(result.error, str)
    assert "Traceback" not in (result.error or "")
    for note in result.notes:
        assert str(note).startswith(f"line {note.line}: ")
    # nothing a capture says is written outside the bed
    assert not Path("/etc/nvme-agent-escape").exists()


def test_timeline_lines_escape_device_data() -> None:
    from nvme_agent.harness.timeline import describe_record

    rec = {
        "type": "controller-added",
        "nsid": None,
        "controller": {"name": "nvme1", "serial": "A\nFORGED", "subsysnqn": "nqn\x1b[2J"},
    }
    line = describe_record(rec)
    assert "\n" not in line and "\x1b" not in line and "serial=A\\x0aFORGED" in line
    plan = {
        "type": "plan",
        "rule": "r",
        "actions": [{"kind": "mount", "source": "/dev/x", "target": "/m/a\rb"}],
    }
    assert "\r" not in describe_record(plan)
