"""Install and (re)start the packaged agent in a guest, on the e2e policy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .guest import PAYLOAD_MOUNT, Guest

HERE = Path(__file__).resolve().parent
POLICY = (HERE / "policies" / "e2e.yaml").read_text()
MOUNT_ROOT = "/run/media/nvme-agent"
HOOK = """#!/bin/sh
# e2e hook: record the environment the agent gave us, one file per event and NSID.
mkdir -p /run/e2e-hooks
env > "/run/e2e-hooks/$1-${NVME_NSID:-unknown}.env.tmp"
mv "/run/e2e-hooks/$1-${NVME_NSID:-unknown}.env.tmp" "/run/e2e-hooks/$1-${NVME_NSID:-unknown}.env"
"""
INSTALL_SOURCE = f"""set -e
cp -r {PAYLOAD_MOUNT}/src/nvme_agent /usr/lib/python3/dist-packages/
printf '#!/usr/bin/python3\\nimport sys\\nfrom nvme_agent.cli.main import main\\n' \\
  > /usr/bin/nvme-agent
printf 'sys.exit(main())\\n' \\
  >> /usr/bin/nvme-agent
chmod 755 /usr/bin/nvme-agent
install -m644 {PAYLOAD_MOUNT}/systemd/nvme-agent.service /usr/lib/systemd/system/
install -m644 {PAYLOAD_MOUNT}/systemd/nvme-agent.tmpfiles /usr/lib/tmpfiles.d/nvme-agent.conf
install -m644 {PAYLOAD_MOUNT}/systemd/nvme-agent.sysusers /usr/lib/sysusers.d/nvme-agent.conf
systemd-sysusers
systemd-tmpfiles --create /usr/lib/tmpfiles.d/nvme-agent.conf
systemctl daemon-reload
systemctl enable nvme-agent
"""
INSTALL_DEB = f"""set -e
cp {PAYLOAD_MOUNT}/nvme-agent_*_all.deb /root/
cd /root
# Offline: the image carries every dependency, so apt has nothing to download.
DEBIAN_FRONTEND=noninteractive apt-get install -y ./nvme-agent_*_all.deb
"""


def install(g: Guest) -> None:
    """Install the agent as a user would (the .deb), plus the e2e hook."""
    if g.payload.kind == "none":
        pytest.skip(f"agent not available: {g.payload.why}")
    g.sh(INSTALL_DEB if g.payload.kind == "deb" else INSTALL_SOURCE, timeout=300)
    g.sh("mkdir -p /usr/local/libexec /etc/nvme-agent")
    g.qga.write_file("/usr/local/libexec/e2e-hook", HOOK)
    g.sh("chmod 755 /usr/local/libexec/e2e-hook")
    g.agent_installed = True


def agent_log(g: Guest) -> str:
    """The agent's last journal lines, for failure messages."""
    return g.sh("journalctl -b -u nvme-agent --no-pager | tail -40", check=False).stdout


def stop(g: Guest) -> None:
    """Stop the agent (installing it first if needed, timed in ``g.timings``)."""
    if not g.agent_installed:
        started = time.monotonic()
        install(g)
        g.timings["agent_install_s"] = round(time.monotonic() - started, 2)
    g.sh("systemctl stop nvme-agent || true")


def start(g: Guest, policy: str = POLICY) -> None:
    """Write ``policy`` and (re)start the agent; returns after READY=1 (Type=notify: the
    coldplug actions have run).  Sets ``g.agent_cursor`` just before the start."""
    g.sh("rm -rf /run/e2e-hooks")
    g.qga.write_file("/etc/nvme-agent/policy.yaml", policy)
    g.agent_cursor = g.journal_cursor()
    res = g.sh("systemctl restart nvme-agent", check=False, timeout=300)
    if res.exitcode != 0:
        pytest.fail(f"nvme-agent did not start ({g.payload.kind}): {res.stderr}\n{agent_log(g)}")
