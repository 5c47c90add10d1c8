"""A parsed YAML document: plain data, and where each value and key came from.

Positions are what make an error message useful (``policy.yaml:12:9: rules[2].match.nsid:
...``), but they are asked for rarely: once per rule (its line) and once per problem.  So the
loader does not build a path for each of the tens of thousands of nodes of a large policy; it
keeps a tree of source marks beside the data (:data:`MarkTree`), and :meth:`Document.position`
follows a path down that tree when asked.  The flat ``values`` and ``keys`` dicts (path ->
(line, column)) are built from the tree on first use, for code that slices them (scenario files
embed a policy and validate it with their own positions).
"""

from __future__ import annotations

from typing import Any

from nvme_agent.policy.errors import PathPart, PolicyIssue

Path = tuple[PathPart, ...]
Position = tuple[int, int]
#: The marks of a collection's children, parallel to the data: for a mapping, key -> entry;
#: for a sequence, a list of entries.  An entry is a packed position (:func:`pack`; for a
#: mapping, the key's shifted left by 64 bits, or-ed with the value's), or (packed position,
#: the child's own tree) for a child that is itself a collection.  Plain ints, because a large
#: policy has tens of thousands of nodes and objects the garbage collector must track are what
#: makes loading slow.
MarkTree = dict[str, Any] | list[Any]
_LOW = (1 << 64) - 1


def pack(mark: Any) -> int:
    """A YAML mark's 0-based line and column in one int."""
    return int(mark.line) << 32 | int(mark.column)


def unpack(packed: int) -> Position:
    """1-based (line, column) of a :func:`pack` ed mark."""
    return ((packed >> 32) + 1, (packed & 0xFFFFFFFF) + 1)


def position_of(mark: Any) -> Position:
    """1-based (line, column) of a YAML mark."""
    return (mark.line + 1, mark.column + 1)


class Document:
    """A parsed policy (or scenario) file: the data, and 1-based (line, column) of its values
    and keys by path.

    Built either by the loader (``root``: the root's mark and :data:`MarkTree`) or from flat
    ``values`` and ``keys`` dicts (a policy embedded in another document).
    """

    __slots__ = ("_keys", "_values", "data", "issues", "origin", "root")

    def __init__(
        self,
        data: Any,
        origin: str,
        values: dict[Path, Position] | None = None,
        keys: dict[Path, Position] | None = None,
        issues: list[PolicyIssue] | None = None,
        root: tuple[int, MarkTree | None] | None = None,
    ) -> None:
        self.data = data
        self.origin = origin
        self.issues: list[PolicyIssue] = [] if issues is None else issues
        self.root = root
        self._values = values
        self._keys = keys

    @property
    def values(self) -> dict[Path, Position]:
        """Position of every value the text has, by path."""
        if self._values is None:
            self._flatten()
        assert self._values is not None
        return self._values

    @property
    def keys(self) -> dict[Path, Position]:
        """Position of every mapping key the text has, by the path of its value."""
        if self._keys is None:
            self._flatten()
        assert self._keys is not None
        return self._keys

    def position(self, path: Path, *, key: bool = False) -> Position | None:
        """Where ``path`` is: the key's position when ``key``; else the value's, falling back
        to the nearest ancestor that has one (a missing key is reported at its parent, a value
        inside an alias at the alias)."""
        if self.root is None or self._values is not None:
            return self._flat_position(path, key)
        here, tree = self.root
        for i, part in enumerate(path):
            found = _child(tree, part)
            if found is None:
                break
            key_at, here, tree = found
            if key and key_at is not None and i == len(path) - 1:
                return unpack(key_at)
        return unpack(here)

    def _flat_position(self, path: Path, key: bool) -> Position | None:
        values, keys = self.values, self.keys
        if key and path in keys:
            return keys[path]
        p = path
        while True:
            if p in values:
                return values[p]
            if not p:
                return None
            p = p[:-1]

    def _flatten(self) -> None:
        values: dict[Path, Position] = {}
        keys: dict[Path, Position] = {}
        if self.root is not None:
            here, tree = self.root
            values[()] = unpack(here)
            _flatten(tree, (), values, keys)
        self._values, self._keys = values, keys


def _entry(entry: Any) -> tuple[int, MarkTree | None]:
    return entry if isinstance(entry, tuple) else (entry, None)


def _child(tree: MarkTree | None, part: PathPart) -> tuple[int | None, int, MarkTree | None] | None:
    """(packed key position or None, packed value position, subtree) of ``part``, or None."""
    if isinstance(tree, dict):
        if not isinstance(part, str) or part not in tree:
            return None
        both, sub = _entry(tree[part])
        return both >> 64, both & _LOW, sub
    if isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree):
        here, sub = _entry(tree[part])
        return None, here, sub
    return None


def _flatten(
    tree: MarkTree | None, path: Path, values: dict[Path, Position], keys: dict[Path, Position]
) -> None:
    parts: list[PathPart] = list(tree) if isinstance(tree, dict) else list(range(len(tree or ())))
    for k in parts:
        child = (*path, k)
        found = _child(tree, k)
        assert found is not None
        key_at, here, sub = found
        if key_at is not None:
            keys[child] = unpack(key_at)
        values[child] = unpack(here)
        _flatten(sub, child, values, keys)
