"""A plan the policy refuses is one warning naming the device and the cause, and what the
disk says cannot forge another line through it (the daemon's own change handling, in
process).  The topology line logged for the change itself is TopologyLog's business."""

from __future__ import annotations

import io
from pathlib import Path

from support.policy import added, namespace

from nvme_agent.outputs.journal import TopologyLog
from nvme_agent.service.daemon import Daemon, DaemonConfig
from nvme_agent.topology.model import Filesystem

POLICY = """\
version: 1
defaults:
  mount_root: /run/media/nvme-agent-test
  allowed_filesystems: [xfs]
rules:
  - name: data
    match: {fs_label: "*"}
    on_add:
      - mount: {path: "/run/media/nvme-agent-test/{label}"}
"""


def test_a_refused_plan_with_a_hostile_fs_type_is_one_escaped_warning(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = DaemonConfig(policy, tmp_path / "run", tmp_path / "state", dry_run=True)
    daemon = Daemon(config)  # not started: no loop, no udev, no runner
    out = io.StringIO()
    daemon.tlog = TopologyLog("stderr", out)
    hostile = Filesystem("ext4\nnvme-agent[info]: all is well", "filesystem", "data")
    daemon._handle_change(added(namespace(3, filesystem=hostile)))
    warnings = [line for line in out.getvalue().splitlines() if "[warning]" in line]
    assert len(warnings) == 1, out.getvalue()
    assert "nsid=3" in warnings[0] and "/dev/nvme0n3" in warnings[0]
    assert "is not in allowed_filesystems (xfs)" in warnings[0]
    # escaped by the one escaping function (topology.text), in its own line
    assert "ext4\\x0anvme-agent[info]: all is well" in warnings[0]
    assert daemon.metrics.value("plans_refused") == 1
