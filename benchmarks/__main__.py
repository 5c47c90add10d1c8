"""``python -m benchmarks`` (``make bench``): every figure of issue 13, a table and a JSON file.

Groups: ``topology`` and ``policy`` run in-process; ``daemon`` runs the real daemon (dry run)
in a umockdev bed; ``mounts`` mounts real ext4 filesystems on loop devices (root).  A group
that cannot run here is reported as skipped, with the reason.  ``--quick`` uses tiny sizes:
it shows that everything runs (the test suite does that), not how fast.
"""

from __future__ import annotations

import argparse
import compileall
import logging
import shlex
import sys
from pathlib import Path

from benchmarks import inprocess
from benchmarks.report import Report

GROUPS = ("topology", "policy", "daemon", "mounts")
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups ({','.join(GROUPS)})"
    )
    parser.add_argument(
        "--json", type=Path, default=Path("build/bench.json"), help="where the JSON goes"
    )
    parser.add_argument("--reps", type=int, help="repetitions of the in-process figures")
    parser.add_argument("--burst", type=int, help="namespaces in the rescan burst (1000)")
    parser.add_argument("--mounts", type=int, help="real mounts in the parallel burst (64)")
    parser.add_argument(
        "--idle-seconds", type=float, help="how long the idle daemon is watched (60)"
    )
    parser.add_argument("--cycles", type=int, help="remove/add cycles for the latencies (100)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run each daemon under cProfile, writing DIR/daemon-<phase>.prof",
    )
    return parser.parse_args(argv)


def _compile_bytecode(report: Report) -> None:
    """Byte-compile the package before any daemon starts, as installing it does (pip from a
    wheel, dh_python3): else a daemon started from a checkout with ``PYTHONDONTWRITEBYTECODE``
    set compiles every changed module from source at each start, in the coldplug figure."""
    ok = all(
        compileall.compile_dir(REPO / package, quiet=2, workers=1)
        for package in ("nvme_agent", "benchmarks")
    )
    report.notes["bytecode"] = (
        "compiled beforehand, as an installed package's" if ok else "could not all be compiled"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        print(f"unknown group(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    quick = args.quick
    sizes = (3, 10) if quick else (10, 100, 1000, 3000)
    rules = (1, 5) if quick else (1, 100, 1000)
    reps = args.reps or (3 if quick else 50)
    report = Report()
    if "topology" in groups:
        inprocess.topology_growth(report, sizes, reps)
    if "policy" in groups:
        inprocess.policy_growth(report, sizes, rules, reps)
    if {"daemon", "mounts"} & set(groups):
        _compile_bytecode(report)
    if "daemon" in groups:
        from benchmarks import daemon

        daemon.run(
            report,
            burst=args.burst or (4 if quick else 1000),
            cycles=args.cycles or (4 if quick else 100),
            idle_seconds=args.idle_seconds
            if args.idle_seconds is not None
            else (0.5 if quick else 60.0),
            idle_namespaces=4 if quick else 100,
            reload_rules=5 if quick else 1000,
            reloads=2 if quick else 5,
            profile=args.profile,
        )
    if "mounts" in groups:
        from benchmarks import mounts

        mounts.run(report, count=args.mounts or (2 if quick else 64), cycles=2 if quick else 20)
    print(report.render())
    command = shlex.join(
        ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    )
    report.write_json(args.json, command, quick)
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
