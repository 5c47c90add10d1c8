"""Figures, their statistics, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p99, min and max of a sample (empty: n = 0 only)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


@dataclass
class Figure:
    """One row of the table: a measurement against a baseline of the same run."""

    name: str
    value: float | None
    unit: str
    baseline: str = "-"
    baseline_value: float | None = None
    target: str = "-"
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Table:
    """A growth table: one row per size, one column per variant."""

    name: str
    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, float]]
    unit: str
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self, command: str, quick: bool) -> dict[str, Any]:
        return {
            "command": command,
            "quick": quick,
            "machine": machine(),
            "figures": [f.to_dict() for f in self.figures],
            "tables": [asdict(t) for t in self.tables],
            "skipped": self.skipped,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report as :meth:`to_dict` wrote it (the figures' ``ratio`` is derived again)."""
        figures = [Figure(**{k: v for k, v in f.items() if k != "ratio"}) for f in data["figures"]]
        return cls(
            figures=figures,
            tables=[Table(**t) for t in data["tables"]],
            skipped=dict(data.get("skipped", {})),
            notes=dict(data.get("notes", {})),
        )

    def write_json(self, path: Path, command: str, quick: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(command, quick), indent=2) + "\n")

    def render(self) -> str:
        lines = ["| figure | measured | baseline (same run) | ratio | target | met |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for f in self.figures:
            base = f.baseline
            if f.baseline_value is not None:
                base += f": {_num(f.baseline_value)} {f.unit}"
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
            met = {True: "yes", False: "NO", None: "-"}[f.met]
            value = f"{_num(f.value)} {f.unit}" if f.value is not None else "-"
            lines.append(f"| {f.name} | {value} | {base} | {ratio} | {f.target} | {met} |")
        for t in self.tables:
            lines += ["", f"{t.name} ({t.unit}){': ' + t.note if t.note else ''}"]
            lines.append("| " + " | ".join(["", *t.columns]) + " |")
            lines.append("|" + " --- |" * (len(t.columns) + 1))
            for row in t.rows:
                cells = [_num(t.cells[row].get(c)) for c in t.columns]
                lines.append("| " + " | ".join([row, *cells]) + " |")
        for group, why in self.skipped.items():
            lines.append(f"\nskipped {group}: {why}")
        for what, note in self.notes.items():
            lines.append(f"{what}: {note}")
        return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    load = os.getloadavg()
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                "?",
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
    }
