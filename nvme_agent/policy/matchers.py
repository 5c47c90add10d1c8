"""Rule conditions, compiled once into small matcher objects.

Every matcher answers two questions.  ``matches(facts) -> bool`` is what ``decide`` asks, for
every rule until one matches: it builds no text, and globs are regular expressions compiled at
load time.  ``test(facts) -> (matched, reason)`` is what ``nvme-agent explain`` asks: the reason
is an operator-facing phrase ("fs_label 'data' does not match 'scratch-*'").  Strings are
matched like :func:`fnmatch.fnmatchcase`; hexadecimal identifiers (uuid, nguid, eui64, wwid,
fs_uuid) case-insensitively, since tools disagree on their case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import TYPE_CHECKING, Any

from nvme_agent.policy.facts import Facts
from nvme_agent.policy.shapes import Shape
from nvme_agent.policy.units import format_size

if TYPE_CHECKING:
    from nvme_agent.policy.spec import KeyInfo

Verdict = tuple[bool, str]


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable glob (an unterminated ``[`` class), or None."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a ']' first in the class is literal
            close = pattern.find("]", j)
            if close < 0:
                return f"unterminated character class '[' at offset {i} in {pattern!r}"
            i = close
        i += 1
    return None


def compile_globs(patterns: Sequence[str], casefold: bool = False) -> Callable[[str], Any]:
    """One regular expression's ``match`` for all of ``patterns`` (fnmatchcase semantics;
    with ``casefold`` the caller lower-cases the value)."""
    pats = [p.lower() for p in patterns] if casefold else list(patterns)
    return re.compile("|".join(f"(?:{translate(p)})" for p in pats)).match


class Matcher:
    """Base class: a condition on :class:`Facts`."""

    def matches(self, facts: Facts) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def test(self, facts: Facts) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError


def _pats(patterns: tuple[str, ...]) -> str:
    return repr(patterns[0]) if len(patterns) == 1 else "any of " + repr(list(patterns))


@dataclass(frozen=True, slots=True)
class Glob(Matcher):
    """The string fact ``key`` (a :class:`Facts` attribute) matches one of ``patterns``."""

    key: str
    patterns: tuple[str, ...]
    casefold: bool = False
    _match: Callable[[str], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", compile_globs(self.patterns, self.casefold))

    def matches(self, facts: Facts) -> bool:
        value = getattr(facts, self.key)
        if value is None:
            return False
        return self._match(value.lower() if self.casefold else value) is not None

    def test(self, facts: Facts) -> Verdict:
        value = getattr(facts, self.key)
        if value is None:
            return False, f"{self.key} is absent (wanted {_pats(self.patterns)})"
        probe = value.lower() if self.casefold else value
        for p in self.patterns:
            if compile_globs((p,), self.casefold)(probe) is not None:
                return True, f"{self.key} {value!r} matches {p!r}"
        return False, f"{self.key} {value!r} does not match {_pats(self.patterns)}"


@dataclass(frozen=True, slots=True)
class Nsid(Matcher):
    """The namespace ID is one of ``values``."""

    values: frozenset[int]

    def matches(self, facts: Facts) -> bool:
        return facts.nsid in self.values

    def test(self, facts: Facts) -> Verdict:
        want = ", ".join(str(v) for v in sorted(self.values))
        if facts.nsid in self.values:
            return True, f"nsid {facts.nsid} is in [{want}]"
        return False, f"nsid {facts.nsid} is not in [{want}]"


@dataclass(frozen=True, slots=True)
class Flag(Matcher):
    """The boolean fact ``key`` (a :class:`Facts` attribute) equals ``expected``."""

    key: str
    expected: bool

    def matches(self, facts: Facts) -> bool:
        return bool(getattr(facts, self.key)) == self.expected

    def test(self, facts: Facts) -> Verdict:
        value = bool(getattr(facts, self.key))
        word = "true" if value else "false"
        if value == self.expected:
            return True, f"{self.key} is {word}"
        return False, f"{self.key} is {word}, wanted {'true' if self.expected else 'false'}"


@dataclass(frozen=True, slots=True)
class Size(Matcher):
    """The target's size is within [minimum, maximum] (inclusive)."""

    minimum: int | None
    maximum: int | None

    def matches(self, facts: Facts) -> bool:
        size = facts.size
        if size is None:
            return False
        return not (
            (self.minimum is not None and size < self.minimum)
            or (self.maximum is not None and size > self.maximum)
        )

    def test(self, facts: Facts) -> Verdict:
        if facts.size is None:
            return False, "size is unknown"
        size = format_size(facts.size)
        if self.minimum is not None and facts.size < self.minimum:
            return False, f"size {size} is below size_min {format_size(self.minimum)}"
        if self.maximum is not None and facts.size > self.maximum:
            return False, f"size {size} is above size_max {format_size(self.maximum)}"
        return True, f"size {size} is within bounds"


@dataclass(frozen=True, slots=True)
class Property(Matcher):
    """The udev property ``name`` of the target matches one of ``patterns``."""

    name: str
    patterns: tuple[str, ...]
    _match: Callable[[str], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", compile_globs(self.patterns))

    def matches(self, facts: Facts) -> bool:
        value = facts.properties.get(self.name)
        return value is not None and self._match(value) is not None

    def test(self, facts: Facts) -> Verdict:
        value = facts.properties.get(self.name)
        if value is None:
            return False, f"property {self.name} is absent"
        for p in self.patterns:
            if compile_globs((p,))(value) is not None:
                return True, f"property {self.name} {value!r} matches {p!r}"
        return False, f"property {self.name} {value!r} does not match {_pats(self.patterns)}"


@dataclass(frozen=True, slots=True)
class All(Matcher):
    """Every condition holds (a ``match:`` mapping).  Empty: matches everything."""

    items: tuple[Matcher, ...]

    def matches(self, facts: Facts) -> bool:
        # A loop, not all(<generator>): a generator per rule tried costs 3x (decide's hot path).
        for m in self.items:  # noqa: SIM110
            if not m.matches(facts):
                return False
        return True

    def test(self, facts: Facts) -> Verdict:
        if not self.items:
            return True, "matches every device"
        results = [m.test(facts) for m in self.items]
        failed = [r for ok, r in results if not ok]
        if failed:
            return False, "; ".join(failed)
        return True, "; ".join(r for _, r in results)


@dataclass(frozen=True, slots=True)
class Any_(Matcher):
    """At least one alternative holds (``any: [...]``)."""

    items: tuple[Matcher, ...]

    def matches(self, facts: Facts) -> bool:
        for m in self.items:  # noqa: SIM110  (as in All.matches)
            if m.matches(facts):
                return True
        return False

    def test(self, facts: Facts) -> Verdict:
        reasons: list[str] = []
        for m in self.items:
            ok, reason = m.test(facts)
            if ok:
                return True, f"any: {reason}"
            reasons.append(reason)
        return False, "none of any: (" + " | ".join(reasons) + ")"


@dataclass(frozen=True, slots=True)
class Not(Matcher):
    """The inner condition does not hold (``not: {...}``)."""

    inner: Matcher

    def matches(self, facts: Facts) -> bool:
        return not self.inner.matches(facts)

    def test(self, facts: Facts) -> Verdict:
        ok, reason = self.inner.test(facts)
        return (not ok), f"not: {reason}"


def compile_match(match: Any, keys: Sequence[KeyInfo]) -> Matcher:
    """The matcher of a :class:`~nvme_agent.policy.spec.Match` value whose keys are ``keys``.

    One condition compiles to itself (no ``All`` around it): what ``decide`` runs per rule is
    as short as the rule.
    """
    items: list[Matcher] = []
    bounds: dict[str, int] = {}
    for k in keys:
        value = getattr(match, k.attr)
        if value is None or value == ():
            continue
        if k.shape is Shape.GLOBS:
            items.append(Glob(k.name, value, k.casefold))
        elif k.shape is Shape.BOOL:
            items.append(Flag(k.name, value))
        elif k.shape is Shape.NSIDS:
            items.append(Nsid(value))
        elif k.shape is Shape.PROPERTIES:
            items.extend(Property(name, pats) for name, pats in value)
        elif k.shape is Shape.MATCH_LIST:
            items.append(Any_(tuple(compile_match(m, keys) for m in value)))
        elif k.shape is Shape.MATCH:
            items.append(Not(compile_match(value, keys)))
        elif k.shape is Shape.SIZE:
            bounds[k.name] = value
    if bounds:
        items.append(Size(bounds.get("size_min"), bounds.get("size_max")))
    return items[0] if len(items) == 1 else All(tuple(items))
