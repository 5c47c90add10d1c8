"""The grow action: enlarge a filesystem to its (resized) device."""

from __future__ import annotations

import os

from nvme_agent.actions import mountinfo
from nvme_agent.actions.mount import EXT_TYPES
from nvme_agent.actions.outcome import ActionError, Deadline, Outcome
from nvme_agent.actions.proc import run_tool, tool_error
from nvme_agent.policy.plan import GrowSpec


def run_grow(spec: GrowSpec, deadline: Deadline) -> Outcome:
    """resize2fs for ext2/3/4 (online or offline), xfs_growfs on the mount point for xfs."""
    if spec.fstype in EXT_TYPES:
        argv = ["resize2fs", spec.source]
    elif spec.fstype == "xfs":
        target = spec.target
        if target is None:
            dev = mountinfo.device_number(spec.source)
            mounts = mountinfo.mounts_of(mountinfo.read(), dev) if dev else []
            if not mounts:
                raise ActionError(f"xfs on {spec.source} can only grow while mounted")
            target = mounts[0].mountpoint
        argv = ["xfs_growfs", os.path.normpath(target)]
    else:
        raise ActionError(f"cannot grow {spec.fstype} on {spec.source}: not supported")
    proc = run_tool(argv, deadline)
    if proc.returncode != 0:
        return Outcome.failed(f"growing {spec.fstype} on {spec.source} failed", tool_error(proc))
    return Outcome.ok(f"grew {spec.fstype} on {spec.source} ({argv[0]})")
