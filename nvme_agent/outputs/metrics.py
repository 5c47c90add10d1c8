"""The daemon's counters and gauges: the one table, the JSON summary and the Prometheus file.

:data:`METRICS` is the one source: the daemon counts into :class:`Metrics` by the table's
keys; ``status --json`` shows :meth:`Metrics.summary` (keyed by each metric's ``key``);
``run --metrics-file`` writes :meth:`Metrics.prometheus` (the text exposition format that
node_exporter's textfile collector reads), atomically; the man page and the README list the
table.  No metric carries a value a disk chose: labels are change kinds, action kinds and
outcomes, all fixed by the agent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from nvme_agent import __version__

PREFIX = "nvme_agent_"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: its ``key`` in the JSON summary, Prometheus ``name`` and ``kind``
    (``counter`` or ``gauge``), the ``labels`` it is split by, and what it counts."""

    key: str
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()


METRICS: tuple[Metric, ...] = (
    Metric("udev_events", "udev_events_total", "counter", "udev events received"),
    Metric(
        "changes",
        "topology_changes_total",
        "counter",
        "topology changes seen, by kind (namespace-added, path-lost, ...)",
        ("change",),
    ),
    Metric("plans", "plans_total", "counter", "plans decided (with or without actions)"),
    Metric("plans_refused", "plans_refused_total", "counter", "plans the policy refused"),
    Metric(
        "decide_errors",
        "decide_errors_total",
        "counter",
        "changes the policy could not decide on (logged with the cause)",
    ),
    Metric(
        "actions",
        "actions_total",
        "counter",
        "actions finished, by kind (mount, exec, ...) and outcome (ok, failed, skipped, "
        "cancelled, dry-run)",
        ("action", "status"),
    ),
    Metric(
        "netlink_overruns",
        "netlink_overruns_total",
        "counter",
        "udev event losses (netlink overrun), each answered by a re-enumeration",
    ),
    Metric(
        "reloads",
        "policy_reloads_total",
        "counter",
        "policy reloads, by result (ok, failed)",
        ("result",),
    ),
    Metric("namespaces", "namespaces", "gauge", "NVMe namespaces present"),
    Metric("controllers", "controllers", "gauge", "NVMe controllers present"),
    Metric("mounts", "mounts", "gauge", "filesystems the agent has mounted"),
    Metric(
        "reconcile_pending",
        "reconcile_pending",
        "gauge",
        "present namespaces whose add plan under the policy in force differs from the one "
        "that ran (nvme-agent reconcile applies it)",
    ),
    Metric("policy_generation", "policy_generation", "gauge", "the policy generation in force"),
    Metric(
        "start_time",
        "start_time_seconds",
        "gauge",
        "when the daemon started (Unix time)",
    ),
)

#: The table by JSON key.
BY_KEY: MappingProxyType[str, Metric] = MappingProxyType({m.key: m for m in METRICS})


class Metrics:
    """The daemon's counts: plain counters, counters split by labels, and gauges."""

    def __init__(self, start_time: float) -> None:
        self._plain: Counter[str] = Counter()
        self._split: dict[str, Counter[tuple[str, ...]]] = {
            m.key: Counter() for m in METRICS if m.labels
        }
        self._gauges: dict[str, float] = {"start_time": start_time}

    def count(self, key: str, *labels: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key`` (with its labels' values, in the table's order)."""
        metric = BY_KEY[key]
        if len(labels) != len(metric.labels) or metric.kind != "counter":
            raise ValueError(f"{key} is a {metric.kind} with labels {metric.labels}")
        if labels:
            self._split[key][labels] += n
        else:
            self._plain[key] += n

    def set(self, key: str, value: float) -> None:
        """Set the gauge ``key``."""
        if BY_KEY[key].kind != "gauge":
            raise ValueError(f"{key} is not a gauge")
        self._gauges[key] = value

    def value(self, key: str, *labels: str) -> float:
        """The current value of ``key`` (0 when never counted)."""
        metric = BY_KEY[key]
        if metric.kind == "gauge":
            return self._gauges.get(key, 0)
        if metric.labels:
            return self._split[key][labels]
        return self._plain[key]

    def split(self, key: str) -> dict[tuple[str, ...], int]:
        """The counts of the counter ``key`` by its labels' values (a copy)."""
        return dict(self._split[key])

    def summary(self) -> dict[str, Any]:
        """Every metric by its key; split counters as nested objects (``actions``:
        ``{"mount": {"ok": 3}}``), so a script reads ``counters["changes"]["path-lost"]``."""
        out: dict[str, Any] = {}
        for m in METRICS:
            if m.kind == "gauge":
                out[m.key] = self._gauges.get(m.key, 0)
            elif not m.labels:
                out[m.key] = self._plain[m.key]
            else:
                out[m.key] = _nested(self._split[m.key])
        return out

    def prometheus(self) -> str:
        """The text exposition format (version 0.0.4), one HELP and TYPE per metric."""
        lines = [
            f"# HELP {PREFIX}info nvme-agent's version",
            f"# TYPE {PREFIX}info gauge",
            f'{PREFIX}info{{version="{_label(__version__)}"}} 1',
        ]
        for m in METRICS:
            name = PREFIX + m.name
            lines += [f"# HELP {name} {m.help}", f"# TYPE {name} {m.kind}"]
            if m.labels:
                for values, n in sorted(self._split[m.key].items()):
                    pairs = ",".join(
                        f'{k}="{_label(v)}"' for k, v in zip(m.labels, values, strict=True)
                    )
                    lines.append(f"{name}{{{pairs}}} {_number(n)}")
            else:
                lines.append(f"{name} {_number(self.value(m.key))}")
        return "\n".join(lines) + "\n"


def _nested(counts: Mapping[tuple[str, ...], int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for values, n in sorted(counts.items()):
        level = out
        for v in values[:-1]:
            level = level.setdefault(v, {})
        level[values[-1]] = n
    return out


def _label(value: str) -> str:
    """A label value escaped as the exposition format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))
