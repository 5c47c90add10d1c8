"""Rule conditions, compiled once into small matcher objects.

Every matcher answers two questions.  ``holds(facts) -> bool`` is what ``decide`` asks, for
every rule until one matches: one closure built at load time, which builds no text (most globs
become string comparisons, the others regular expressions compiled once).
``test(facts) -> (matched, reason)`` is what ``nvme-agent explain`` asks: the reason is an
operator-facing phrase ("fs_label 'data' does not match 'scratch-*'").  Strings are matched
like :func:`fnmatch.fnmatchcase`; hexadecimal identifiers (uuid, nguid, eui64, wwid, fs_uuid)
case-insensitively, since tools disagree on their case.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import TYPE_CHECKING, Any

from nvme_agent.policy.facts import MULTI_VALUED, Facts
from nvme_agent.policy.shapes import Shape
from nvme_agent.policy.units import format_size

if TYPE_CHECKING:
    from nvme_agent.policy.spec import KeyInfo

Verdict = tuple[bool, str]


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable glob (an unterminated ``[`` class), or None."""
    if "[" not in pattern:
        return None
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


_GLOB_CHARS = frozenset("*?[")


def _simple(pattern: str) -> tuple[str, str] | None:
    """("exact"|"prefix"|"suffix"|"contains"|"all", text) for a pattern whose only glob
    characters are leading or trailing stars; None for anything a regex must do."""
    if not _GLOB_CHARS.intersection(pattern):
        return "exact", pattern
    if "?" in pattern or "[" in pattern:
        return None
    if pattern.strip("*") == "":
        return "all", ""
    inner = pattern[1:-1] if pattern.startswith("*") and pattern.endswith("*") else None
    if inner is not None and "*" not in inner:
        return "contains", inner
    if pattern.endswith("*") and "*" not in pattern[:-1]:
        return "prefix", pattern[:-1]
    if pattern.startswith("*") and "*" not in pattern[1:]:
        return "suffix", pattern[1:]
    return None


def _contains(part: str) -> Callable[[str], bool]:
    return lambda value: part in value


def _any_of(tests: list[Callable[[str], bool]]) -> Callable[[str], bool]:
    def test(value: str) -> bool:
        for t in tests:  # noqa: SIM110  (as in All.matches)
            if t(value):
                return True
        return False

    return test


@functools.lru_cache(maxsize=8192)
def compile_globs(patterns: tuple[str, ...], casefold: bool = False) -> Callable[[str], bool]:
    """A test of a value against ``patterns`` with :func:`fnmatch.fnmatchcase`'s meaning (with
    ``casefold``, the caller lower-cases the value).

    Most policy globs are a literal or a literal with a leading or trailing star: those become
    string comparisons, the rest one regular expression.  Cached: large policies repeat their
    globs (``fs_type: [ext4, xfs]``), and compiling a regex costs more than deciding.
    """
    pats = [p.lower() for p in patterns] if casefold else list(patterns)
    exact: set[str] = set()
    starts: list[str] = []
    ends: list[str] = []
    inside: list[str] = []
    rest: list[str] = []
    for p in pats:
        simple = _simple(p)
        if simple is None:
            rest.append(p)
        elif simple[0] == "all":
            return lambda _value: True
        elif simple[0] == "exact":
            exact.add(simple[1])
        elif simple[0] == "prefix":
            starts.append(simple[1])
        elif simple[0] == "suffix":
            ends.append(simple[1])
        else:
            inside.append(simple[1])
    tests: list[Callable[[str], bool]] = []
    if len(exact) == 1:
        only = next(iter(exact))
        tests.append(lambda value: value == only)
    elif exact:
        tests.append(frozenset(exact).__contains__)
    if starts:
        prefixes = tuple(starts)
        tests.append(lambda value: value.startswith(prefixes))
    if ends:
        suffixes = tuple(ends)
        tests.append(lambda value: value.endswith(suffixes))
    tests += [_contains(part) for part in inside]
    if rest:
        match = re.compile("|".join(f"(?:{translate(p)})" for p in rest)).match
        tests.append(lambda value: match(value) is not None)
    return tests[0] if len(tests) == 1 else _any_of(tests)


Test = Callable[[Facts], bool]


class Matcher:
    """Base class: a condition on :class:`Facts`.

    ``holds`` is the verdict as one closure, built when the matcher is: what ``decide`` calls
    for every rule it tries, so it costs one Python frame per condition evaluated.
    """

    holds: Test

    def matches(self, facts: Facts) -> bool:
        return self.holds(facts)

    def test(self, facts: Facts) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError


def _pats(patterns: tuple[str, ...]) -> str:
    return repr(patterns[0]) if len(patterns) == 1 else "any of " + repr(list(patterns))


def _fact_glob(key: str, patterns: tuple[str, ...], casefold: bool) -> Test:
    """The verdict of a :class:`Glob`; a single literal or prefix glob gets a closure of its
    own (the shape of most rules), the rest goes through :func:`compile_globs`."""
    get = operator.attrgetter(key)
    simple = _simple(patterns[0]) if len(patterns) == 1 and not casefold else None
    if simple is not None:
        kind, text = simple
        if kind == "exact":
            return lambda facts: get(facts) == text
        if kind == "prefix":
            return lambda facts: (v := get(facts)) is not None and v.startswith(text)
    match = compile_globs(patterns, casefold)
    if casefold:
        return lambda facts: (v := get(facts)) is not None and match(v.lower())
    return lambda facts: (v := get(facts)) is not None and match(v)


def _set(matcher: Matcher, holds: Test) -> None:
    object.__setattr__(matcher, "holds", holds)


@dataclass(frozen=True, slots=True)
class Glob(Matcher):
    """The string fact ``key`` (a :class:`Facts` attribute) matches one of ``patterns``."""

    key: str
    patterns: tuple[str, ...]
    casefold: bool = False
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, _fact_glob(self.key, self.patterns, self.casefold))

    def test(self, facts: Facts) -> Verdict:
        value = getattr(facts, self.key)
        if value is None:
            return False, f"{self.key} is absent (wanted {_pats(self.patterns)})"
        probe = value.lower() if self.casefold else value
        for p in self.patterns:
            if compile_globs((p,), self.casefold)(probe):
                return True, f"{self.key} {value!r} matches {p!r}"
        return False, f"{self.key} {value!r} does not match {_pats(self.patterns)}"


@dataclass(frozen=True, slots=True)
class Nsid(Matcher):
    """The namespace ID is one of ``values``."""

    values: frozenset[int]
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = self.values
        _set(self, lambda facts: facts.nsid in values)

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
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get = operator.attrgetter(self.key)
        if self.expected:
            _set(self, lambda facts: bool(get(facts)))
        else:
            _set(self, lambda facts: not get(facts))

    def test(self, facts: Facts) -> Verdict:
        value = bool(getattr(facts, self.key))
        word = "true" if value else "false"
        if value == self.expected:
            return True, f"{self.key} is {word}"
        return False, f"{self.key} is {word}, wanted {'true' if self.expected else 'false'}"


@dataclass(frozen=True, slots=True)
class AnyGlob(Matcher):
    """One of the values of the multi-valued fact ``key`` (a tuple of strings, such as the
    transports of a namespace's paths) matches one of ``patterns``; ``name`` is the key of
    the policy, as explanations say it."""

    name: str
    key: str
    patterns: tuple[str, ...]
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get = operator.attrgetter(self.key)
        match = compile_globs(self.patterns)

        def holds(facts: Facts) -> bool:
            for value in get(facts):  # noqa: SIM110  (as in All.matches)
                if match(value):
                    return True
            return False

        _set(self, holds)

    def test(self, facts: Facts) -> Verdict:
        values: tuple[str, ...] = getattr(facts, self.key)
        if not values:
            return False, f"{self.name} is absent (wanted {_pats(self.patterns)})"
        for value in values:
            for p in self.patterns:
                if compile_globs((p,))(value):
                    return True, f"{self.name} {value!r} matches {p!r}"
        shown = repr(values[0]) if len(values) == 1 else f"any of {list(values)!r}"
        return False, f"{self.name} {shown} does not match {_pats(self.patterns)}"


def _quantity(fact: str, value: int) -> str:
    """How an explanation says the value of a ranged fact."""
    if fact == "size":
        return f"size {format_size(value)}"
    return f"{value} live path{'' if value == 1 else 's'}"


def _bound(fact: str, value: int) -> str:
    return format_size(value) if fact == "size" else str(value)


@dataclass(frozen=True, slots=True)
class Range(Matcher):
    """The integer fact ``fact`` (``size``, ``paths_live``) is within [minimum, maximum]
    (inclusive); ``low``/``high`` name the keys that set the bounds."""

    fact: str
    low: str
    high: str
    minimum: int | None
    maximum: int | None
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get = operator.attrgetter(self.fact)
        lo = -1 if self.minimum is None else self.minimum
        hi = self.maximum

        def holds(facts: Facts) -> bool:
            value = get(facts)
            return value is not None and value >= lo and (hi is None or value <= hi)

        _set(self, holds)

    def test(self, facts: Facts) -> Verdict:
        value: int | None = getattr(facts, self.fact)
        if value is None:
            return False, f"{self.fact} is unknown"
        said = _quantity(self.fact, value)
        if self.minimum is not None and value < self.minimum:
            return False, f"{said} is below {self.low} {_bound(self.fact, self.minimum)}"
        if self.maximum is not None and value > self.maximum:
            return False, f"{said} is above {self.high} {_bound(self.fact, self.maximum)}"
        return True, f"{said} is within bounds"


@dataclass(frozen=True, slots=True)
class Property(Matcher):
    """The udev property ``name`` of the target matches one of ``patterns``."""

    name: str
    patterns: tuple[str, ...]
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name, match = self.name, compile_globs(self.patterns)
        _set(self, lambda facts: (v := facts.properties.get(name)) is not None and match(v))

    def test(self, facts: Facts) -> Verdict:
        value = facts.properties.get(self.name)
        if value is None:
            return False, f"property {self.name} is absent"
        for p in self.patterns:
            if compile_globs((p,))(value):
                return True, f"property {self.name} {value!r} matches {p!r}"
        return False, f"property {self.name} {value!r} does not match {_pats(self.patterns)}"


def _all(tests: tuple[Test, ...]) -> Test:
    # Unrolled for the usual two or three conditions of a rule: no loop, no generator.
    if not tests:
        return lambda _facts: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda facts: a(facts) and b(facts)
    if len(tests) == 3:
        a, b, c = tests
        return lambda facts: a(facts) and b(facts) and c(facts)

    def holds(facts: Facts) -> bool:
        for t in tests:  # noqa: SIM110  (a generator per rule tried would cost 3x)
            if not t(facts):
                return False
        return True

    return holds


@dataclass(frozen=True, slots=True)
class All(Matcher):
    """Every condition holds (a ``match:`` mapping).  Empty: matches everything."""

    items: tuple[Matcher, ...]
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, _all(tuple(m.holds for m in self.items)))

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
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tests = tuple(m.holds for m in self.items)

        def holds(facts: Facts) -> bool:
            for t in tests:  # noqa: SIM110  (as in _all)
                if t(facts):
                    return True
            return False

        _set(self, holds)

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
    holds: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        inner = self.inner.holds
        _set(self, lambda facts: not inner(facts))

    def test(self, facts: Facts) -> Verdict:
        ok, reason = self.inner.test(facts)
        return (not ok), f"not: {reason}"


#: Shapes of the bounds of a range: ``size_min`` and ``size_max`` make one :class:`Range`.
_RANGED = frozenset({Shape.SIZE, Shape.COUNT})


def _ranges(bounds: list[tuple[KeyInfo, int]]) -> list[Matcher]:
    """One :class:`Range` per fact that ``bounds`` (keys ending in _min or _max) bound."""
    by_fact: dict[str, list[Any]] = {}  # fact -> [low key, high key, minimum, maximum]
    for k, value in bounds:
        bound = by_fact.setdefault(k.fact, [f"{k.fact}_min", f"{k.fact}_max", None, None])
        end = 0 if k.name.endswith("_min") else 1
        bound[end], bound[2 + end] = k.name, value
    return [Range(fact, low, high, lo, hi) for fact, (low, high, lo, hi) in by_fact.items()]


def _condition(k: KeyInfo, value: Any, keys: Sequence[KeyInfo]) -> list[Matcher]:
    """The matchers of one given condition (ranges aside)."""
    if k.shape is Shape.GLOBS:
        if k.fact in MULTI_VALUED:
            return [AnyGlob(k.name, k.fact, value)]
        return [Glob(k.fact, value, k.casefold)]
    if k.shape is Shape.BOOL:
        return [Flag(k.fact, value)]
    if k.shape is Shape.NSIDS:
        return [Nsid(value)]
    if k.shape is Shape.PROPERTIES:
        return [Property(name, pats) for name, pats in value]
    if k.shape is Shape.MATCH_LIST:
        return [Any_(tuple(compile_match(m, keys) for m in value))]
    if k.shape is Shape.MATCH:
        return [Not(compile_match(value, keys))]
    return []


def compile_match(match: Any, keys: Sequence[KeyInfo]) -> Matcher:
    """The matcher of a :class:`~nvme_agent.policy.spec.Match` value whose keys are ``keys``.

    One condition compiles to itself (no ``All`` around it): what ``decide`` runs per rule is
    as short as the rule.
    """
    items: list[Matcher] = []
    bounds: list[tuple[KeyInfo, int]] = []
    for k in keys:
        value = getattr(match, k.attr)
        if value is None or value == ():
            continue
        if k.shape in _RANGED:
            bounds.append((k, value))
        else:
            items.extend(_condition(k, value, keys))
    if bounds:
        items.extend(_ranges(bounds))
    return items[0] if len(items) == 1 else All(tuple(items))
