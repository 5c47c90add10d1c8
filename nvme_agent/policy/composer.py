"""Composing a YAML event stream into plain data, iteratively and within fixed bounds.

PyYAML's own composer recurses once per nesting level (5,000 ``[`` end in a ``RecursionError``)
and its constructor expands aliases without counting (a few hundred bytes of nested aliases
become billions of nodes).  This one keeps its own stack and counts as it goes:

* collections may nest at most :attr:`Limits.max_depth` levels;
* the document may have at most :attr:`Limits.max_nodes` nodes, every alias counting as the
  size of what it stands for, so an alias bomb is refused after a bounded amount of work.

Past a bound it stops with :class:`Stop` (the loader turns it into one ``file:line:column``
issue).  Scalars are constructed with PyYAML's safe constructor (``!!python/...`` tags are
refused), a tag on a collection is refused, duplicate keys (which ``safe_load`` silently
accepts, the last one winning) are reported, and ``<<`` merge keys work, explicit keys winning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from nvme_agent.policy.document import MarkTree, Path, position_of, unpack
from nvme_agent.policy.errors import PolicyIssue, keypath


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a policy (or scenario) file may make the loader do.

    A 1,000-rule policy is about 300 KB, 34,000 nodes and 5 levels deep.
    """

    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_nodes: int = 100_000


class Stop(Exception):
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
_SCALAR = yaml.ScalarEvent
_ALIAS = yaml.AliasEvent
_MAP_START = yaml.MappingStartEvent
_SEQ_START = yaml.SequenceStartEvent
_MAP_END = yaml.MappingEndEvent
_SEQ_END = yaml.SequenceEndEvent


class _Frame:
    """A collection being composed: its value, the marks of its children, the pending key."""

    __slots__ = (
        "anchor",
        "is_map",
        "key",
        "key_at",
        "marks",
        "merges",
        "start",
        "start_event",
        "value",
    )

    def __init__(self, is_map: bool, anchor: str | None, start_event: Any, start: int) -> None:
        self.is_map = is_map
        self.value: Any = {} if is_map else []
        self.marks: Any = {} if is_map else []
        self.anchor = anchor
        self.start_event = start_event
        self.start = start
        self.key: Any = _MISSING
        self.key_at = 0
        self.merges: list[tuple[Any, int]] | None = None  # most mappings have none


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


class Composer:
    """Composes one document from ``get_event`` (a PyYAML or libyaml parser's)."""

    def __init__(self, get_event: Callable[[], Any], origin: str, limits: Limits) -> None:
        self.get_event = get_event
        self.origin = origin
        self.limits = limits
        self.max_nodes = limits.max_nodes
        self.issues: list[PolicyIssue] = []
        self.root: tuple[int, MarkTree | None] | None = None
        self.count = 0
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, size, height
        self.open_anchors: set[str] = set()
        self.plain: dict[str, Any] = {}
        self.stack: list[_Frame] = []

    def issue(self, mark: Any, path: Path | None, message: str) -> None:
        line, col = position_of(mark) if mark is not None else (1, 1)
        where = keypath(path) if path is not None else "(syntax)"
        self.issues.append(PolicyIssue(self.origin, line, col, where, message))

    def issue_at(self, at: int, path: Path | None, message: str) -> None:
        line, col = unpack(at)
        where = keypath(path) if path is not None else "(syntax)"
        self.issues.append(PolicyIssue(self.origin, line, col, where, message))

    def path(self, depth: int | None = None) -> Path | None:
        """The path of the node the frames ``stack[:depth]`` are composing (all of them by
        default); None inside a key or a merge, whose paths nobody asks for."""
        parts: list[Any] = []
        for frame in self.stack[:depth]:
            if not frame.is_map:
                parts.append(len(frame.value))
                continue
            if frame.key is _MISSING or frame.key is _MERGE or frame.key is _DROP:
                return None
            parts.append(frame.key)
        return tuple(parts)

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
            raise Stop(
                event.start_mark,
                None,
                "expected a single document in the stream, but found another document",
            )
        return data

    def node(self) -> Any:
        """One whole node (the document's root)."""
        # The hot loop of loading a policy, once per event: the common cases (a plain scalar
        # seen before, a value going into a mapping or a list) are handled in line.
        stack = self.stack
        get = self.get_event
        plain = self.plain
        while True:
            event = get()
            kind = type(event)
            marks = None
            text = None
            if kind is _SCALAR:
                text = event.value
                self.count += 1
                if self.count > self.max_nodes:
                    self.counted(0, event)
                value = _MISSING
                if event.tag is None and event.anchor is None:
                    # plain: as resolved before; quoted: a string
                    value = plain.get(text, _MISSING) if event.implicit[0] else text
                if value is _MISSING:
                    value = self.scalar(event)
            elif kind is _MAP_END or kind is _SEQ_END:
                value, event, marks = self.close()
            elif kind is _MAP_START or kind is _SEQ_START:
                self.open(event, kind is _MAP_START)
                continue
            else:
                value = self.alias(event)
            mark = event.start_mark
            at = mark.line << 32 | mark.column  # document.pack(mark), in line
            if not stack:
                self.root = (at, marks)
                return value
            parent = stack[-1]
            key = parent.key
            if not parent.is_map:
                parent.value.append(value)
                parent.marks.append(at if marks is None else (at, marks))
            elif key is _MISSING and type(value) is str and value not in parent.value:
                parent.key = value  # a new plain key: the usual case
                parent.key_at = at
            elif key is _MISSING or key is _MERGE or key is _DROP:
                self.deliver(parent, value, text, at, marks)
            else:
                parent.key = _MISSING
                parent.value[key] = value
                both = parent.key_at << 64 | at
                parent.marks[key] = both if marks is None else (both, marks)

    # --- nodes -------------------------------------------------------------------------

    def counted(self, n: int, event: Any) -> None:
        self.count += n
        if self.count > self.max_nodes:
            raise Stop(
                event.start_mark,
                self.path(),
                f"more than {self.max_nodes} nodes (aliases counted as what they stand for): "
                "no policy is this large",
            )

    def scalar(self, event: Any) -> Any:
        """A scalar's value (already counted), its anchor registered."""
        tag = event.tag
        if tag is not None and tag != "!":
            value = self.construct(tag, event)
        elif not event.implicit[0]:
            value = event.value  # quoted: a string
        else:
            value = self.plain.get(event.value, _MISSING)
            if value is _MISSING:
                value = self.construct(_resolve(yaml.ScalarNode, event.value, (True, False)), event)
                self.plain[event.value] = value
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1, 0)
        return value

    def construct(self, tag: str, event: Any) -> Any:
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
            path, what = self.path(), "value"
            top = self.stack[-1] if self.stack else None
            if top is not None and top.is_map and top.key is _MISSING:
                path, what = self.path(-1), "key"
            self.issue(event.start_mark, path, f"cannot read {what}: {problem}")
            return None

    def alias(self, event: Any) -> Any:
        name = event.anchor
        if name in self.open_anchors:
            raise Stop(
                event.start_mark, self.path(), f"alias *{name} refers to a node that contains it"
            )
        found = self.anchors.get(name)
        if found is None:
            raise Stop(event.start_mark, None, f"found undefined alias {name!r}")
        value, size, height = found
        self.counted(size, event)
        if height and len(self.stack) + height > self.limits.max_depth:
            self.too_deep(event)
        return _copy(value)

    def too_deep(self, event: Any) -> None:
        raise Stop(
            event.start_mark,
            self.path(),
            f"nesting deeper than {self.limits.max_depth} levels: no policy is this deep",
        )

    def open(self, event: Any, mapping: bool) -> None:
        self.count += 1
        if self.count > self.max_nodes:
            self.counted(0, event)
        if len(self.stack) >= self.limits.max_depth:
            self.too_deep(event)
        if event.tag is not None and event.tag not in _COLLECTION_TAGS:
            self.issue(event.start_mark, self.path(), f"tag {event.tag} is not allowed here")
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(mapping, event.anchor, event, self.count))

    def close(self) -> tuple[Any, Any, MarkTree]:
        """The collection just ended, its start event, and the marks of its children."""
        frame = self.stack.pop()
        value = frame.value
        if frame.merges:
            self.merge(frame)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            size = self.count - frame.start + 1
            self.anchors[frame.anchor] = (value, size, _height(value))
        return value, frame.start_event, frame.marks

    def merge(self, frame: _Frame) -> None:
        """``<<: *base`` (or a list of them): keys not given explicitly, the first source
        winning."""
        out: dict[Any, Any] = frame.value
        for source, at in frame.merges or ():
            for item in source if isinstance(source, list) else [source]:
                if not isinstance(item, dict):
                    self.issue_at(at, self.path(), "bad merge key: expected mappings to merge")
                    continue
                for k, v in item.items():
                    out.setdefault(k, v)

    # --- a mapping's keys and values ---------------------------------------------------

    def deliver(self, parent: _Frame, value: Any, text: str | None, at: int, marks: Any) -> None:
        """Put a finished node (``text``: a scalar's, None for others; ``at``: its packed
        position) in the mapping ``parent``: it is the pending key, or the pending key's
        value."""
        key = parent.key
        if key is _MISSING:
            parent.key = self.mapping_key(parent, value, text, at)
            parent.key_at = at
            return
        parent.key = _MISSING
        if key is _MERGE:
            if parent.merges is None:
                parent.merges = []
            parent.merges.append((value, at))
        elif key is not _DROP:
            parent.value[key] = value
            both = parent.key_at << 64 | at
            parent.marks[key] = both if marks is None else (both, marks)

    def mapping_key(self, parent: _Frame, value: Any, text: str | None, at: int) -> Any:
        """What a key node becomes: a string, ``_MERGE``, or ``_DROP`` (reported)."""
        if value is _MERGE:
            return _MERGE
        if isinstance(value, str):
            key = value
        elif text is not None:
            key = text  # YAML 1.1 reads `on:`/`yes:` as booleans and `1:` as an int
        else:
            self.issue_at(at, self.path(-1), "a key must be a plain string")
            return _DROP
        if key in parent.value:
            where = self.path(-1)
            self.issue_at(at, None if where is None else (*where, key), f"duplicate key {key!r}")
            return _DROP
        return key


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
    return str(exc)
