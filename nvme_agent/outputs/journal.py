"""The topology log: one structured journal entry per change, with a fixed MESSAGE_ID each.

``journalctl MESSAGE_ID=<id>`` filters one kind of change.  Without a journal (containers,
tests, ``--log-target stderr``) the same records go to stderr as readable lines, so nothing is
silently dropped: systemd-python's ``journal.send`` returns quietly when no journald listens.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, Literal, TextIO

from nvme_agent.topology.changes import Change, ChangeType
from nvme_agent.topology.model import Namespace
from nvme_agent.topology.text import one_line

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: Fixed MESSAGE_IDs (documented in the README).
CHANGE_MESSAGE_IDS: dict[ChangeType, str] = {
    ChangeType.NAMESPACE_ADDED: "1d903dab2f24434e83d36f525ee5a0bb",
    ChangeType.NAMESPACE_REMOVED: "a1920ca4660c4155ac1f07f6b44636ca",
    ChangeType.NAMESPACE_RESIZED: "2199fc58f0a745d08c114f4c4ff687a1",
    ChangeType.NAMESPACE_CHANGED: "60f9f86e5faf472294e71d274e65ade1",
    ChangeType.PARTITION_ADDED: "0a01e86844ae40b29f00f8eb2ea1e050",
    ChangeType.PARTITION_REMOVED: "322587aee92c48d3914e5948bcbc6653",
    ChangeType.CONTROLLER_ADDED: "b7bc5f9d777d4be1979da181afd4fcd0",
    ChangeType.CONTROLLER_REMOVED: "16074b15ec5549a1a0485c2330b3c586",
    ChangeType.PATH_ADDED: "44e1412ecb884072bb6e5d9902230fed",
    ChangeType.PATH_LOST: "d61436b6aad246f3bc022711c79e6847",
}
MSG_DAEMON_READY = "777515e766af45cb9b766bb2b65e26a7"
MSG_POLICY_RELOADED = "12cbe9a421d84e02a180a9fdb696836d"
MSG_POLICY_RELOAD_FAILED = "ea49f32aaa4d4974968abde9a8676fd9"
MSG_EVENTS_OVERRUN = "9bc0c1e9af424da6b51e6193a228605e"
MSG_RECOVERY = "61ba336525004683a3487d4558d2f518"
MSG_EJECTED = "47463b562756471fabde999bf96c88ef"
MSG_PLAN = "8648421f5e744455813b7b94084b3fbc"
MSG_PLAN_REFUSED = "7fb2a5f39f45479d81b82d1bd7e93550"
MSG_DEAD_MOUNT = "2dce90a6154e4d33a8c3c9040b641ffe"
MSG_RECONCILE = "0b7e52cfd9a642ba8cbcc653ff5d8b54"

LogTarget = Literal["auto", "journal", "stderr"]

# syslog priorities
PRIORITY_ERR = 3
PRIORITY_WARNING = 4
PRIORITY_NOTICE = 5
PRIORITY_INFO = 6

#: The priority of each kind of change that is not info: a lost path reduces redundancy.
CHANGE_PRIORITIES: dict[ChangeType, int] = {
    ChangeType.NAMESPACE_REMOVED: PRIORITY_NOTICE,
    ChangeType.CONTROLLER_REMOVED: PRIORITY_NOTICE,
    ChangeType.PATH_LOST: PRIORITY_WARNING,
}


def journal_available() -> bool:
    """True when a journald socket exists to receive native messages."""
    return os.path.exists(JOURNAL_SOCKET)


class JournalWatch:
    """Whether journald's socket is there, checked per entry.

    libsystemd's ``sd_journal_send`` returns success when the socket is missing (ENOENT is
    ignored on purpose), so without this check everything logged while journald is gone (a
    container, a broken ``/run``) would vanish without a trace.  While it is missing, entries
    go to the fallback stream; that is said once per outage, with the cause.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.missing = False

    def available(self) -> bool:
        if journal_available():
            if self.missing:
                self.missing = False
                self._say("info", f"journal socket {JOURNAL_SOCKET} is back: logging to it again")
            return True
        if not self.missing:
            self.missing = True
            self._say(
                "warning",
                f"journal socket {JOURNAL_SOCKET} is missing: logging to stderr until it is back",
            )
        return False

    def _say(self, level: str, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"nvme-agent[{level}]: {text}\n")
        stream.flush()


def change_fields(change: Change) -> dict[str, str]:
    """Journal fields of a change (``NVME_*``, ``DEVNAME``, ``SIZE_BYTES``, a path's...)."""
    fields: dict[str, str] = {"NVME_CHANGE": change.type.value}
    ns = change.namespace
    if ns is not None:
        fields.update(_namespace_fields(ns))
        fs = change.partition.fs if change.partition is not None else ns.fs
        if fs is not None:
            optional = {"ID_FS_TYPE": fs.type, "ID_FS_LABEL": fs.label, "ID_FS_UUID": fs.uuid}
            fields.update({k: v for k, v in optional.items() if v})
    if change.partition is not None:
        fields["DEVNAME"] = change.partition.devnode or ""
        fields["NVME_PARTITION"] = change.partition.name
    previous = change.previous
    if previous is not None and previous.size_bytes is not None:
        fields["PREVIOUS_SIZE_BYTES"] = str(previous.size_bytes)
    if change.path is not None:
        fields.update(_path_fields(change))
    if change.controller is not None:
        c = change.controller
        fields["NVME_CTRL"] = c.name
        extra = {"NVME_SERIAL": c.serial, "NVME_MODEL": c.model, "NVME_SUBSYSNQN": c.subsysnqn}
        fields.update({k: v for k, v in extra.items() if v})
    if change.reason:
        fields["NVME_REASON"] = change.reason
    if change.coldplug:
        fields["NVME_COLDPLUG"] = "1"
    return fields


def _namespace_fields(ns: Namespace) -> dict[str, str]:
    fields = {
        "NVME_NSID": str(ns.nsid),
        "NVME_CTRL": ",".join(ns.controllers),
        "NVME_IDENTITY": str(ns.identity),
        "NVME_IDENTITY_WEAK": "1" if ns.identity.weak else "0",
        "DEVNAME": ns.devnode or "",
    }
    optional = {
        "NVME_NS_UUID": ns.uuid,
        "NVME_NGUID": ns.nguid,
        "NVME_EUI64": ns.eui64,
        "NVME_WWID": ns.wwid,
        "NVME_SUBSYSNQN": ns.subsysnqn,
        "SIZE_BYTES": str(ns.size_bytes) if ns.size_bytes is not None else None,
        "NVME_DISKSEQ": str(ns.diskseq) if ns.diskseq is not None else None,
    }
    fields.update({k: v for k, v in optional.items() if v})
    return fields


def _path_fields(change: Change) -> dict[str, str]:
    """The path that came or went (a path change), and the live paths after it."""
    path = change.path
    assert path is not None
    optional = {
        "NVME_PATH_CTRL": path.controller,
        "NVME_PATH_DEVICE": path.device,
        "NVME_TRANSPORT": path.transport,
        "NVME_ADDRESS": path.address,
        "NVME_PATH_STATE": path.state,
    }
    fields = {k: v for k, v in optional.items() if v}
    ns, previous = change.namespace, change.previous
    if ns is not None:
        fields["NVME_PATHS_LIVE"] = str(sum(1 for p in ns.paths if p.state in (None, "live")))
    if previous is not None and ns is not None and previous.devnode != ns.devnode:
        fields["PREVIOUS_DEVNAME"] = previous.devnode or ""
    return fields


class TopologyLog:
    """Writes changes and daemon events to the journal, or readably to a stream."""

    def __init__(self, target: LogTarget = "auto", stream: TextIO | None = None) -> None:
        use_journal = target == "journal" or (target == "auto" and journal_available())
        self._send: Any = None
        if use_journal:
            try:
                self._send = importlib.import_module("systemd.journal").send
            except ImportError:  # pragma: no cover - systemd-python is a dependency
                log.warning("systemd-python missing: topology log goes to stderr")
        self.stream = stream if stream is not None else sys.stderr
        self.watch = JournalWatch(self.stream)

    def change(self, change: Change, summary: str | None = None) -> None:
        """Log one topology change (:data:`CHANGE_PRIORITIES`: a lost path is a warning);
        ``summary``: ``change.summary()`` when the caller has it already."""
        priority = CHANGE_PRIORITIES.get(change.type, PRIORITY_INFO)
        ns = change.namespace
        message = summary if summary is not None else change.summary()
        if ns is not None and ns.identity.weak and change.type is ChangeType.NAMESPACE_ADDED:
            message = f"{message}; identity is weak: cannot tell a swapped image"
        self.event(message, CHANGE_MESSAGE_IDS[change.type], priority, change_fields(change))

    def event(
        self,
        message: str,
        message_id: str,
        priority: int = PRIORITY_INFO,
        fields: dict[str, str] | None = None,
    ) -> None:
        """Log one structured entry.

        The message becomes one line whatever it holds (device strings in it are escaped by
        whoever composed it; :func:`one_line` is the last defence against forged lines).
        """
        message = one_line(message)
        fields = dict(fields or {})
        if self._send is not None and self.watch.available():
            self._send(
                message,
                MESSAGE_ID=message_id,
                PRIORITY=str(priority),
                SYSLOG_IDENTIFIER="nvme-agent",
                **fields,
            )
            return
        level = {PRIORITY_ERR: "error", PRIORITY_WARNING: "warning", PRIORITY_NOTICE: "notice"}
        prefix = level.get(priority, "info")
        self.stream.write(f"nvme-agent[{prefix}]: {message}\n")
        self.stream.flush()
