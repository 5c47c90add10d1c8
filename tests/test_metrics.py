"""The metrics table (issue 14.14): one source for the counts, the JSON summary, the
Prometheus file, the man page and the README; the exposition format's shape."""

from __future__ import annotations

import re

import pytest

from nvme_agent.cli import manpage, readme
from nvme_agent.outputs.metrics import BY_KEY, METRICS, PREFIX, Metrics

LABEL = r'[a-z_]+="([^"\\\n]|\\[\\"n])*"'
SAMPLE = rf"nvme_agent_[a-z_]+(\{{{LABEL}(,{LABEL})*\}})? -?[0-9.e+]+"
LINE = re.compile(rf"^(# (HELP|TYPE) nvme_agent_[a-z_]+ .+|{SAMPLE})$")


def test_every_metric_has_a_unique_key_and_name_and_a_known_kind() -> None:
    assert len(BY_KEY) == len(METRICS) == len({m.name for m in METRICS})
    assert {m.kind for m in METRICS} == {"counter", "gauge"}
    assert all(m.name.endswith("_total") == (m.kind == "counter") for m in METRICS)


def test_counts_show_alike_in_the_summary_and_the_file() -> None:
    metrics = Metrics(start_time=1700000000.5)
    metrics.count("udev_events", n=7)
    metrics.count("changes", "path-lost")
    metrics.count("actions", "mount", "ok", n=2)
    metrics.count("actions", "mount", "failed")
    metrics.set("namespaces", 3)
    summary = metrics.summary()
    assert summary["udev_events"] == 7 and summary["changes"] == {"path-lost": 1}
    assert summary["actions"] == {"mount": {"failed": 1, "ok": 2}}
    assert summary["namespaces"] == 3 and summary["start_time"] == 1700000000.5
    text = metrics.prometheus()
    assert all(LINE.match(line) for line in text.splitlines()), text
    assert f"{PREFIX}udev_events_total 7" in text.splitlines()
    assert f'{PREFIX}actions_total{{action="mount",status="ok"}} 2' in text.splitlines()
    assert f"{PREFIX}start_time_seconds 1700000000.5" in text.splitlines()
    for m in METRICS:
        assert f"# TYPE {PREFIX}{m.name} {m.kind}" in text


def test_label_values_are_escaped_and_counts_are_checked() -> None:
    metrics = Metrics(0)
    metrics.count("changes", 'x"\\\ny')
    assert f'{PREFIX}topology_changes_total{{change="x\\"\\\\\\ny"}} 1' in metrics.prometheus()
    with pytest.raises(ValueError):
        metrics.count("changes")  # its label is missing
    with pytest.raises(ValueError):
        metrics.set("udev_events", 1)  # a counter is counted, not set


def test_the_man_page_and_the_readme_list_the_table() -> None:
    page = manpage.render(date="2025-01-01")
    section = page.split(".SH METRICS", 1)[1].split(".SH ", 1)[0]
    table = readme.metrics_table()
    for m in METRICS:
        assert manpage.roff_escape(PREFIX + m.name) in section
        assert f"`{PREFIX}{m.name}" in table and f"`{m.key}`" in table
