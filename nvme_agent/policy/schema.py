"""The JSON Schema of the policy file, generated from :mod:`nvme_agent.policy.spec`.

Editors use it (``# yaml-language-server: $schema=...``) to complete keys and flag shape
errors as one types; ``nvme-agent check`` says the rest (templates, globs, mount paths below
the mount root, signal names).  The shipped ``schema.json`` is this module's output, and a test
keeps it so::

    python3 -m nvme_agent.policy.schema -o nvme_agent/policy/schema.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from typing import Any

from nvme_agent.policy.shapes import SHAPES, Shape
from nvme_agent.policy.spec import (
    ACTION_TYPES,
    Action,
    KeyInfo,
    Match,
    Policy,
    Rule,
    keys_of,
)
from nvme_agent.policy.templates import TEMPLATE_FIELDS

#: An identifier, not a download location: the schema describes version 1 of the language
#: and is installed as /usr/share/nvme-agent/schema.json.
SCHEMA_ID = "urn:nvme-agent:policy:1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TEMPLATE_SHAPES = (Shape.PATH_TEMPLATE, Shape.UNIT_TEMPLATE, Shape.ARGV, Shape.ENV)


def _json_default(value: Any) -> Any:
    """``value`` as JSON, or None when it has no JSON form worth showing."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _description(info: KeyInfo) -> str:
    text = info.doc
    if info.shape in _TEMPLATE_SHAPES:
        fields = " ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
        text += f" Template fields: {fields}."
    if info.default_text:
        text += f" Default: {info.default_text}."
    return text


def _property(info: KeyInfo) -> dict[str, Any]:
    if info.shape is Shape.SECTION:
        assert info.section is not None
        schema = _object(info.section, nullable=True)
    elif info.shape is Shape.ACTIONS:
        schema = {"type": "array", "items": _actions_for(info.name)}
    else:
        doc = SHAPES[info.shape]
        assert doc.schema is not None, info.shape
        schema = copy.deepcopy(doc.schema)
    schema["description"] = _description(info)
    default = _json_default(info.default) if info.has_default else None
    if default is not None and not info.default_text and not info.required:
        schema["default"] = default
    return schema


def _object(cls: type, *, nullable: bool = False, summary: bool = True) -> dict[str, Any]:
    keys = keys_of(cls)
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object"}
    text = getattr(cls, "SUMMARY", "")
    if summary and text:
        schema["description"] = text
    schema["properties"] = {k.name: _property(k) for k in keys}
    schema["additionalProperties"] = False
    required = [k.name for k in keys if k.required]
    if required:
        schema["required"] = required
    return schema


def _action(cls: type[Action]) -> dict[str, Any]:
    kind, one_of = cls.KIND, cls.ONE_OF
    klass: type = cls
    # A body that needs nothing may be empty (``grow: {}``, ``unmount:``).
    needs = one_of or any(k.required for k in keys_of(klass))
    body = _object(klass, nullable=not needs, summary=False)
    hooks = " and ".join(cls.HOOKS)
    body = {"description": f"{cls.SUMMARY}  Allowed in {hooks}.", **body}
    if one_of:
        body["oneOf"] = [{"required": [k]} for k in one_of]
    return {
        "type": "object",
        "description": f"A {kind} action.",
        "properties": {kind: body},
        "required": [kind],
        "additionalProperties": False,
    }


def _actions_for(hook: str) -> dict[str, Any]:
    allowed = [c for c in ACTION_TYPES if hook in c.HOOKS]
    return {"oneOf": [{"$ref": f"#/$defs/{c.KIND}"} for c in allowed]}


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the policy file."""
    top = _object(Policy, summary=False)
    defs: dict[str, Any] = {
        "rule": _object(Rule),
        "match": _object(Match, nullable=True),
    }
    defs.update({cls.KIND: _action(cls) for cls in ACTION_TYPES})
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "nvme-agent policy",
        "description": (
            "What nvme-agent does when an NVMe namespace is added, removed or resized.  The "
            "agent also checks meaning (templates, globs, mount paths below mount_root): run "
            "`nvme-agent check`.  See nvme-agent.policy(5)."
        ),
        **top,
        "$defs": defs,
    }


def schema_json() -> str:
    """:func:`schema` as the text of ``schema.json``."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m nvme_agent.policy.schema [-o FILE]``."""
    ap = argparse.ArgumentParser(
        prog="python3 -m nvme_agent.policy.schema",
        description="Write the JSON Schema of the nvme-agent policy file.",
    )
    ap.add_argument("-o", "--output", help="output file (default: standard output)")
    args = ap.parse_args(argv)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(schema_json())
    else:
        sys.stdout.write(schema_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
