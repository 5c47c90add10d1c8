"""YAML -> plain Python values plus the source position of every node.

PyYAML's ``safe_load`` throws positions away, and positions are what makes an error message
useful.  We compose the node graph ourselves, construct scalars with the safe constructor
(so ``!!python/...`` tags are refused) and remember the mark of each value and of each mapping
key under its key path.  Duplicate keys, which ``safe_load`` silently accepts (the last one
wins), are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from nvme_agent.policy.errors import PathPart, PolicyIssue, keypath

Path = tuple[PathPart, ...]
Position = tuple[int, int]


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
        to the nearest ancestor that has one (a missing key is reported at its parent)."""
        if key and path in self.keys:
            return self.keys[path]
        p = path
        while True:
            if p in self.values:
                return self.values[p]
            if not p:
                return None
            p = p[:-1]


def _pos(mark: yaml.Mark | None) -> Position:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc

    def issue(self, path: Path, mark: yaml.Mark | None, message: str) -> None:
        line, col = _pos(mark)
        self.doc.issues.append(PolicyIssue(self.doc.origin, line, col, keypath(path), message))

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.doc.values[path] = _pos(node.start_mark)
        if depth > 64:
            # Alias bombs and absurd nesting: no policy is this deep.
            self.issue(path, node.start_mark, "nesting too deep")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.issue(path, node.start_mark, f"cannot read value: {_problem(exc)}")
            return None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        try:
            self.loader.flatten_mapping(node)  # resolve "<<" merge keys
        except yaml.YAMLError as exc:
            self.issue(path, node.start_mark, f"bad merge key: {_problem(exc)}")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(path, key_node.start_mark, "a key must be a plain string")
                continue
            try:
                key = self.loader.construct_object(key_node)
            except yaml.YAMLError as exc:
                self.issue(path, key_node.start_mark, f"cannot read key: {_problem(exc)}")
                continue
            if not isinstance(key, str):
                # YAML 1.1 reads `on:`/`yes:` as booleans and `1:` as an int.
                key = key_node.value
            child = (*path, key)
            if key in out:
                self.issue(child, key_node.start_mark, f"duplicate key {key!r}")
                continue
            self.doc.keys[child] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, child, depth + 1)
        return out


def _char(value: object) -> str:
    return f"U+{value:04X}" if isinstance(value, int) else repr(value)


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
    return str(exc)


def parse_yaml(text: str, origin: str) -> Document:
    """Parse one YAML document.  Syntax errors become issues on the returned document."""
    doc = Document(data=None, origin=origin)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        doc.issues.append(
            PolicyIssue(
                origin,
                line,
                col,
                "(syntax)",
                f"character {_char(exc.character)} is not allowed in YAML",
            )
        )
        return doc
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _Builder(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark)
        message = _problem(exc)
        if "'{'" in message:
            message += ' (a template inside {...} must be quoted: "/x/{label}")'
        doc.issues.append(PolicyIssue(origin, line, col, "(syntax)", message))
    except yaml.YAMLError as exc:
        doc.issues.append(PolicyIssue(origin, 1, 1, "(syntax)", str(exc)))
    finally:
        loader.dispose()
    return doc
