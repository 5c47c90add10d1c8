"""What the value of a policy key looks like: one row per shape, shared by the validator, the
JSON Schema (``schema.py``) and the man page (``nvme_agent.cli.policyman``).

A shape is the *form* of a YAML value (a boolean, a glob or a list of globs, a size with a unit,
...).  The validator checks meaning beyond form (templates, mount paths below the mount root,
signal names) and keeps its own messages; what it shares with the schema are the patterns below,
so the two cannot disagree on what a filesystem type or a mount option looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nvme_agent.policy.units import UNITS

#: Patterns in the dialect both ``re`` and JSON Schema (ECMA 262) read the same way.
FSTYPE_PATTERN = r"^[A-Za-z0-9_.-]+$"
OPTION_PATTERN = r"^[^\s,]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
USER_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$"
PROPERTY_PATTERN = r"^[A-Za-z0-9_.-]+$"
#: Permission bits and the sticky bit, never setuid/setgid: the unit forbids creating SUID/SGID
#: files (RestrictSUIDSGID=), and a mount point's own mode is hidden by what is mounted on it.
MODE_PATTERN = r"^0?[01]?[0-7]{3}$"
SIGNAL_PATTERN = r"^[A-Za-z0-9+-]+$"
PROCESS_PATTERN = r"^[^/]+$"
NSID_MAX = 0xFFFFFFFE
#: More paths than NVMe has controller IDs (0..0xFFEF) cannot exist.
COUNT_MAX = 0xFFFF
MODE_MAX = 0o1777


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


#: A size: bytes, or a number with one of :data:`nvme_agent.policy.units.UNITS` (any case).
SIZE_PATTERN = (
    r"^\s*[0-9]+(\.[0-9]+)?\s*("
    + "|".join(_any_case(u) for u in sorted((u for u in UNITS if u), key=lambda u: (-len(u), u)))
    + r")?\s*$"
)


class Shape(StrEnum):
    """The form of a key's value."""

    VERSION = "version"
    SECTION = "section"
    BOOL = "bool"
    SECONDS = "seconds"
    ABSPATH = "abspath"
    STRING = "string"
    ID = "id"
    MODE = "mode"
    OPTIONS = "options"
    FSTYPE = "fstype"
    FSTYPES = "fstypes"
    PATH_TEMPLATE = "path-template"
    UNIT_TEMPLATE = "unit-template"
    ARGV = "argv"
    ENV = "env"
    SIGNAL = "signal"
    ON_BUSY = "on-busy"
    PROCESS = "process"
    GLOBS = "globs"
    NSIDS = "nsids"
    SIZE = "size"
    COUNT = "count"
    PROPERTIES = "properties"
    MATCH = "match"
    MATCH_LIST = "match-list"
    ACTIONS = "actions"
    RULES = "rules"


@dataclass(frozen=True, slots=True)
class ShapeDoc:
    """How a shape reads in the man page (``text``) and in JSON Schema (``schema``).

    A ``schema`` of None is built by the schema generator from something else (a section's own
    keys).
    """

    text: str
    schema: dict[str, Any] | None


_TEMPLATE = {"type": "string"}
_GLOBS = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
    ]
}
_NSID = {"type": "integer", "minimum": 1, "maximum": NSID_MAX}
_ID = {
    "oneOf": [
        {"type": "string", "pattern": USER_NAME_PATTERN},
        {"type": "integer", "minimum": 0},
    ]
}

#: On-busy choices of an unmount (the validator and ``Literal`` of ``UnmountAction.on_busy``).
ON_BUSY_CHOICES = ("fail", "signal", "lazy")

SHAPES: dict[Shape, ShapeDoc] = {
    Shape.VERSION: ShapeDoc("1", {"const": 1}),
    Shape.SECTION: ShapeDoc("mapping", None),
    Shape.BOOL: ShapeDoc("true or false", {"type": "boolean"}),
    Shape.SECONDS: ShapeDoc(
        "seconds (a number above 0)", {"type": "number", "exclusiveMinimum": 0}
    ),
    Shape.ABSPATH: ShapeDoc("absolute path", {"type": "string", "pattern": "^/"}),
    Shape.STRING: ShapeDoc("string", {"type": "string"}),
    Shape.ID: ShapeDoc("name or number", _ID),
    Shape.MODE: ShapeDoc(
        'octal mode, quoted ("0750")',
        {
            "oneOf": [
                {"type": "string", "pattern": MODE_PATTERN},
                {"type": "integer", "minimum": 0, "maximum": MODE_MAX},
            ]
        },
    ),
    Shape.OPTIONS: ShapeDoc(
        "list of mount options, or one comma-separated string",
        {
            "oneOf": [
                {"type": "array", "items": {"type": "string", "pattern": OPTION_PATTERN}},
                {"type": "string"},
            ]
        },
    ),
    Shape.FSTYPE: ShapeDoc("filesystem type", {"type": "string", "pattern": FSTYPE_PATTERN}),
    Shape.FSTYPES: ShapeDoc(
        "non-empty list of filesystem types",
        {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": FSTYPE_PATTERN}},
    ),
    Shape.PATH_TEMPLATE: ShapeDoc("path template", _TEMPLATE),
    Shape.UNIT_TEMPLATE: ShapeDoc("unit name template", _TEMPLATE),
    Shape.ARGV: ShapeDoc(
        "non-empty list: a fixed absolute program, then argument templates",
        {"type": "array", "minItems": 1, "items": _TEMPLATE},
    ),
    Shape.ENV: ShapeDoc(
        "mapping of variable name to template",
        {
            "type": "object",
            "additionalProperties": _TEMPLATE,
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
        },
    ),
    Shape.SIGNAL: ShapeDoc(
        "signal name (SIGTERM, TERM) or number",
        {
            "oneOf": [
                {"type": "string", "pattern": SIGNAL_PATTERN},
                {"type": "integer", "minimum": 1},
            ]
        },
    ),
    Shape.ON_BUSY: ShapeDoc(" or ".join(ON_BUSY_CHOICES), {"enum": list(ON_BUSY_CHOICES)}),
    Shape.PROCESS: ShapeDoc("process name (no /)", {"type": "string", "pattern": PROCESS_PATTERN}),
    Shape.GLOBS: ShapeDoc("glob or non-empty list of globs", _GLOBS),
    Shape.NSIDS: ShapeDoc(
        f"namespace ID (1..{NSID_MAX}) or non-empty list of them",
        {"oneOf": [_NSID, {"type": "array", "items": _NSID, "minItems": 1}]},
    ),
    Shape.SIZE: ShapeDoc(
        "bytes, or a number with a unit",
        {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        },
    ),
    Shape.COUNT: ShapeDoc(
        f"whole number (0..{COUNT_MAX})", {"type": "integer", "minimum": 0, "maximum": COUNT_MAX}
    ),
    Shape.PROPERTIES: ShapeDoc(
        "mapping of udev property name to glob(s)",
        {
            "type": "object",
            "additionalProperties": _GLOBS,
            "propertyNames": {"pattern": PROPERTY_PATTERN},
        },
    ),
    Shape.MATCH: ShapeDoc("mapping of conditions", {"$ref": "#/$defs/match"}),
    Shape.MATCH_LIST: ShapeDoc(
        "non-empty list of condition mappings",
        {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/match"}},
    ),
    Shape.ACTIONS: ShapeDoc("list of actions", None),
    Shape.RULES: ShapeDoc(
        "list of rules",
        {"oneOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/$defs/rule"}}]},
    ),
}
