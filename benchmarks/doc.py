"""The README's Performance figures, generated from a ``make bench`` run's JSON.

``python -m benchmarks.doc build/bench.json`` keeps that file as ``benchmarks/latest.json``
and rewrites the block between ``<!-- generated: bench -->`` and ``<!-- end: bench -->`` in
README.md; ``--check`` exits 1 when the block is not what ``benchmarks/latest.json`` renders
(the test suite runs it), so the README never shows figures no run produced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import Report
from nvme_agent.cli.readme import fill_blocks

HERE = Path(__file__).resolve().parent
LATEST = HERE / "latest.json"
README = HERE.parent / "README.md"


def render(data: dict[str, Any]) -> str:
    """The block's text: where the figures come from, then the table."""
    m = data["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg"])
    head = (
        f"`{data['command']}` on {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python "
        f"{m['python']}; load average at the end {load}."
    )
    return f"{head}\n\n{Report.from_dict(data).render()}"


def update(text: str, data: dict[str, Any]) -> str:
    """``text`` (the README) with the block rewritten; a missing block is an error."""
    return fill_blocks(text, {"bench": lambda: render(data)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doc", description=__doc__)
    parser.add_argument("json", nargs="?", type=Path, help="a run's JSON (build/bench.json)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    args = parser.parse_args(argv)
    if args.json is not None:
        data = json.loads(args.json.read_text(encoding="utf-8"))
        if data.get("quick"):
            print(f"{args.json}: a --quick run: not figures to publish", file=sys.stderr)
            return 2
        shutil.copyfile(args.json, LATEST)
    data = json.loads(LATEST.read_text(encoding="utf-8"))
    text = README.read_text(encoding="utf-8")
    new = update(text, data)
    if args.check:
        if new != text:
            print("README.md's Performance block is not benchmarks/latest.json's", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
