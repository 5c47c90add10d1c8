"""The validator's vocabulary: one checker per kind of value, each reporting with a position.

A :class:`Checker` collects :class:`PolicyIssue`\\ s against the positions of a parsed
:class:`Document`; its methods check one value each (a boolean, seconds, a template, a glob
list, ...) and return the checked value, or a fallback after reporting.  The patterns come from
:mod:`nvme_agent.policy.shapes`, which the JSON Schema is generated from too.
"""

from __future__ import annotations

import difflib
import functools
import re
import signal as signal_module
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nvme_agent.policy.errors import PolicyIssue, Severity, keypath
from nvme_agent.policy.loader import Document, Path
from nvme_agent.policy.matchers import glob_problem
from nvme_agent.policy.shapes import (
    COUNT_MAX,
    ENV_NAME_PATTERN,
    FSTYPE_PATTERN,
    MODE_MAX,
    MODE_PATTERN,
    NSID_MAX,
    OPTION_PATTERN,
    PROPERTY_PATTERN,
    USER_NAME_PATTERN,
)
from nvme_agent.policy.templates import FIELDS, Template, TemplateError, compile_template

ENV_NAME = re.compile(ENV_NAME_PATTERN)
USER_NAME = re.compile(USER_NAME_PATTERN)
FSTYPE = re.compile(FSTYPE_PATTERN)
OPTION = re.compile(OPTION_PATTERN)
PROPERTY = re.compile(PROPERTY_PATTERN)
MODE = re.compile(MODE_PATTERN)
#: Mount options that change what mount does rather than how the filesystem behaves.
FORBIDDEN_OPTIONS = frozenset({"bind", "rbind", "move", "remount", "defaults"})


def kind_of(value: Any) -> str:
    """How a message names a wrong value: ``string 'x'``, ``a list``, ``boolean true``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


def canonical_signal(value: Any, report: Callable[[str], None]) -> str | None:
    """``HUP``/``sighup``/``SIGHUP``/``1`` -> ``SIGHUP``; None (after ``report``) if unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal_module.Signals(value).name
        except ValueError:
            report(f"unknown signal number {value}")
            return None
    if not isinstance(value, str):
        report(f"expected a signal name such as SIGTERM, got {kind_of(value)}")
        return None
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name in signal_module.Signals.__members__ and not name.startswith("SIG_"):
        return name
    report(f"unknown signal {value!r} (e.g. SIGTERM, SIGHUP, SIGUSR1)")
    return None


@functools.lru_cache(maxsize=4096)
def _template(text: str, allowed: frozenset[str]) -> Template:
    # Large policies repeat the same few templates; a Template is immutable, so share it.
    return compile_template(text, allowed)


@functools.cache
def _allowed(keys: tuple[str, ...]) -> frozenset[str]:
    return frozenset(keys)


class Checker:
    """Collects issues against a :class:`Document`'s positions.

    ``not_here``: why a template field that exists is not known where it was used (a
    field without an entry is reported as unknown).
    """

    not_here: Mapping[str, str] = {}

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[PolicyIssue] = list(doc.issues)

    def report(
        self, path: Path, message: str, *, key: bool = False, severity: Severity = "error"
    ) -> None:
        pos = self.doc.position(path, key=key)
        line, col = pos if pos is not None else (None, None)
        self.issues.append(
            PolicyIssue(self.doc.origin, line, col, keypath(path), message, severity)
        )

    def warn(self, path: Path, message: str) -> None:
        self.report(path, message, severity="warning")

    def mapping(self, value: Any, path: Path, what: str = "a mapping") -> dict[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.report(path, f"expected {what}, got {kind_of(value)}")
            return None
        return value

    def keys(
        self,
        mapping: dict[str, Any],
        path: Path,
        allowed: tuple[str, ...],
        required: Iterable[str] = (),
    ) -> None:
        known = _allowed(allowed)
        for k in mapping:
            if k not in known:
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.report(
                    (*path, k),
                    f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}",
                    key=True,
                )
        for k in required:
            if k not in mapping:
                self.report((*path, k), "required key missing")

    # The opt_* checkers take the mapping and the key, and build the key's path only to report
    # a problem: a large policy has thousands of keys that are absent, or right.

    def opt_bool(self, m: dict[str, Any], path: Path, key: str, default: bool) -> bool:
        value = m.get(key)
        return default if value is None else self.boolean(value, (*path, key), default)

    def opt_seconds(self, m: dict[str, Any], path: Path, key: str, default: float) -> float:
        value = m.get(key)
        return default if value is None else self.seconds(value, (*path, key), default)

    def opt_owner(self, m: dict[str, Any], path: Path, key: str) -> str | None:
        value = m.get(key)
        return None if value is None else self.owner(value, (*path, key))

    def opt_mode(self, m: dict[str, Any], path: Path, key: str) -> int | None:
        value = m.get(key)
        return None if value is None else self.mode(value, (*path, key))

    def opt_string(self, m: dict[str, Any], path: Path, key: str) -> str | None:
        value = m.get(key)
        return None if value is None else self.string(value, (*path, key))

    def opt_signal(self, m: dict[str, Any], path: Path, key: str, default: str) -> str:
        value = m.get(key)
        return default if value is None else self.signal(value, (*path, key), default)

    def boolean(self, value: Any, path: Path, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.report(path, f"expected true or false, got {kind_of(value)}")
            return default
        return value

    def seconds(self, value: Any, path: Path, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self.report(path, f"expected a positive number of seconds, got {kind_of(value)}")
            return default
        return float(value)

    def string(self, value: Any, path: Path, what: str = "a string") -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            quote = " (quote it)" if isinstance(value, int | float | bool) else ""
            self.report(path, f"expected {what}, got {kind_of(value)}{quote}")
            return None
        return value

    def template(self, value: Any, path: Path, allowed: frozenset[str] = FIELDS) -> Template | None:
        text = self.string(value, path, "a string template")
        if text is None:
            return None
        try:
            return _template(text, allowed)
        except TemplateError as exc:
            self.report(path, self._scoped(text, allowed) or str(exc))
            return None

    def _scoped(self, text: str, allowed: frozenset[str]) -> str | None:
        """Why ``text``, which uses a field not in ``allowed``, cannot have it here (None when
        it is wrong anywhere)."""
        try:
            fields = _template(text, FIELDS).fields
        except TemplateError:
            return None
        for name in sorted(fields - allowed):
            if name in self.not_here:
                return f"{{{name}}} is not known here: {self.not_here[name]}"
        return None

    def abspath(self, value: Any, path: Path, what: str = "an absolute path") -> str | None:
        text = self.string(value, path, what)
        if text is None:
            return None
        if not text.startswith("/"):
            self.report(path, f"{text!r} is a relative path; expected {what}")
            return None
        if "\0" in text:
            self.report(path, "a path cannot contain NUL")
            return None
        return text

    def signal(self, value: Any, path: Path, default: str) -> str:
        if value is None:
            return default
        return canonical_signal(value, lambda msg: self.report(path, msg)) or default

    def globs(self, value: Any, path: Path) -> tuple[str, ...] | None:
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            self.report(path, "expected a glob or a non-empty list of globs")
            return None
        out: list[str] = []
        for i, item in enumerate(items):
            p = (*path, i) if isinstance(value, list) else path
            text = self.string(item, p, "a glob string")
            if text is None:
                continue
            problem = glob_problem(text)
            if problem:
                self.report(p, f"bad glob: {problem}")
                continue
            out.append(text)
        return tuple(out) if len(out) == len(items) else None

    def nsids(self, raw: Any, path: Path) -> frozenset[int] | None:
        values = raw if isinstance(raw, list) else [raw]
        out: set[int] = set()
        bad = not values
        for i, v in enumerate(values):
            p = (*path, i) if isinstance(raw, list) else path
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= NSID_MAX:
                self.report(p, f"expected a namespace ID (1..{NSID_MAX}), got {kind_of(v)}")
                bad = True
            else:
                out.add(v)
        if not values:
            self.report(path, "expected an nsid or a non-empty list of them")
        return None if bad else frozenset(out)

    def count(self, raw: Any, path: Path) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= COUNT_MAX:
            self.report(path, f"expected a whole number (0..{COUNT_MAX}), got {kind_of(raw)}")
            return None
        return raw

    def filesystems(self, value: Any, path: Path, default: tuple[str, ...]) -> tuple[str, ...]:
        if value is None:
            return default
        if not isinstance(value, list) or not value:
            self.report(
                path, f"expected a non-empty list of filesystem types, got {kind_of(value)}"
            )
            return default
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.fstype(item, (*path, i))
            if text is not None:
                out.append(text)
        return tuple(out) if len(out) == len(value) else default

    def fstype(self, value: Any, path: Path) -> str | None:
        text = self.string(value, path, "a filesystem type")
        if text is not None and not FSTYPE.match(text):
            self.report(path, f"bad filesystem type {text!r}")
            return None
        return text

    def options(self, value: Any, path: Path) -> tuple[str, ...] | None:
        if isinstance(value, str):
            items: list[Any] = [o.strip() for o in value.split(",") if o.strip()]
            located = [path] * len(items)
        elif isinstance(value, list):
            items = value
            located = [(*path, i) for i in range(len(value))]
        else:
            self.report(path, f"expected a list of mount options, got {kind_of(value)}")
            return None
        out = [self.option(item, p) for item, p in zip(items, located, strict=True)]
        checked = tuple(o for o in out if o is not None)
        return checked if len(checked) == len(out) else None

    def option(self, item: Any, path: Path) -> str | None:
        text = self.string(item, path, "a mount option")
        if text is None:
            return None
        if not OPTION.match(text):
            self.report(path, f"bad mount option {text!r} (no spaces or commas)")
            return None
        if text.split("=", 1)[0] in FORBIDDEN_OPTIONS:
            self.report(path, f"mount option {text!r} is not allowed here")
            return None
        return text

    def mode(self, value: Any, path: Path) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and MODE.match(value):
            return int(value, 8)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MODE_MAX:
            # YAML 1.1 reads an unquoted 0750 as octal already.
            return value
        self.report(
            path,
            f"expected an octal mode such as '0750' (permission and sticky bits; setuid and "
            f"setgid are refused), got {kind_of(value)}",
        )
        return None

    def owner(self, value: Any, path: Path) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and USER_NAME.match(value):
            return value
        self.report(path, f"expected a user/group name or number, got {kind_of(value)}")
        return None

    def properties(self, raw: Any, path: Path) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
        props = self.mapping(raw, path, "a mapping of udev property name to glob")
        out: list[tuple[str, tuple[str, ...]]] = []
        ok = props is not None
        for name, pat in (props or {}).items():
            if not PROPERTY.match(name):
                self.report((*path, name), f"bad udev property name {name!r}", key=True)
                ok = False
                continue
            pats = self.globs(pat, (*path, name))
            if pats is None:
                ok = False
                continue
            out.append((name, pats))
        return tuple(out) if ok else None

    def env_name(self, name: str, path: Path) -> bool:
        if ENV_NAME.match(name):
            return True
        self.report(path, f"bad environment variable name {name!r}", key=True)
        return False
