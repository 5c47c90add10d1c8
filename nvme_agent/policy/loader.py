"""Policy text -> a :class:`Document`: plain data, positions, and every problem as an issue.

The text may have at most :attr:`Limits.max_bytes` bytes, checked before anything is parsed.
Then only PyYAML's event stream is used (libyaml's when PyYAML has it: a state machine, no
recursion), composed by :mod:`nvme_agent.policy.composer` within its bounds on depth and node
count.  Whatever the text, :func:`parse_yaml` raises nothing: syntax errors, bounds and values
that cannot be constructed all become ``file:line:column`` issues on the document.
"""

from __future__ import annotations

from typing import Any

import yaml

from nvme_agent.policy.composer import Composer, Limits, Stop
from nvme_agent.policy.document import Document, Path, Position, position_of
from nvme_agent.policy.errors import PolicyIssue

__all__ = ["LIMITS", "Document", "Limits", "Path", "Position", "parse_yaml"]

LIMITS = Limits()
#: libyaml's parser (the same events as PyYAML's, an order of magnitude faster), when PyYAML
#: was built with it.  Only its events are used, not its composer.
_CParser: Any = getattr(yaml, "CSafeLoader", None)


def _char(value: object) -> str:
    return f"U+{value:04X}" if isinstance(value, int) else repr(value)


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
    return str(exc)


def _reader_issue(exc: yaml.reader.ReaderError, before: str, origin: str) -> PolicyIssue:
    line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    return PolicyIssue(
        origin, line, col, "(syntax)", f"character {_char(exc.character)} is not allowed in YAML"
    )


def _syntax_issue(exc: yaml.MarkedYAMLError, origin: str) -> PolicyIssue:
    mark = exc.problem_mark or exc.context_mark
    line, col = position_of(mark) if mark is not None else (1, 1)
    message = _problem(exc)
    if "'{'" in message:
        message += ' (a template inside {...} must be quoted: "/x/{label}")'
    return PolicyIssue(origin, line, col, "(syntax)", message)


def _encode(text: str, origin: str, limits: Limits) -> bytes | PolicyIssue:
    if len(text) > limits.max_bytes:  # a character is at least one byte
        return _too_large(origin, len(text), limits)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        before = text[: exc.start]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return PolicyIssue(origin, line, col, "(syntax)", f"not Unicode text: {exc.reason}")
    if len(raw) > limits.max_bytes:
        return _too_large(origin, len(raw), limits)
    return raw


def _too_large(origin: str, size: int, limits: Limits) -> PolicyIssue:
    return PolicyIssue(
        origin,
        1,
        1,
        "(file)",
        f"{size} bytes is more than the {limits.max_bytes} a policy may have",
    )


def parse_yaml(text: str, origin: str, limits: Limits = LIMITS) -> Document:
    """Parse one YAML document.  Every problem (syntax, a bound, a value that cannot be
    constructed) becomes an issue on the returned document; nothing is raised."""
    doc = Document(data=None, origin=origin)
    raw = _encode(text, origin, limits)
    if isinstance(raw, PolicyIssue):
        doc.issues.append(raw)
        return doc
    parser: Any = None
    composer = Composer(lambda: None, origin, limits)
    try:
        parser = _CParser(raw) if _CParser is not None else yaml.SafeLoader(text)
        composer.get_event = parser.get_event
        doc.data = composer.document()
        doc.root = composer.root
    except Stop as stop:
        composer.issue(stop.mark, stop.path, stop.message)
    except yaml.reader.ReaderError as exc:
        # libyaml counts its offsets in bytes of UTF-8, the Python reader in characters
        if _CParser is not None:
            before = raw[: exc.position].decode("utf-8", "replace")
        else:  # pragma: no cover - PyYAML built without libyaml
            before = text[: exc.position]
        doc.issues.append(_reader_issue(exc, before, origin))
    except yaml.MarkedYAMLError as exc:
        doc.issues.append(_syntax_issue(exc, origin))
    finally:
        if parser is not None and hasattr(parser, "dispose"):
            parser.dispose()
    doc.issues[:0] = composer.issues
    return doc
