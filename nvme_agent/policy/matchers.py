"""Rule conditions, compiled once into small matcher objects.

Every matcher answers ``test(facts) -> (matched, reason)``; the reason is an operator-facing
phrase used by ``nvme-agent explain`` ("fs_label 'data' does not match 'scratch-*'").
Strings are matched with :func:`fnmatch.fnmatchcase` globs; hexadecimal identifiers (uuid,
nguid, eui64, wwid, fs_uuid) case-insensitively, since tools disagree on their case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from nvme_agent.policy.facts import Facts
from nvme_agent.policy.units import format_size

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


class Matcher:
    """Base class: a condition on :class:`Facts`."""

    def test(self, facts: Facts) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError


def _pats(patterns: tuple[str, ...]) -> str:
    return repr(patterns[0]) if len(patterns) == 1 else "any of " + repr(list(patterns))


@dataclass(frozen=True, slots=True)
class Glob(Matcher):
    """``key`` (a string fact) matches one of ``patterns``."""

    key: str
    get: Callable[[Facts], str | None]
    patterns: tuple[str, ...]
    casefold: bool = False

    def test(self, facts: Facts) -> Verdict:
        value = self.get(facts)
        if value is None:
            return False, f"{self.key} is absent (wanted {_pats(self.patterns)})"
        probe = value.lower() if self.casefold else value
        for p in self.patterns:
            if fnmatchcase(probe, p.lower() if self.casefold else p):
                return True, f"{self.key} {value!r} matches {p!r}"
        return False, f"{self.key} {value!r} does not match {_pats(self.patterns)}"


@dataclass(frozen=True, slots=True)
class Nsid(Matcher):
    """The namespace ID is one of ``values``."""

    values: frozenset[int]

    def test(self, facts: Facts) -> Verdict:
        want = ", ".join(str(v) for v in sorted(self.values))
        if facts.nsid in self.values:
            return True, f"nsid {facts.nsid} is in [{want}]"
        return False, f"nsid {facts.nsid} is not in [{want}]"


@dataclass(frozen=True, slots=True)
class Flag(Matcher):
    """A boolean fact equals ``expected``."""

    key: str
    get: Callable[[Facts], bool]
    expected: bool

    def test(self, facts: Facts) -> Verdict:
        value = self.get(facts)
        word = "true" if value else "false"
        if value == self.expected:
            return True, f"{self.key} is {word}"
        return False, f"{self.key} is {word}, wanted {'true' if self.expected else 'false'}"


@dataclass(frozen=True, slots=True)
class Size(Matcher):
    """The target's size is within [minimum, maximum] (inclusive)."""

    minimum: int | None
    maximum: int | None

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

    def test(self, facts: Facts) -> Verdict:
        value = facts.properties.get(self.name)
        if value is None:
            return False, f"property {self.name} is absent"
        for p in self.patterns:
            if fnmatchcase(value, p):
                return True, f"property {self.name} {value!r} matches {p!r}"
        return False, f"property {self.name} {value!r} does not match {_pats(self.patterns)}"


@dataclass(frozen=True, slots=True)
class All(Matcher):
    """Every condition holds (a ``match:`` mapping).  Empty: matches everything."""

    items: tuple[Matcher, ...]

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

    def test(self, facts: Facts) -> Verdict:
        ok, reason = self.inner.test(facts)
        return (not ok), f"not: {reason}"


#: String facts that ``match:`` accepts, with their getter and case handling.
GLOB_KEYS: dict[str, tuple[Callable[[Facts], str | None], bool]] = {
    "ctrl": (lambda f: f.ctrl, False),
    "serial": (lambda f: f.serial, False),
    "model": (lambda f: f.model, False),
    "subsysnqn": (lambda f: f.subsysnqn, False),
    "transport": (lambda f: f.transport, False),
    "uuid": (lambda f: f.uuid, True),
    "nguid": (lambda f: f.nguid, True),
    "eui64": (lambda f: f.eui64, True),
    "wwid": (lambda f: f.wwid, True),
    "fs_type": (lambda f: f.fs_type, False),
    "fs_label": (lambda f: f.fs_label, False),
    "fs_uuid": (lambda f: f.fs_uuid, True),
    "partlabel": (lambda f: f.partlabel, False),
}

#: Boolean facts.
FLAG_KEYS: dict[str, Callable[[Facts], bool]] = {
    "partition": lambda f: f.partition,
    "identity_weak": lambda f: f.identity_weak,
}
