"""The packaged agent in the guest: mounts, hooks, journal, reload, eject, status, restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from . import agentctl
from .agentctl import MOUNT_ROOT, POLICY
from .guest import Guest

journal = pytest.importorskip("nvme_agent.outputs.journal")
changes = pytest.importorskip("nvme_agent.topology.changes")
messages = pytest.importorskip("nvme_agent.actions.messages")

NSEXT4, NSXFS, NSPART1 = (f"{MOUNT_ROOT}/{label}" for label in ("nsext4", "nsxfs", "nspart1"))
HOOK_ADD = '["/usr/local/libexec/e2e-hook", "add"]'


def _agent_log(g: Guest) -> str:
    return agentctl.agent_log(g)


def _mounts(g: Guest, target: str) -> list[dict[str, str]]:
    return [m for m in g.state()["mounts"] if m["target"] == target]


def _mount_count(g: Guest, target: str) -> int:
    return len(_mounts(g, target))


def _until_mounted(
    g: Guest, action: str, nsid: int, target: str, timings: dict[str, object] | None = None
) -> dict[str, Any]:
    """Attach/detach ``nsid`` and wait for the agent's (un)mount of ``target``; keep the
    in-guest latency (command start to mountinfo change) in ``timings``."""
    result = g.change_until_mounted(action, nsid, target)
    state = "mounted" if action == "add" else "unmounted"
    assert result["ok"], f"{target} not {state} in {g.mode}: {result}\n{_agent_log(g)}"
    if timings is not None and "mount_seconds" in result:
        kind = "attach_to_mounted_s" if action == "add" else "detach_to_unmounted_s"
        per_target = cast(dict[str, list[float]], timings.setdefault(f"{g.mode}:{kind}", {}))
        per_target.setdefault(Path(target).name, []).append(result["mount_seconds"])
    return result


def _settle(g: Guest) -> None:
    """Wait until the agent has no action queued or running (its control socket answers
    only then), e.g. the hook that follows a mount in the same plan."""
    g.sh("nvme-agent status --settle 60 >/dev/null", timeout=90)


def _hook_env(g: Guest, name: str) -> dict[str, str]:
    text = g.qga.read_file(f"/run/e2e-hooks/{name}.env").decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _hook_files(g: Guest) -> list[str]:
    return g.sh("ls /run/e2e-hooks 2>/dev/null || true").stdout.split()


def test_coldplug_and_hotplug_mounts(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    # Right after `systemctl restart` returned: READY=1 comes after the coldplug mounts.
    ext4 = _mounts(g, NSEXT4)
    assert len(ext4) == 1 and ext4[0]["fstype"] == "ext4", _agent_log(g)
    _until_mounted(g, "add", 2, NSXFS, timings)
    _until_mounted(g, "add", 4, NSPART1, timings)
    attached = g.attached()
    assert [(m["source"], m["fstype"]) for m in _mounts(g, NSXFS)] == [
        (f"/dev/{attached[2]['name']}", "xfs")
    ]
    assert [(m["source"], m["fstype"]) for m in _mounts(g, NSPART1)] == [
        (f"/dev/{attached[4]['partitions'][0]}", "ext4")
    ]
    _until_mounted(g, "remove", 2, NSXFS, timings)
    _until_mounted(g, "remove", 4, NSPART1, timings)
    assert _mount_count(g, NSEXT4) == 1


def test_hooks_get_the_event_environment(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    _until_mounted(g, "add", 2, NSXFS, timings)
    _settle(g)  # the hook runs after the mount, in the same plan
    env = _hook_env(g, "add-2")
    name = g.attached()[2]["name"]
    assert env["NVME_NSID"] == "2"
    assert env["NVME_AGENT_EVENT"] == changes.ChangeType.NAMESPACE_ADDED.value
    assert env["NVME_AGENT_RULE"] == "e2e-labelled"
    assert env["DEVNAME"] == f"/dev/{name}"
    assert env["MOUNTPOINT"] == NSXFS
    assert (env["ID_FS_TYPE"], env["ID_FS_LABEL"]) == ("xfs", "nsxfs")
    assert env["NVME_NS_WWID"].startswith("nvme.1b36-") and env["NVME_IDENTITY_WEAK"] == "1"
    assert "NVME_AGENT_COLDPLUG" not in env
    _until_mounted(g, "remove", 2, NSXFS, timings)
    _settle(g)
    env = _hook_env(g, "remove-2")
    assert env["NVME_NSID"] == "2"
    assert env["NVME_AGENT_EVENT"] == changes.ChangeType.NAMESPACE_REMOVED.value


def test_journal_has_topology_entries(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    cursor = g.journal_cursor()
    _until_mounted(g, "add", 2, NSXFS, timings)
    name = g.attached()[2]["name"]
    _until_mounted(g, "remove", 2, NSXFS, timings)
    ids = journal.CHANGE_MESSAGE_IDS
    # journald takes the agent's datagrams in asynchronously: wait for the last one.
    last = g.wait_journal(
        cursor, MESSAGE_ID=ids[changes.ChangeType.NAMESPACE_REMOVED], NVME_NSID="2"
    )
    assert last["ok"], _agent_log(g)
    added = g.journal(cursor, MESSAGE_ID=ids[changes.ChangeType.NAMESPACE_ADDED], NVME_NSID="2")
    removed = g.journal(cursor, MESSAGE_ID=ids[changes.ChangeType.NAMESPACE_REMOVED], NVME_NSID="2")
    assert len(added) == 1 and len(removed) == 1, _agent_log(g)
    for entry, change in ((added[0], "namespace-added"), (removed[0], "namespace-removed")):
        assert entry["_SYSTEMD_UNIT"] == "nvme-agent.service"
        assert entry["NVME_CHANGE"] == change
        assert entry["DEVNAME"] == f"/dev/{name}"
        assert entry["NVME_SUBSYSNQN"].endswith(":nvme-rig-subsys0")
    assert added[0]["ID_FS_LABEL"] == "nsxfs"
    assert g.agent_cursor is not None
    ready = g.journal(g.agent_cursor, MESSAGE_ID=journal.MSG_DAEMON_READY)
    assert len(ready) == 1 and ready[0]["_SYSTEMD_UNIT"] == "nvme-agent.service"
    # The daemon's own log under systemd: native entries with fields, not stderr stream lines
    # (which journald would split on a newline a device string carried).
    mounted = g.journal(cursor, MESSAGE_ID=messages.MOUNTED, NVME_NSID="2")
    assert len(mounted) == 1, _agent_log(g)
    entry = mounted[0]
    assert entry["_TRANSPORT"] == "journal" and entry["SYSLOG_IDENTIFIER"] == "nvme-agent"
    assert (entry["NVME_ACTION"], entry["NVME_STATUS"]) == ("mount", "ok")
    assert entry["DEVNAME"] == f"/dev/{name}" and entry["_SYSTEMD_UNIT"] == "nvme-agent.service"


def test_reload_with_broken_policy_keeps_the_old_one(
    agent: Guest, timings: dict[str, object]
) -> None:
    g = agent
    cursor = g.journal_cursor()
    g.qga.write_file("/etc/nvme-agent/policy.yaml", "version: 1\nrules:\n  - name: [broken\n")
    res = g.sh("systemctl reload nvme-agent", check=False)
    assert res.exitcode != 0
    assert g.sh("systemctl is-active nvme-agent", check=False).stdout.strip() == "active"
    failed = g.wait_journal(cursor, MESSAGE_ID=journal.MSG_POLICY_RELOAD_FAILED)
    assert failed["ok"] and "policy.yaml:4" in failed["message"], f"{failed}\n{_agent_log(g)}"
    # The old policy still acts.
    _until_mounted(g, "add", 2, NSXFS, timings)
    _until_mounted(g, "remove", 2, NSXFS, timings)


def test_eject_before_detach_unmounts_cleanly(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    _until_mounted(g, "add", 2, NSXFS, timings)
    g.sh(f"echo data > {NSXFS}/file")
    # Earlier tests detached mounted namespaces on purpose: look at the kernel log from here.
    g.sh("echo e2e-eject-marker > /dev/kmsg")
    g.sh("nvme-agent eject --nsid 2", timeout=120)
    assert _mount_count(g, NSXFS) == 0
    g.detach(2)
    kmsg = g.sh("dmesg", check=False).stdout.rsplit("e2e-eject-marker", 1)[-1]
    assert "lost sync page write" not in kmsg and "I/O error" not in kmsg
    # The data reached the disk: re-attach and find it.
    _until_mounted(g, "add", 2, NSXFS, timings)
    assert g.sh(f"cat {NSXFS}/file").stdout == "data\n"
    _until_mounted(g, "remove", 2, NSXFS, timings)


def test_status_agrees_with_nvme_list(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    # Mounted means the agent has taken the namespace in (udev settle would not: the agent
    # may not have read its netlink socket yet).
    _until_mounted(g, "add", 4, NSPART1, timings)
    listed = json.loads(g.sh("nvme list -o json").stdout)
    nvme_nsids = {int(d.get("NameSpace", d.get("NSID", 0))) for d in listed["Devices"]}
    lines = g.sh("nvme-agent status --json").stdout.splitlines()
    status = [json.loads(line) for line in lines if line.strip()]
    assert all("type" in o and "nsid" in o for o in status)
    agent_nsids = {o["nsid"] for o in status if o["nsid"] is not None}
    assert agent_nsids == nvme_nsids == {1, 4}
    _until_mounted(g, "remove", 4, NSPART1, timings)


def test_survives_sigkill_without_double_mounts(agent: Guest, timings: dict[str, object]) -> None:
    g = agent
    before = int(g.sh("systemctl show -p MainPID --value nvme-agent").stdout)
    cursor = g.journal_cursor()
    g.sh("systemctl kill -s KILL nvme-agent")
    # Restart=on-failure, RestartSec=2s: the new process logs "ready" once coldplug is done.
    ready = g.wait_journal(cursor, MESSAGE_ID=journal.MSG_DAEMON_READY)
    assert ready["ok"] and ready["pid"] != before, f"{ready}\n{_agent_log(g)}"
    timings[f"{g.mode}:sigkill_to_ready_s"] = ready["seconds"]
    _until_mounted(g, "add", 2, NSXFS, timings)
    assert _mount_count(g, NSEXT4) == 1
    assert _mount_count(g, NSXFS) == 1
    _until_mounted(g, "remove", 2, NSXFS, timings)


def test_restart_replans_only_under_a_changed_policy(
    agent: Guest, timings: dict[str, object]
) -> None:
    """Same policy: nothing runs again.  Changed policy: the add plans run again, before
    READY=1, and mounting what is already mounted does not mount it twice."""
    g = agent
    _until_mounted(g, "add", 4, NSPART1, timings)
    _settle(g)
    assert {"add-4.env"} <= set(_hook_files(g))
    g.sh("rm -rf /run/e2e-hooks")
    g.sh("systemctl restart nvme-agent", timeout=300)
    # Restart returned after READY=1, which follows every coldplug action: a re-planned hook
    # would have run by now.
    assert _hook_files(g) == [], _agent_log(g)
    assert (_mount_count(g, NSEXT4), _mount_count(g, NSPART1)) == (1, 1)

    changed = POLICY.replace(HOOK_ADD, HOOK_ADD.replace('"add"', '"replanned"'))
    assert changed != POLICY
    g.qga.write_file("/etc/nvme-agent/policy.yaml", changed)
    g.sh("systemctl restart nvme-agent", timeout=300)
    assert sorted(_hook_files(g)) == ["replanned-1.env", "replanned-4.env"], _agent_log(g)
    for nsid in (1, 4):
        env = _hook_env(g, f"replanned-{nsid}")
        assert env["NVME_NSID"] == str(nsid)
        assert env["NVME_AGENT_COLDPLUG"] == "1"
        assert "policy changed" in env["NVME_AGENT_REASON"]
    assert _hook_env(g, "replanned-4")["NVME_PARTN"] == "1"
    assert (_mount_count(g, NSEXT4), _mount_count(g, NSPART1)) == (1, 1)
    _until_mounted(g, "remove", 4, NSPART1, timings)


def test_a_partition_fstab_names_by_partuuid_or_id_is_never_mounted(
    agent: Guest, timings: dict[str, object]
) -> None:
    """fstab names the partition by ``PARTUUID=`` (what ``blkid -p`` on a real NVMe
    partition calls ``PART_ENTRY_UUID``) or by ``ID=`` (its ``/dev/disk/by-id`` link, made by
    udev): the agent refuses it, naming the fstab line.  The guest's fstab names its root by
    ``LABEL=``, so every mount here reads the identifiers."""
    g = agent
    _until_mounted(g, "add", 4, NSPART1, timings)
    part = g.attached()[4]["partitions"][0]
    partuuid = g.sh(f"blkid -p -o value -s PART_ENTRY_UUID /dev/{part}").stdout.strip()
    links = g.sh(
        "for l in /dev/disk/by-id/*; do "
        f'[ "$(readlink -f "$l")" = /dev/{part} ] && basename "$l"; done; true'
    ).stdout.split()
    assert partuuid and links, f"/dev/{part}: PART_ENTRY_UUID {partuuid!r}, by-id {links}"
    _until_mounted(g, "remove", 4, NSPART1, timings)
    g.sh("cp /etc/fstab /run/e2e-fstab.orig")
    try:
        for spec in (f"PARTUUID={partuuid}", f"ID={links[0]}"):
            entry = f"{spec} /srv/e2e ext4 noauto 0 2"
            g.sh(f"cp /run/e2e-fstab.orig /etc/fstab && echo '{entry}' >> /etc/fstab")
            line = len(g.sh("cat /etc/fstab").stdout.splitlines())
            cursor = g.journal_cursor()
            g.attach(4)
            failed = g.wait_journal(cursor, MESSAGE_ID=messages.ACTION_FAILED, NVME_NSID="4")
            assert failed["ok"], f"{spec}: {failed}\n{_agent_log(g)}"
            assert f"listed in /etc/fstab:{line} as {spec}" in failed["message"], failed
            _settle(g)
            assert _mount_count(g, NSPART1) == 0
            g.detach(4)
            _settle(g)
    finally:
        g.sh("cp /run/e2e-fstab.orig /etc/fstab")
