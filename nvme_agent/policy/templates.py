"""Templates such as ``/run/media/nvme-agent/{label}`` and the sanitising that makes them safe.

A template is parsed once, at load time, with :class:`string.Formatter`'s parser; only the
plain field names in :data:`FIELDS` are accepted, so attribute or index access
(``{label.__class__}``, ``{label[0]}``), conversions (``{label!r}``) and format specs are
policy errors before any device is seen.

Rendering substitutes *device-controlled* strings (labels, serials, ...).  Each value is made
into ONE safe path component by :func:`component` before it is inserted: no ``/``, no NUL or
other control characters, never ``.`` or ``..``, no leading ``-`` (so it cannot turn into an
option of an exec'd program), at most :data:`MAX_COMPONENT_BYTES` bytes of UTF-8 (a longer
value keeps its start and ends in ``~`` and a short hash of the whole, so two long values stay
distinct).  An empty or absent value becomes the fallback ``ns<nsid>`` (``ns<nsid>p<partn>``
for a partition).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nvme_agent.topology.text import is_unsafe

#: Fields a template may use, and what they stand for (the man page lists them from here).
#: ``mountpoint`` is the rendered mount target of the rule's ``mount`` action; it is not device
#: data and is inserted as a whole path.
TEMPLATE_FIELDS: dict[str, str] = {
    "nsid": "the namespace ID",
    "ctrl": "the controller (nvme0)",
    "devname": "the block device's name (nvme0n1, nvme0n1p2)",
    "label": "the filesystem label",
    "fs_uuid": "the filesystem UUID",
    "fs_type": "the filesystem type",
    "uuid": "the namespace UUID",
    "nguid": "the namespace NGUID",
    "eui64": "the namespace EUI-64",
    "wwid": "the namespace WWID",
    "serial": "the controller's serial number",
    "model": "the controller's model",
    "subsysnqn": "the subsystem NQN",
    "partn": "the partition number (empty for a whole disk)",
    "partlabel": "the GPT partition name",
    "identity": "the namespace identity (uuid:..., wwid:..., ...)",
    "paths_live": "how many of the namespace's paths are live (for a path change: after it)",
    "path_ctrl": "the controller of the path that came or went (only in on_path_added and "
    "on_path_lost)",
    "path_device": "the block device of that path (nvme1n1, or a hidden nvme0c1n1 with native "
    "multipath; empty when none was seen)",
    "path_transport": "that path's transport (pcie, tcp, rdma, fc)",
    "path_address": "that path's address (0000:01:00.0, traddr=...,trsvcid=...)",
    "path_state": "that path's controller state when the change was seen (live, connecting, ...)",
    "mountpoint": "the path the rule's mount action mounts at (only in rules that mount)",
}
FIELDS: frozenset[str] = frozenset(TEMPLATE_FIELDS)
#: Fields of the path a change is about: only path hooks have one.
PATH_FIELDS: frozenset[str] = frozenset(f for f in TEMPLATE_FIELDS if f.startswith("path_"))

#: Bound on one substituted value, in bytes of UTF-8 (labels can be 255 bytes on btrfs).
MAX_COMPONENT_BYTES = 64
#: A value cut to the bound ends in ``~`` and this many hex digits of its SHA-256, so values
#: that differ only past the cut (QEMU's wwids differ in their last digit) stay different.
HASH_DIGITS = 12


class TemplateError(ValueError):
    """A template that cannot be compiled, or a value that cannot be rendered safely."""


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template: literal text and field names, alternating."""

    source: str
    parts: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for _, f in self.parts if f is not None)

    def render(self, values: Mapping[str, str], convert: Callable[[str, str], str]) -> str:
        """Substitute ``convert(field, values[field])`` for every field."""
        out: list[str] = []
        for literal, fld in self.parts:
            out.append(literal)
            if fld is not None:
                out.append(convert(fld, values.get(fld, "")))
        return "".join(out)


def compile_template(text: str, allowed: frozenset[str] = FIELDS) -> Template:
    """Parse ``text``; raise :class:`TemplateError` naming the first bad field."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            f"bad template {text!r}: {exc} (write {{{{ and }}}} for braces)"
        ) from exc
    parts: list[tuple[str, str | None]] = []
    for literal, fld, spec, conversion in parsed:
        if fld is None:
            parts.append((literal, None))
            continue
        if fld not in allowed:
            known = ", ".join("{" + f + "}" for f in sorted(allowed))
            if fld == "":
                raise TemplateError(f"empty field {{}} in {text!r}; known fields: {known}")
            raise TemplateError(
                f"unknown template field {{{fld}}} in {text!r}; known fields: {known}"
            )
        if conversion is not None or spec:
            raise TemplateError(
                f"conversions and format specs are not allowed in {text!r}: write {{{fld}}}"
            )
        parts.append((literal, fld))
    return Template(text, tuple(parts))


def _clean_char(ch: str) -> str:
    if is_unsafe(ch):
        # control, format (bidi overrides), lone surrogates, private/unassigned, line breaks
        return ""
    if ch in "/\\":
        return "_"
    return ch


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary."""
    raw = text.encode("utf-8", errors="surrogateescape")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def bounded(text: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    """``text`` if it fits in ``limit`` bytes of UTF-8; else a prefix cut on a character
    boundary, ``~`` and :data:`HASH_DIGITS` hex digits of the SHA-256 of the whole text."""
    raw = text.encode("utf-8", errors="surrogateescape")
    if len(raw) <= limit:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:HASH_DIGITS]
    return truncate_utf8(text, limit - HASH_DIGITS - 1).rstrip() + "~" + digest


def component(value: str | None, fallback: str) -> str:
    """``value`` as one safe path component (see the module docstring)."""
    text = value or ""
    if text.isascii() and text.isprintable():
        # The common case, without a look at each character: only the separators to replace.
        text = text.replace("/", "_").replace("\\", "_")
    else:
        text = "".join(_clean_char(c) for c in text)
    text = text.strip()
    if text.startswith("-"):
        text = "_" + text[1:]
    text = bounded(text)
    if text in ("", ".", ".."):
        return fallback
    return text


# --- systemd-escape, in pure Python -------------------------------------------------------

_UNIT_SAFE = frozenset(string.ascii_letters + string.digits + ":_.")


def systemd_escape(value: str, *, path: bool = False) -> str:
    """What ``systemd-escape [--path] VALUE`` prints.

    ``/`` becomes ``-``; every byte outside ``[A-Za-z0-9:_.]`` and a leading ``.`` become
    ``\\xNN``.  With ``path``, the value is simplified first (duplicate and trailing slashes
    dropped, ``/`` alone becomes ``-``); ``.``/``..`` components are refused as systemd does.
    """
    if path:
        parts = [p for p in value.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise TemplateError(f"cannot escape path {value!r}: it has . or .. components")
        if not parts:
            return "-"
        value = "/".join(parts)
    out: list[str] = []
    for i, ch in enumerate(value):
        if ch == "/":
            out.append("-")
        elif ch in _UNIT_SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", errors="surrogateescape"))
    return "".join(out)


#: A valid unit name: systemd's alphabet, a known suffix, at most 255 bytes.
UNIT_NAME = re.compile(
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?"
    r"\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$"
)


def check_unit_name(unit: str) -> None:
    """Raise :class:`TemplateError` unless ``unit`` is a valid systemd unit name."""
    if len(unit) > 255 or not UNIT_NAME.match(unit):
        raise TemplateError(
            f"{unit!r} is not a valid systemd unit name (e.g. backup@{{label}}.service)"
        )
