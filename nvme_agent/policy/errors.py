"""Policy errors: every problem found in a policy file, with where it is and what it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
PathPart = str | int


def keypath(path: Sequence[PathPart]) -> str:
    """``("rules", 2, "on_add", 0, "mount", "path")`` -> ``rules[2].on_add[0].mount.path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy: where (file, 1-based line and column, key path) and what.

    ``line`` and ``column`` are ``None`` when the policy did not come from YAML text (a mapping
    embedded in a scenario file, for example).
    """

    file: str
    line: int | None
    column: int | None
    keypath: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        prefix = "" if self.severity == "error" else "warning: "
        return f"{where}: {prefix}{self.keypath}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "policy-issue",
            "nsid": None,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "keypath": self.keypath,
            "message": self.message,
        }


class PolicyError(Exception):
    """A policy that cannot be used.  ``issues`` lists every error (and warning) found."""

    def __init__(self, issues: Iterable[PolicyIssue]) -> None:
        self.issues: list[PolicyIssue] = list(issues)
        super().__init__(self._text())

    @property
    def errors(self) -> list[PolicyIssue]:
        return [i for i in self.issues if i.severity == "error"]

    def _text(self) -> str:
        return "\n".join(str(i) for i in self.issues) or "invalid policy"

    def __str__(self) -> str:
        return self._text()
