"""YAML -> plain Python values plus the source position of every node, within fixed bounds.

PyYAML's ``safe_load`` throws positions away, and positions are what makes an error message
useful.  It is also unbounded: its composer recurses once per nesting level (5,000 ``[`` end in
a ``RecursionError``) and expands aliases without counting (a few hundred bytes of nested
aliases become billions of nodes).  So we take only PyYAML's event stream (libyaml's when
present: a state machine, no recursion) and compose the document ourselves, iteratively,
counting as we go:

* the text may have at most :attr:`Limits.max_bytes` bytes (checked before parsing);
* collections may nest at most :attr:`Limits.max_depth` levels;
* the document may have at most :attr:`Limits.max_nodes` nodes, every alias counting as the
  size of what it stands for (so an alias bomb is refused after a bounded amount of work).

Past a bound composing stops with one ``file:line:column`` issue.  Scalars are constructed with
the safe constructor (so ``!!python/...`` tags are refused), a tag on a collection is refused,
duplicate keys (which ``safe_load`` silently accepts, the last one winning) are reported, and
``<<`` merge keys work (explicit keys win).  Nothing but issues comes out of :func:`parse_yaml`:
no exception, whatever the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from nvme_agent.policy.errors import PathPart, PolicyIssue, keypath

Path = tuple[PathPart, ...]
Position = tuple[int, int]

#: libyaml's parser (the same events as PyYAML's, an order of magnitude faster), when PyYAML
#: was built with it.  Only its events are used, not its composer.
_CParser: Any = getattr(yaml, "CSafeLoader", None)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a policy (or scenario) file may make the loader do.

    A 1,000-rule policy is about 300 KB, 34,000 nodes and 5 levels deep.
    """

    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_nodes: int = 100_000


LIMITS = Limits()


@dataclass(slots=True)
class Document:
    """A parsed policy file: the data, and 1-based (line, column) of values and keys by path."""

    data: Any
    origin: str
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)

    def position(self, path: Path, *, key: bool = False) -> Position | None:
        """Where ``path`` is: the key's position when ``key``; else the value's, falling back
        to the nearest ancestor that has one (a missing key is reported at its parent, a value
        inside an alias at the alias)."""
        if key and path in self.keys:
            return self.keys[path]
        p = path
        while True:
            if p in self.values:
                return self.values[p]
            if not p:
                return None
            p = p[:-1]


def _pos(mark: Any) -> Position:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


def _char(value: object) -> str:
    return f"U+{value:04X}" if isinstance(value, int) else repr(value)


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
    return str(exc)


class _Stop(Exception):
    """Composing cannot go on: ``message`` at ``mark`` (a bound, or a broken alias).  A
    ``path`` of None reports it as ``(syntax)``."""

    def __init__(self, mark: Any, path: Path | None, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.path = path
        self.message = message


_MISSING: Any = object()
_MERGE: Any = object()  # the pending key of a mapping is "<<"
_DROP: Any = object()  # the pending key was refused: compose its value, then drop it
_SAFE = SafeConstructor()
_resolve: Callable[[Any, str, tuple[bool, bool]], str] = Resolver().resolve
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
#: What constructing a scalar can raise besides YAMLError: bad dates, 5,000-digit integers.
_SCALAR_ERRORS = (yaml.YAMLError, ValueError, ArithmeticError, TypeError)


class _Frame:
    """A collection being composed."""

    __slots__ = ("anchor", "key", "key_pos", "mark", "merges", "path", "start", "value")

    def __init__(self, value: Any, path: Path | None, anchor: str | None, mark: Any, start: int):
        self.value = value
        self.path = path
        self.anchor = anchor
        self.mark = mark
        self.start = start
        self.key: Any = _MISSING
        self.key_pos: Position = (1, 1)
        self.merges: list[tuple[Any, Any]] = []


def _copy(value: Any) -> Any:
    # Each alias use gets its own copy: no two places of the data share a mutable value.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _height(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_height(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_height(v) for v in value), default=0)
    return 0


class _Composer:
    """Composes one document from an event source, iteratively, within :class:`Limits`."""

    def __init__(self, get_event: Callable[[], Any], doc: Document, limits: Limits) -> None:
        self.get_event = get_event
        self.doc = doc
        self.limits = limits
        self.count = 0
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, size, height
        self.open_anchors: set[str] = set()
        self.plain: dict[str, Any] = {}
        self.stack: list[_Frame] = []

    def issue(self, mark: Any, path: Path | None, message: str) -> None:
        line, col = _pos(mark)
        where = keypath(path) if path is not None else "(syntax)"
        self.doc.issues.append(PolicyIssue(self.doc.origin, line, col, where, message))

    # --- the document ------------------------------------------------------------------

    def document(self) -> Any:
        self.get_event()  # StreamStart
        event = self.get_event()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        data = self.node()
        self.get_event()  # DocumentEnd
        event = self.get_event()
        if not isinstance(event, yaml.StreamEndEvent):
            raise _Stop(
                event.start_mark,
                None,
                "expected a single document in the stream, but found another document",
            )
        return data

    def node(self) -> Any:
        """One whole node (the document's root)."""
        stack = self.stack
        get = self.get_event
        while True:
            event = get()
            kind = type(event)
            mark = event.start_mark
            if kind is yaml.ScalarEvent:
                value = self.scalar(event, self.child_path(event))
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self.open(event, kind is yaml.MappingStartEvent)
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                value, mark = self.close()
            elif kind is yaml.AliasEvent:
                value = self.alias(event, self.child_path(event))
            else:  # pragma: no cover - the parser yields nothing else inside a document
                raise _Stop(mark, None, f"unexpected {kind.__name__}")
            if not stack:
                return value
            self.deliver(stack[-1], value, event.value if kind is yaml.ScalarEvent else None, mark)

    # --- positions and paths -----------------------------------------------------------

    def child_path(self, event: Any) -> Path | None:
        """The path of the node ``event`` starts, its position recorded (None: a key, or
        inside a refused key or merge, whose positions nobody asks for)."""
        stack = self.stack
        path: Path = ()
        if stack:
            parent = stack[-1]
            ppath = parent.path
            if ppath is None:
                return None
            if isinstance(parent.value, list):
                path = (*ppath, len(parent.value))
            else:
                key = parent.key
                if key is _MISSING or key is _MERGE or key is _DROP:
                    return None
                path = (*ppath, key)
                self.doc.keys[path] = parent.key_pos
        self.doc.values[path] = _pos(event.start_mark)
        return path

    # --- nodes -------------------------------------------------------------------------

    def counted(self, n: int, event: Any, path: Path | None) -> None:
        self.count += n
        if self.count > self.limits.max_nodes:
            raise _Stop(
                event.start_mark,
                path,
                f"more than {self.limits.max_nodes} nodes (aliases counted as what they stand "
                "for): no policy is this large",
            )

    def scalar(self, event: Any, path: Path | None) -> Any:
        self.counted(1, event, path)
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:
                value: Any = event.value  # quoted: a string
            else:
                value = self.plain.get(event.value, _MISSING)
                if value is _MISSING:
                    tag = _resolve(yaml.ScalarNode, event.value, (True, False))
                    value = self.construct(tag, event, path)
                    self.plain[event.value] = value
        else:
            value = self.construct(tag, event, path)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1, 0)
        return value

    def construct(self, tag: str, event: Any, path: Path | None) -> Any:
        if tag == _STR_TAG:
            return event.value
        if tag == _MERGE_TAG:
            return _MERGE
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        constructor = cast(
            Callable[[Any, Any], Any],
            _SAFE.yaml_constructors.get(tag, _SAFE.yaml_constructors[None]),
        )
        try:
            return constructor(_SAFE, node)
        except _SCALAR_ERRORS as exc:
            problem = _problem(exc) if isinstance(exc, yaml.YAMLError) else str(exc)
            what = "value"
            if path is None and self.stack:
                parent = self.stack[-1]
                if parent.key is _MISSING and isinstance(parent.value, dict):
                    what, path = "key", parent.path
            self.issue(event.start_mark, path, f"cannot read {what}: {problem}")
            return None

    def alias(self, event: Any, path: Path | None) -> Any:
        name = event.anchor
        if name in self.open_anchors:
            raise _Stop(event.start_mark, path, f"alias *{name} refers to a node that contains it")
        found = self.anchors.get(name)
        if found is None:
            raise _Stop(event.start_mark, None, f"found undefined alias {name!r}")
        value, size, height = found
        self.counted(size, event, path)
        if height and len(self.stack) + height > self.limits.max_depth:
            self.too_deep(event, path)
        return _copy(value)

    def too_deep(self, event: Any, path: Path | None) -> None:
        raise _Stop(
            event.start_mark,
            path,
            f"nesting deeper than {self.limits.max_depth} levels: no policy is this deep",
        )

    def open(self, event: Any, mapping: bool) -> None:
        path = self.child_path(event)
        self.counted(1, event, path)
        if len(self.stack) >= self.limits.max_depth:
            self.too_deep(event, path)
        if event.tag not in _COLLECTION_TAGS:
            self.issue(event.start_mark, path, f"tag {event.tag} is not allowed here")
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(
            _Frame({} if mapping else [], path, event.anchor, event.start_mark, self.count)
        )

    def close(self) -> tuple[Any, Any]:
        """The collection just ended, and where it started."""
        frame = self.stack.pop()
        value = frame.value
        if frame.merges:
            self.merge(frame)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            size = self.count - frame.start + 1
            self.anchors[frame.anchor] = (value, size, _height(value))
        return value, frame.mark

    def merge(self, frame: _Frame) -> None:
        """``<<: *base`` (or a list of them): keys not given explicitly, the first source
        winning."""
        out: dict[Any, Any] = frame.value
        for source, mark in frame.merges:
            sources = source if isinstance(source, list) else [source]
            for item in sources:
                if not isinstance(item, dict):
                    self.issue(mark, frame.path, "bad merge key: expected mappings to merge")
                    continue
                for k, v in item.items():
                    out.setdefault(k, v)

    # --- putting a node in its parent --------------------------------------------------

    def deliver(self, parent: _Frame, value: Any, text: str | None, mark: Any) -> None:
        """Put a finished node (``text``: a scalar's, None for others) in ``parent``."""
        container = parent.value
        if isinstance(container, list):
            container.append(value)
            return
        key = parent.key
        if key is _MISSING:
            parent.key = self.mapping_key(parent, value, text, mark)
            return
        parent.key = _MISSING
        if key is _MERGE:
            parent.merges.append((value, mark))
        elif key is not _DROP:
            container[key] = value

    def mapping_key(self, parent: _Frame, value: Any, text: str | None, mark: Any) -> Any:
        """What a key node becomes: a string, ``_MERGE``, or ``_DROP`` (reported)."""
        if value is _MERGE:
            return _MERGE
        if isinstance(value, str):
            key = value
        elif text is not None:
            key = text  # YAML 1.1 reads `on:`/`yes:` as booleans and `1:` as an int
        else:
            self.issue(mark, parent.path, "a key must be a plain string")
            return _DROP
        if key in parent.value:
            child = (*parent.path, key) if parent.path is not None else None
            self.issue(mark, child, f"duplicate key {key!r}")
            return _DROP
        parent.key_pos = _pos(mark)
        return key


def _reader_issue(exc: yaml.reader.ReaderError, before: str, origin: str) -> PolicyIssue:
    line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    return PolicyIssue(
        origin, line, col, "(syntax)", f"character {_char(exc.character)} is not allowed in YAML"
    )


def _syntax_issue(exc: yaml.MarkedYAMLError, origin: str) -> PolicyIssue:
    mark = exc.problem_mark or exc.context_mark
    line, col = _pos(mark)
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
    composer = _Composer(lambda: None, doc, limits)
    try:
        parser = _CParser(raw) if _CParser is not None else yaml.SafeLoader(text)
        composer.get_event = parser.get_event
        doc.data = composer.document()
    except _Stop as stop:
        composer.issue(stop.mark, stop.path, stop.message)
        doc.data = None
    except yaml.reader.ReaderError as exc:
        # libyaml counts its offsets in bytes of UTF-8, the Python reader in characters
        if _CParser is not None:
            before = raw[: exc.position].decode("utf-8", "replace")
        else:  # pragma: no cover - PyYAML built without libyaml
            before = text[: exc.position]
        doc.issues.append(_reader_issue(exc, before, origin))
    except yaml.MarkedYAMLError as exc:
        doc.issues.append(_syntax_issue(exc, origin))
        doc.data = None
    finally:
        if parser is not None and hasattr(parser, "dispose"):
            parser.dispose()
    return doc
