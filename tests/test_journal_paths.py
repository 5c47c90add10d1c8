"""Path changes in the journal (issue 12): a lost path is a warning (redundancy lost), a new
one info, each with the path's fields, documented in the MESSAGE_ID table."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from support.policy import namespace, path, path_change

from nvme_agent.outputs.journal import (
    CHANGE_MESSAGE_IDS,
    PRIORITY_INFO,
    PRIORITY_WARNING,
    TopologyLog,
    change_fields,
)
from nvme_agent.outputs.message_ids import by_id
from nvme_agent.topology.changes import ChangeType

PATH_FIELDS = {
    "NVME_PATH_CTRL",
    "NVME_PATH_DEVICE",
    "NVME_TRANSPORT",
    "NVME_ADDRESS",
    "NVME_PATH_STATE",
    "NVME_PATHS_LIVE",
    "PREVIOUS_DEVNAME",
}


def sent(change: Any) -> dict[str, Any]:
    """What TopologyLog hands to systemd's journal.send for ``change``."""
    calls: list[dict[str, Any]] = []
    tlog = TopologyLog("stderr", io.StringIO())
    tlog._send = lambda message, **fields: calls.append({"MESSAGE": message, **fields})
    tlog.watch.available = lambda: True  # type: ignore[method-assign]  # journald's socket
    tlog.change(change)
    (call,) = calls
    return call


def lost_device_change() -> Any:
    """Without native multipath: nvme0n1 (the device) goes, nvme1n1 becomes the device."""
    via0 = path("nvme0", transport="pcie", address="0000:00:04.0", device="nvme0n1")
    via1 = path("nvme1", transport="pcie", address="0000:00:05.0", device="nvme1n1")
    via0 = dataclasses.replace(via0, devnode="/dev/nvme0n1")
    before = namespace(1, paths=(via0, via1))
    after = dataclasses.replace(namespace(1, name="nvme1n1", paths=(via1,)))
    return path_change(ChangeType.PATH_LOST, after, via0, before)


def test_a_lost_path_is_a_warning_with_the_paths_fields() -> None:
    call = sent(lost_device_change())
    assert call["MESSAGE_ID"] == CHANGE_MESSAGE_IDS[ChangeType.PATH_LOST]
    assert call["PRIORITY"] == str(PRIORITY_WARNING)
    assert call["NVME_PATH_CTRL"] == "nvme0" and call["NVME_PATH_DEVICE"] == "nvme0n1"
    assert (call["NVME_TRANSPORT"], call["NVME_ADDRESS"]) == ("pcie", "0000:00:04.0")
    assert call["NVME_PATH_STATE"] == "live" and call["NVME_PATHS_LIVE"] == "1"
    assert (call["DEVNAME"], call["PREVIOUS_DEVNAME"]) == ("/dev/nvme1n1", "/dev/nvme0n1")
    assert call["NVME_NSID"] == "1" and call["NVME_CHANGE"] == "path-lost"


def test_a_new_path_is_info() -> None:
    ns = namespace(1, paths=(path("nvme0"), path("nvme1")))
    call = sent(path_change(ChangeType.PATH_ADDED, ns, path("nvme1")))
    assert call["PRIORITY"] == str(PRIORITY_INFO)
    assert call["NVME_PATH_CTRL"] == "nvme1" and call["NVME_TRANSPORT"] == "tcp"
    assert call["NVME_PATHS_LIVE"] == "2" and "PREVIOUS_DEVNAME" not in call


def test_without_a_journal_the_level_shows_on_stderr() -> None:
    out = io.StringIO()
    TopologyLog("stderr", out).change(lost_device_change())
    assert out.getvalue().startswith("nvme-agent[warning]: path-lost nsid=1 ")


def test_the_message_id_table_documents_the_path_fields() -> None:
    table = by_id()
    for kind in (ChangeType.PATH_ADDED, ChangeType.PATH_LOST):
        body = table[CHANGE_MESSAGE_IDS[kind]].body
        documented = {f for f in PATH_FIELDS if f in body}
        assert documented >= PATH_FIELDS - {"PREVIOUS_DEVNAME"}, kind
    produced = set(change_fields(lost_device_change()))
    assert produced >= PATH_FIELDS
    assert "PREVIOUS_DEVNAME" in table[CHANGE_MESSAGE_IDS[ChangeType.PATH_LOST]].body
    assert "warning" in table[CHANGE_MESSAGE_IDS[ChangeType.PATH_LOST]].body
