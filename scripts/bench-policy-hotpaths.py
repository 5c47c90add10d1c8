#!/usr/bin/env python3
"""The policy's hot paths, in-process, for one or more source trees in the same run.

    scripts/bench-policy-hotpaths.py [--rounds N] TREE [TREE ...]

Each tree (a checkout of nvme-agent, e.g. ``git worktree add /tmp/base main``) is measured in
its own interpreter, the trees alternating ``--rounds`` times so that the load of the machine
hits them alike; the figures are medians over rounds, and ratios to the first tree.  What is
measured (issue 13):

* ``load_policy_text`` of a 1,000-rule policy (and of 100 rules): the reload path;
* ``decide`` with 1,000 rules, the match in the last one (p50, p99 over 400 calls);
* ``decide`` with 1 rule against a topology of 3,000 namespaces (p50, p99 over 20,000 calls).

Wall-clock figures depend on what else the machine runs; CPU time (``process_time``) less so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

POLICY = r"""
def policy_text(n):
    lines = ["version: 1", "rules:"]
    for i in range(n):
        lines += [
            f"  - name: rule-{i}",
            f'    match: {{fs_label: "data-{i}-*", fs_type: [ext4, xfs], partition: false}}',
            "    on_add:",
            '      - mount: {path: "/run/media/nvme-agent/{label}-{nsid}"}',
            '      - exec: {argv: [/usr/bin/logger, "added {label}"]}',
            "    on_remove:",
            '      - systemd: {stop: "app@{label}.service"}',
        ]
    return "\n".join(lines) + "\n"
"""

CHILD = r"""
import json, statistics, sys, time
sys.path[:0] = [TREE, TREE + "/tests"]
from nvme_agent.policy import decide, load_policy_text
from support.policy import added, namespace, topology
POLICY

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

def timed(f, reps):
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu

out = {}
for n, reps in ((100, 30), (1000, 8)):
    text = policy_text(n)
    wall, cpu = timed(lambda: load_policy_text(text, "bench.yaml"), reps)
    out[f"load {n} rules, ms"] = statistics.median(wall) * 1e3
    out[f"load {n} rules, cpu ms"] = statistics.median(cpu) * 1e3
policy = load_policy_text(policy_text(1000), "bench.yaml")
ns = namespace(1, label="data-999-x")
change, topo = added(ns), topology(ns)
assert decide(change, topo, policy).rule == "rule-999"
wall, _ = timed(lambda: decide(change, topo, policy), 400)
out["decide 1000 rules p50, ms"] = statistics.median(wall) * 1e3
out["decide 1000 rules p99, ms"] = pct(wall, 0.99) * 1e3
one = load_policy_text(policy_text(1), "bench.yaml")
nss = [namespace(i, label=f"data-0-{i}", name=f"nvme0n{i}") for i in range(1, 3001)]
change, topo = added(nss[-1]), topology(*nss)
assert decide(change, topo, one).rule == "rule-0"
wall, _ = timed(lambda: decide(change, topo, one), 20000)
out["decide 3000 ns p50, us"] = statistics.median(wall) * 1e6
out["decide 3000 ns p99, us"] = pct(wall, 0.99) * 1e6
print(json.dumps(out))
"""


def measure(tree: str) -> dict[str, float]:
    code = CHILD.replace("TREE", repr(tree)).replace("POLICY", POLICY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{tree}:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", metavar="TREE", help="source trees; the first is the base")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            runs[tree].append(measure(tree))
    names = list(runs[args.trees[0]][0])
    base = {k: statistics.median(r[k] for r in runs[args.trees[0]]) for k in names}
    for tree in args.trees:
        print(tree)
        for k in names:
            value = statistics.median(r[k] for r in runs[tree])
            print(f"  {k:28s} {value:10.3f}   x{value / base[k]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
