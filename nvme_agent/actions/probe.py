"""What a device holds *now*: one ``blkid -p`` per mount, for the fstab guard and the type check.

The probe reads the device itself (no blkid cache, no udev database): the plan was made from
udev's view, and the device may have been rewritten since.  It runs in a child process, not
through libblkid in the daemon: it parses what the disk carries, and a crash or a hang there
must not take the daemon with it.

One probe answers both questions a mount asks: the identifiers fstab can name a device by
(``UUID``, ``LABEL``, and for a partition ``PARTUUID`` and ``PARTLABEL``) and the filesystem
type.  It starts when first needed (or by :meth:`DeviceProbe.start`, so that it overlaps other
work) and is read once; :meth:`DeviceProbe.again` forgets it after something that may change
the device (fsck).

blkid's ``export`` output is one ``NAME=value`` line per value, each value encoded by blkid
(``M-`` for bytes of 128 and up, ``^`` for control characters, a backslash before
`` \\"'$`<>``), so no value can break a line; the encoding is not reversible, so values are
compared in it (:func:`export_form`).
"""

from __future__ import annotations

import subprocess

from nvme_agent.actions.outcome import ActionError, Deadline
from nvme_agent.actions.proc import ClosesOnExit, ToolRun, tool_error

#: ``blkid -p`` exit statuses (blkid(8)).
_NOTHING = 2
_AMBIVALENT = 8

#: fstab(5) tags and the ``blkid -p`` value each names (the ``PARTUUID`` of ``blkid`` without
#: ``-p`` is ``PART_ENTRY_UUID`` of the low-level probe).
FSTAB_TAGS = {
    "UUID": "UUID",
    "LABEL": "LABEL",
    "PARTUUID": "PART_ENTRY_UUID",
    "PARTLABEL": "PART_ENTRY_NAME",
}

#: What blkid's ``safe_print`` puts a backslash before in ``export`` output.
_ESCAPED = frozenset(" \\\"'$`<>")
#: What libblkid trims from the end of a label (C's ``isspace``).
C_SPACE = " \t\n\v\f\r"


def export_form(value: str) -> str:
    """``value`` as ``blkid -o export`` prints it (util-linux's ``safe_print``)."""
    out: list[str] = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if byte >= 128:
            out.append("M-")
            byte -= 128
        if byte < 32 or byte == 0x7F:
            out.append("^")
            byte ^= 0x40
        elif chr(byte) in _ESCAPED:
            out.append("\\")
        out.append(chr(byte))
    return "".join(out)


def fstab_form(value: str) -> str:
    """An fstab tag's value (quotes and octal escapes already taken off) as blkid would
    print the identifier: libblkid drops a label's trailing whitespace, then it is encoded."""
    return export_form(value.rstrip(C_SPACE))


def parse_export(text: str) -> dict[str, str]:
    """``NAME=value`` lines; a name given twice keeps its first value.  Lines end at ``\\n``
    only (``str.splitlines`` would also end one at U+0085 or U+001C in a value)."""
    values: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key, value)
    return values


class DeviceProbe(ClosesOnExit):
    """``blkid -p -o export`` of one device, started once and read at most once.

    A context manager: leaving the block kills and reaps a probe still running.
    """

    def __init__(self, devnode: str, deadline: Deadline) -> None:
        self.devnode = devnode
        self.deadline = deadline
        self.runs = 0  # probes started (tests: one per mount unless fsck ran between)
        self._run: ToolRun | None = None
        self._done: subprocess.CompletedProcess[str] | None = None

    def start(self) -> None:
        """Start the probe now (if it is not running or read already)."""
        if self._run is None:
            self._run = ToolRun(["blkid", "-p", "-o", "export", self.devnode], self.deadline)
            self.runs += 1

    def again(self) -> None:
        """Forget what was probed: the device may have changed (fsck ran)."""
        self.close()
        self._run = self._done = None

    def _result(self) -> subprocess.CompletedProcess[str]:
        self.start()
        assert self._run is not None
        if self._done is None:
            self._done = self._run.result()
        return self._done

    def identifiers(self) -> dict[str, str]:
        """The fstab tags (:data:`FSTAB_TAGS`) the device can be named by, in blkid's encoding.

        Raises :class:`ActionError` when the probe cannot tell (several signatures, a
        failure): whether fstab names the device is then unknown.
        """
        proc = self._result()
        if proc.returncode == _NOTHING:
            return {}
        if proc.returncode != 0:
            raise ActionError(self._why(proc))
        values = parse_export(proc.stdout)
        return {tag: values[name] for tag, name in FSTAB_TAGS.items() if values.get(name)}

    def fstype(self) -> str:
        """The filesystem type the device holds.

        Raises :class:`ActionError` when the probe finds nothing, finds several signatures
        (ambivalent: the kernel might see another type than the plan), or fails.
        """
        proc = self._result()
        if proc.returncode == _NOTHING:
            raise ActionError(f"{self.devnode} holds no filesystem signature now")
        if proc.returncode != 0:
            raise ActionError(self._why(proc))
        found = parse_export(proc.stdout).get("TYPE")
        if not found:
            raise ActionError(f"{self.devnode} holds no filesystem type blkid could name")
        return found

    def _why(self, proc: subprocess.CompletedProcess[str]) -> str:
        if proc.returncode == _AMBIVALENT:
            return f"{self.devnode} carries several filesystem signatures (ambivalent probe)"
        return f"probing {self.devnode} failed: {tool_error(proc)}"

    def close(self) -> None:
        """Kill and reap a probe still running."""
        if self._run is not None:
            self._run.close()
