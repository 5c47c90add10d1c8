"""What udev's rules add to an NVMe block device: the imitation that can drift from real udev.

The kernel side of a fake device (sysfs attributes, the uevent's own variables) is built in
:mod:`.layout`; everything here is what systemd-udevd 252 computes on top of it, so it is the
code to compare against a real guest when udev changes:

* ``60-persistent-storage.rules`` for ``nvme*n*``: ``ID_SERIAL_SHORT``/``ID_MODEL``/
  ``ID_REVISION`` from the ``serial``/``model``/``firmware_rev`` attributes of the nearest
  parent that has them, ``ID_WWN`` from ``wwid``, ``ID_NSID``, ``ID_SERIAL``, the
  ``by-id``/``by-path``/``by-diskseq`` links (udev 252 also keeps the legacy
  ``nvme-<model>_<serial>`` link without the NSID);
* the ``path_id`` builtin: ``ID_PATH=pci-<slot>-nvme-<nsid>`` for a PCIe controller.  For a
  native-multipath head it looks up controller ``nvme<subsystem instance>`` (the subsystem's
  first controller); fabrics controllers live under ``/devices/virtual`` and get no
  ``ID_PATH`` at all;
* the ``blkid`` builtin: ``ID_FS_*`` of a filesystem, ``ID_PART_TABLE_*``, ``ID_PART_ENTRY_*``
  of a GPT partition, and the ``by-label``/``by-uuid``/``by-partuuid``/``by-partlabel`` links.
"""

from __future__ import annotations

import hashlib
import string
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass

SECTOR = 512
#: The GPT partition type GUID of "Linux filesystem data".
LINUX_DATA = "0fc63daf-8483-4772-8e3d-6984cf47ae9b"
#: Characters udev keeps everywhere (``allow_listed_char_for_devnode``).
_PLAIN = frozenset(string.ascii_letters + string.digits + "#+-.:=@_")
#: ``UDEV_ALLOWED_CHARS_INPUT``: what ``$attr{...}`` values and blkid's safe strings also keep.
INPUT_ALLOWED = "/ $%?,"
#: C's ``isspace``.
_SPACE = " \t\n\v\f\r"


def _invalid_byte(char: str) -> bool:
    """A byte that is not valid UTF-8, carried as a surrogate escape (``surrogateescape``)."""
    return "\udc80" <= char <= "\udcff"


def replace_chars(text: str, allow: str) -> str:
    """udev's ``udev_replace_chars``: keep plain ASCII, ``allow``, ``\\x`` escapes and valid
    UTF-8; whitespace becomes a space where spaces are allowed, anything else ``_``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] == "x":
            out.append("\\x")
            i += 2
            continue
        if char in _PLAIN or char in allow or (ord(char) > 0x7F and not _invalid_byte(char)):
            out.append(char)
        elif char in _SPACE and " " in allow:
            out.append(" ")
        else:
            out.append("_")
        i += 1
    return "".join(out)


def replace_whitespace(text: str) -> str:
    """Strip whitespace at both ends and turn each inner run of it into one ``_``."""
    words: list[str] = []
    word = ""
    for char in text:
        if char in _SPACE:
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    if word:
        words.append(word)
    return "_".join(words)


def attr_value(raw: str) -> str:
    """What ``$attr{name}`` gives a rule: trailing whitespace stripped, unsafe characters
    replaced (a newline in a hostile ``serial`` becomes a space)."""
    return replace_chars(raw.rstrip(_SPACE), INPUT_ALLOWED)


def escaped(text: str) -> str:
    """``OPTIONS="string_escape=replace"``: whitespace runs and unsafe characters to ``_``."""
    return replace_chars(replace_whitespace(text), "")


def blkid_label(raw: str) -> str:
    """libblkid's ``blkid_safe_string``: ``ID_FS_LABEL`` of a filesystem labelled ``raw``."""
    return replace_chars(replace_whitespace(raw), INPUT_ALLOWED)


def blkid_encode(raw: str) -> str:
    """libblkid's ``blkid_encode_string``: ``ID_FS_LABEL_ENC``, ``ID_PART_ENTRY_NAME``;
    everything but plain ASCII and valid UTF-8 as ``\\xNN``."""
    out: list[str] = []
    for char in raw:
        if (char in _PLAIN and char != "\\") or (ord(char) > 0x7F and not _invalid_byte(char)):
            out.append(char)
        else:
            out += [f"\\x{b:02x}" for b in char.encode("utf-8", "surrogateescape")]
    return "".join(out)


def kernel_partname(raw: str) -> str:
    """The kernel's ``PARTNAME`` of a GPT name: non-printable characters become ``!``."""
    return "".join(c if " " <= c <= "~" else "!" for c in raw)


def derived_uuid(*parts: object) -> str:
    """A stable UUID for a fake identifier (the same inputs give the same UUID)."""
    name = "nvme-agent-harness:" + ":".join(map(str, parts))
    # uuid5, over bytes: a hostile NQN may hold bytes that are not UTF-8 (surrogate escapes)
    data = uuidlib.NAMESPACE_URL.bytes + name.encode("utf-8", "surrogateescape")
    return str(
        uuidlib.UUID(bytes=hashlib.sha1(data, usedforsecurity=False).digest()[:16], version=5)
    )


@dataclass(frozen=True)
class DiskIdentity:
    """What udev reads from the parents of one namespace disk (sysfs attributes, stripped)."""

    serial: str
    model: str
    firmware: str
    wwid: str
    nsid: int
    id_path: str | None

    @property
    def id_serial(self) -> str:
        return escaped(f"{self.model}_{self.serial}_{self.nsid}")

    @property
    def legacy(self) -> str:
        return escaped(f"{self.model}_{self.serial}")


def id_path(pci_slot: str | None, nsid: int) -> str | None:
    """path_id's ``ID_PATH`` of a namespace reached through the PCI function ``pci_slot``."""
    return f"pci-{pci_slot}-nvme-{nsid}" if pci_slot else None


def by_id_links(ident: DiskIdentity) -> list[str]:
    """The disk's by-id and by-path links."""
    links = [
        f"/dev/disk/by-id/nvme-{ident.id_serial}",
        f"/dev/disk/by-id/nvme-{ident.wwid}",
        f"/dev/disk/by-id/nvme-{ident.legacy}",
    ]
    if ident.id_path:
        links.append(f"/dev/disk/by-path/{ident.id_path}")
    return links


def fs_links(fs_props: Mapping[str, str]) -> list[str]:
    """by-label/by-uuid links of a filesystem's ``ID_FS_*`` properties."""
    links = []
    if fs_props.get("ID_FS_LABEL_ENC"):
        links.append(f"/dev/disk/by-label/{fs_props['ID_FS_LABEL_ENC']}")
    if "ID_FS_UUID" in fs_props:
        links.append(f"/dev/disk/by-uuid/{fs_props['ID_FS_UUID']}")
    return links


def fs_properties(fs: str | None, label: str | None, fs_uuid: str) -> dict[str, str]:
    """blkid's ``ID_FS_*`` for a filesystem labelled ``label`` (nothing for a blank device)."""
    if not fs:
        return {}
    props = {
        "ID_FS_UUID": fs_uuid,
        "ID_FS_UUID_ENC": fs_uuid,
        "ID_FS_TYPE": fs,
        "ID_FS_USAGE": "other" if fs == "swap" else "filesystem",
    }
    if fs in ("ext2", "ext3", "ext4"):
        props["ID_FS_VERSION"] = "1.0"
    if label is not None:
        props["ID_FS_LABEL"] = blkid_label(label)
        props["ID_FS_LABEL_ENC"] = blkid_encode(label)
    return props


def disk_properties(ident: DiskIdentity, diskseq: int) -> dict[str, str]:
    """The persistent-storage properties of a namespace disk, with its by-id links.

    ``DEVLINKS`` here holds the identity links only; :func:`with_content` adds what blkid
    finds (a partition table, or a filesystem and its links).
    """
    props = {
        "ID_SERIAL_SHORT": ident.serial,
        "ID_WWN": ident.wwid,
        "ID_MODEL": ident.model,
        "ID_REVISION": ident.firmware,
        "ID_NSID": str(ident.nsid),
        "ID_SERIAL": ident.id_serial,
    }
    if ident.id_path:
        props["ID_PATH"] = ident.id_path
        props["ID_PATH_TAG"] = ident.id_path.replace(":", "_").replace(".", "_")
    props["TAGS"] = ":systemd:"
    props["CURRENT_TAGS"] = ":systemd:"
    props["DEVLINKS"] = " ".join([*by_id_links(ident), f"/dev/disk/by-diskseq/{diskseq}"])
    return props


def with_content(
    props: Mapping[str, str], *, table_uuid: str | None, fs: Mapping[str, str]
) -> dict[str, str]:
    """``props`` with blkid's view of the contents: a GPT (``table_uuid``) or a filesystem.

    Replaces what an earlier scan found, as udev does on a ``change``: old ``ID_FS_*``
    properties and their by-label/by-uuid links go.
    """
    out = {k: v for k, v in props.items() if not k.startswith(("ID_FS_", "ID_PART_TABLE_"))}
    links = [
        link
        for link in props.get("DEVLINKS", "").split()
        if not link.startswith(("/dev/disk/by-label/", "/dev/disk/by-uuid/"))
    ]
    if table_uuid is not None:
        out["ID_PART_TABLE_TYPE"] = "gpt"
        out["ID_PART_TABLE_UUID"] = table_uuid
    else:
        out.update(fs)
        links += fs_links(fs)
    out["DEVLINKS"] = " ".join(links)
    return out


@dataclass(frozen=True)
class PartitionEntry:
    """One GPT entry as blkid reports it."""

    number: int
    start: int
    sectors: int
    partuuid: str
    partlabel: str | None


#: Disk properties a partition inherits (60-persistent-storage.rules imports them).
_INHERITED = (
    "ID_SERIAL",
    "ID_WWN",
    "ID_MODEL",
    "ID_REVISION",
    "ID_NSID",
    "ID_PATH",
    "ID_PART_TABLE",
)


def partition_properties(
    disk_props: Mapping[str, str],
    ident: DiskIdentity,
    entry: PartitionEntry,
    disk_dev: str,
    fs: Mapping[str, str],
) -> dict[str, str]:
    """udev's properties of a partition (without the kernel's DEVNAME/MAJOR/MINOR/PARTN)."""
    props = {k: v for k, v in disk_props.items() if k.startswith(_INHERITED)}
    props.update(
        {
            "ID_PART_ENTRY_SCHEME": "gpt",
            "ID_PART_ENTRY_UUID": entry.partuuid,
            "ID_PART_ENTRY_TYPE": LINUX_DATA,
            "ID_PART_ENTRY_NUMBER": str(entry.number),
            "ID_PART_ENTRY_OFFSET": str(entry.start),
            "ID_PART_ENTRY_SIZE": str(entry.sectors),
            "ID_PART_ENTRY_DISK": disk_dev,
            "TAGS": ":systemd:",
            "CURRENT_TAGS": ":systemd:",
        }
    )
    if entry.partlabel:
        props["PARTNAME"] = kernel_partname(entry.partlabel)
        props["ID_PART_ENTRY_NAME"] = blkid_encode(entry.partlabel)
    props.update(fs)
    # the disk's by-id/by-path links with -partN, by-partuuid, by-partlabel, then the
    # filesystem's by-label/by-uuid
    links = [f"{link}-part{entry.number}" for link in by_id_links(ident)]
    links.append(f"/dev/disk/by-partuuid/{entry.partuuid}")
    if entry.partlabel:
        links.append(f"/dev/disk/by-partlabel/{blkid_encode(entry.partlabel)}")
    links += fs_links(fs)
    props["DEVLINKS"] = " ".join(links)
    return props
