"""What a policy may not do whatever the disk says: mount roots in system or home trees,
filesystem types the kernel would load on a disk's word, existing directories (issue 11)."""

from __future__ import annotations

import textwrap

import pytest
from support.policy import added, namespace, topology

from nvme_agent.policy import REFUSED, PolicyError, decide, load_policy_text
from nvme_agent.policy.plan import MountSpec


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(textwrap.dedent(text), "p.yaml")
    return [f"{i.keypath}: {i.message}" for i in info.value.errors]


@pytest.mark.parametrize(
    "root",
    [
        "/",
        "/home",
        "/home/alice",
        "/etc/nvme",
        "/usr/local/mnt",
        "/root/x",
        "/boot/efi",
        "/var",
        "/var/lib/data",
        "/tmp",
        "/run",
        "/run/user/1000/m",
        "/mnt",
        "/media",
        "/srv",
        "/proc/x",
        "/dev/shm",
        "/home/../home/bob",
    ],
)
def test_mount_root_in_a_system_or_home_tree_is_refused(root: str) -> None:
    found = errors(
        f"""\
        version: 1
        defaults: {{mount_root: "{root}"}}
        rules:
          - match: {{fs_label: "*"}}
            on_add: [{{mount: {{path: "{root.rstrip("/")}/{{label}}"}}}}]
        """
    )
    assert any(e.startswith("defaults.mount_root:") for e in found), found


@pytest.mark.parametrize("root", ["/run/media/nvme-agent", "/mnt/nvme", "/srv/data", "/data"])
def test_mount_roots_of_their_own_are_fine(root: str) -> None:
    load_policy_text(f"version: 1\ndefaults: {{mount_root: {root}}}\n")


HOSTILE = """\
version: 1
{defaults}
rules:
  - name: any
    match: {{fs_label: "*"}}
    on_add:
      - mount: {{path: "/run/media/nvme-agent/{{label}}"}}
      - exec: {{argv: [/bin/true]}}
"""


@pytest.mark.parametrize("fstype", ["hfsplus", "ntfs3", "squashfs", "cramfs", "udf", "minix"])
def test_a_filesystem_type_outside_the_allow_list_refuses_the_plan(fstype: str) -> None:
    policy = load_policy_text(HOSTILE.format(defaults=""))
    ns = namespace(1, fstype=fstype, label="alice")
    plan = decide(added(ns), topology(ns), policy)
    assert plan.actions == ()
    refusal = [line for line in plan.explanation if line.startswith(REFUSED)]
    assert refusal and fstype in refusal[0] and "allowed_filesystems" in refusal[0]


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "vfat"])
def test_the_default_allow_list_mounts_the_common_filesystems(fstype: str) -> None:
    policy = load_policy_text(HOSTILE.format(defaults=""))
    ns = namespace(1, fstype=fstype, label="data")
    (mount, _exec) = decide(added(ns), topology(ns), policy).actions
    assert isinstance(mount, MountSpec) and mount.fstype == fstype
    assert mount.allowed_fstypes == ("ext4", "xfs", "btrfs", "vfat")


def test_the_allow_list_is_configurable() -> None:
    policy = load_policy_text(HOSTILE.format(defaults="defaults: {allowed_filesystems: [ext4]}"))
    xfs = namespace(1, fstype="xfs", label="data")
    assert decide(added(xfs), topology(xfs), policy).actions == ()
    ext4 = namespace(2, fstype="ext4", label="data")
    (mount, _exec) = decide(added(ext4), topology(ext4), policy).actions
    assert isinstance(mount, MountSpec) and mount.allowed_fstypes == ("ext4",)


def test_a_pinned_fstype_must_be_allowed() -> None:
    found = errors(
        """\
        version: 1
        rules:
          - on_add: [{mount: {fstype: hfsplus}}]
        """
    )
    assert any("rules[0].on_add[0].mount.fstype:" in e and "allowed" in e for e in found), found


@pytest.mark.parametrize("value", ["[]", "ext4", "['ext 4']", "[1]"])
def test_a_bad_allow_list_is_an_error(value: str) -> None:
    found = errors(f"version: 1\ndefaults: {{allowed_filesystems: {value}}}\n")
    assert any(e.startswith("defaults.allowed_filesystems") for e in found), found


def test_mounting_on_an_existing_directory_is_an_explicit_opt_in_with_a_warning() -> None:
    plain = load_policy_text("version: 1\nrules:\n  - on_add: [{mount: {}}]\n")
    ns = namespace(1, label="data")
    (spec,) = decide(added(ns), topology(ns), plain).actions
    assert isinstance(spec, MountSpec) and not spec.allow_existing_dir
    opted = load_policy_text(
        "version: 1\nrules:\n  - on_add: [{mount: {allow_existing_dir: true}}]\n"
    )
    (spec,) = decide(added(ns), topology(ns), opted).actions
    assert isinstance(spec, MountSpec) and spec.allow_existing_dir
    assert any(w.keypath.endswith("allow_existing_dir") for w in opted.warnings)


def test_admin_group_is_read() -> None:
    policy = load_policy_text("version: 1\ndefaults: {admin_group: storage-admins}\n")
    assert policy.defaults.admin_group == "storage-admins"
    assert load_policy_text("version: 1\n").defaults.admin_group is None
    assert any("admin_group" in e for e in errors("version: 1\ndefaults: {admin_group: [x]}\n"))


@pytest.mark.parametrize("mode", ["2775", "04755", "6770", 0o2775])
def test_a_mountpoint_mode_never_carries_setuid_or_setgid(mode: object) -> None:
    shown = f'"{mode}"' if isinstance(mode, str) else str(mode)
    found = errors(f"version: 1\nrules:\n  - on_add: [{{mount: {{mode: {shown}}}}}]\n")
    assert any("mount.mode" in e and "setgid" in e for e in found), found


def test_permission_and_sticky_bits_are_fine() -> None:
    for mode in ("0750", "1777", "755"):
        load_policy_text(f'version: 1\nrules:\n  - on_add: [{{mount: {{mode: "{mode}"}}}}]\n')
