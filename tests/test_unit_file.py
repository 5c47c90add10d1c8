"""The systemd unit, tmpfiles.d and sysusers.d files in systemd/.

``systemd-analyze verify`` and ``security --offline`` run against a temporary root holding the
unit, a copy of the host's units and the real ``nvme-agent`` entry point; tmpfiles.d and
sysusers.d are applied to a temporary root with ``--root``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.packaging import (
    REPO,
    UNIT_NAME,
    add_host_units,
    require_root,
    require_tools,
    systemd_analyze,
    verify_unit,
)

from nvme_agent.cli.clidoc import describe
from nvme_agent.cli.main import DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR, build_parser

UNIT = REPO / "systemd" / UNIT_NAME
TMPFILES = REPO / "systemd" / "nvme-agent.tmpfiles"
SYSUSERS = REPO / "systemd" / "nvme-agent.sysusers"

#: Options that give the service a mount namespace of its own (systemd.exec(5)); with any of
#: them, the agent's mounts would not propagate to the host.
MOUNT_NAMESPACE_OPTIONS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateIPC",
    "PrivateNetwork",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "MountAPIVFS",
    "LogNamespace",
    "RootDirectory",
    "RootImage",
    "MountFlags",
    "DynamicUser",
)


#: A parsed unit file: section name -> its (key, value) entries.
Sections = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Sections:
    """Sections of a unit file as ordered (key, value) lists (keys may repeat)."""
    sections: Sections = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Sections, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Sections, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def unit() -> Sections:
    return parse_unit(UNIT.read_text())


def agent_entry_point() -> Path:
    """The installed ``nvme-agent`` script of the interpreter running the tests."""
    path = Path(sys.executable).parent / "nvme-agent"
    if not path.exists():
        found = shutil.which("nvme-agent")
        if found is None:
            pytest.skip("nvme-agent entry point not installed (pip install -e .)")
        path = Path(found)
    return path


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root with the host's units, our unit in /etc and /usr/bin/nvme-agent."""
    root = tmp_path / "root"
    add_host_units(root)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT_NAME)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(agent_entry_point(), root / "usr/bin/nvme-agent")
    return root


# --- systemd-analyze ---------------------------------------------------------------------


def test_systemd_analyze_verify_passes_without_warnings(unit_root: Path) -> None:
    result = verify_unit(unit_root)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys or values it ignores; those only show up as messages.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_verify_harness_reports_a_broken_unit(unit_root: Path) -> None:
    """Control: the same check flags an unknown key and a missing ExecStart binary."""
    path = unit_root / "etc/systemd/system" / UNIT_NAME
    path.write_text(UNIT.read_text().replace("\n[Service]\n", "\n[Service]\nNoSuchKey=1\n", 1))
    assert "NoSuchKey" in verify_unit(unit_root).stderr
    shutil.copy(UNIT, path)
    (unit_root / "usr/bin/nvme-agent").unlink()
    result = verify_unit(unit_root)
    assert result.returncode != 0
    assert "/usr/bin/nvme-agent" in result.stderr


def test_security_exposure_and_no_mount_namespace(unit_root: Path) -> None:
    result = systemd_analyze(unit_root, "security", "--offline=true", "--json=short", UNIT_NAME)
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze security --offline unsupported: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    # systemd's own reading of the unit: nothing that sets up a mount namespace.
    for name in (
        "PrivateMounts=",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "ProtectKernelTunables=",
        "ProtectControlGroups=",
    ):
        assert checks[name]["set"] is False, name
    for name in (
        "NoNewPrivileges=",
        "SystemCallArchitectures=",
        "LockPersonality=",
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        "CapabilityBoundingSet=~CAP_SYS_MODULE",
        "RestrictSUIDSGID=",
        "UMask=",
    ):
        assert checks[name]["set"] is True, name
    # A regression guard on the overall score (5.2 now; 5.4 before RestrictSUIDSGID= and
    # UMask=; 10 = unhardened root).
    guard = systemd_analyze(unit_root, "security", "--offline=true", "--threshold=52", UNIT_NAME)
    assert guard.returncode == 0, guard.stdout[-400:]


# --- the unit's contents -------------------------------------------------------------------


def test_unit_runs_and_reloads_through_existing_subcommands(unit: Sections) -> None:
    subcommands = {sub.path[-1] for sub in describe(build_parser()).subcommands}
    for key in ("ExecStart", "ExecReload"):
        argv = shlex.split(one(unit, "Service", key))
        assert argv[0] == "/usr/bin/nvme-agent", key
        assert argv[1] in subcommands, f"{key}= uses unknown subcommand {argv[1]!r}"
    assert shlex.split(one(unit, "Service", "ExecReload"))[1] == "reload"


def test_unit_service_settings(unit: Sections) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "WatchdogSec") not in ("", "0", "infinity")
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "SystemCallArchitectures") == "native"
    assert set(one(unit, "Service", "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_NETLINK",
    }
    assert "systemd-udevd.service" in " ".join(values(unit, "Unit", "After")).split()
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_stop_signals_the_daemon_alone_so_it_can_drain(unit: Sections) -> None:
    """KillMode=mixed: SIGTERM to the main process only; hooks, fsck and mount(8) that are
    still running get SIGKILL only after the daemon exited (its drain is bounded by
    --drain-timeout, which must fit in TimeoutStopSec=)."""
    assert one(unit, "Service", "KillMode") == "mixed"
    assert not values(unit, "Service", "KillSignal")  # SIGTERM: what the daemon drains on
    stop_timeouts = values(unit, "Service", "TimeoutStopSec") + values(
        unit, "Service", "TimeoutSec"
    )
    limit = float(stop_timeouts[-1].removesuffix("s")) if stop_timeouts else 90.0
    drain = build_parser().parse_args(["run"]).drain_timeout
    assert drain < limit


def test_security_threshold_control(unit_root: Path) -> None:
    """Control: the 5.2 guard above fails for a unit that gives up some hardening."""
    path = unit_root / "etc/systemd/system" / UNIT_NAME
    path.write_text(UNIT.read_text().replace("RestrictSUIDSGID=yes", "RestrictSUIDSGID=no"))
    guard = systemd_analyze(unit_root, "security", "--offline=true", "--threshold=52", UNIT_NAME)
    if "offline" in guard.stderr:
        pytest.skip(f"systemd-analyze security --offline unsupported: {guard.stderr.strip()}")
    assert guard.returncode != 0


def test_unit_has_no_mount_namespace_option(unit: Sections) -> None:
    keys = {k for entries in unit.values() for k, _ in entries}
    assert not keys & set(MOUNT_NAMESPACE_OPTIONS)


def test_capabilities_cover_mounting_and_exclude_modules(unit: Sections) -> None:
    caps = set(one(unit, "Service", "CapabilityBoundingSet").split())
    assert {"CAP_SYS_ADMIN", "CAP_KILL", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID"} <= caps
    assert not caps & {"CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SYS_RAWIO", "CAP_SYS_TIME"}
    assert not any(c.startswith("~") for c in caps), "an allow list, not a deny list"


def test_unit_leaves_runtime_and_state_dirs_to_tmpfiles(unit: Sections) -> None:
    # RuntimeDirectory=/StateDirectory= would chown them to root:root at every start.
    keys = {k for k, _ in unit["Service"]}
    assert not keys & {"RuntimeDirectory", "StateDirectory", "User", "Group"}


# --- tmpfiles.d / sysusers.d ---------------------------------------------------------------


@pytest.fixture
def applied_root(tmp_path: Path) -> Path:
    """A root where sysusers.d and then tmpfiles.d were applied, as postinst does."""
    require_root()
    require_tools("systemd-sysusers", "systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for src, subdir in ((SYSUSERS, "sysusers.d"), (TMPFILES, "tmpfiles.d")):
        dest = root / "usr/lib" / subdir / "nvme-agent.conf"
        dest.parent.mkdir(parents=True)
        shutil.copy(src, dest)
    for argv in (
        ["systemd-sysusers", f"--root={root}", "nvme-agent.conf"],
        ["systemd-tmpfiles", f"--root={root}", "--create", "nvme-agent.conf"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    return root


def group_id(root: Path, name: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"group {name} not in {root}/etc/group")


def test_sysusers_creates_the_group(applied_root: Path) -> None:
    gid = group_id(applied_root, "nvme-agent")
    assert 0 < gid < 1000, "a system group"


@pytest.mark.parametrize("path", [DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR])
def test_tmpfiles_creates_the_directories(applied_root: Path, path: str) -> None:
    st = (applied_root / path.lstrip("/")).stat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_uid == 0
    assert st.st_gid == group_id(applied_root, "nvme-agent")


def test_tmpfiles_names_the_cli_defaults() -> None:
    paths = {
        line.split()[1]
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert paths == {DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR}


def test_sysusers_group_is_the_one_the_control_socket_uses() -> None:
    from nvme_agent.service import control

    entries = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["g", control.GROUP, "-"] in entries


# --- the capability set is enough (and each of these capabilities is needed) --------------


def unit_caps(unit: Sections) -> list[str]:
    return [
        c.lower().removeprefix("cap_")
        for c in one(unit, "Service", "CapabilityBoundingSet").split()
    ]


def run_with_caps(caps: list[str], script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash) in a private mount namespace; ``$CAPS`` is a setpriv bounding
    set holding only ``caps``, for the commands the script runs under it."""
    require_root()
    require_tools("unshare", "setpriv", "mount")
    bounding = ",".join(["-all", *(f"+{c}" for c in caps)])
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-euc", script, "bash", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CAPS": bounding,
            "PYTHON": sys.executable,
            "PYTHONPATH": str(REPO),
        },
    )


HOLDER_SCRIPT = r"""
mnt=$1 second=$2
mount -t tmpfs nvme-agent-test "$mnt"
mkfifo -m 0666 "$mnt/ready"
cd "$mnt"
# The holder: a process of another user (nobody) with its cwd in the mount.
setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'echo ok > ready; exec sleep 60' &
holder=$!
trap 'kill $holder' EXIT
read -r _ < ready
cd /
echo "holder=$holder"
setpriv --bounding-set="$CAPS" --inh-caps=-all "$PYTHON" -c '
import os, sys
from nvme_agent.actions.holders import find_holders
dev = os.stat(sys.argv[1]).st_dev
print("found=" + ",".join(str(h.pid) for h in find_holders(os.major(dev), os.minor(dev))))
' "$mnt"
if setpriv --bounding-set="$CAPS" --inh-caps=-all mount -t tmpfs second "$second" 2>/dev/null
then echo mount=ok; else echo mount=denied; fi
"""


def holder_run(caps: list[str], tmp_path: Path) -> dict[str, str]:
    mnt, second = tmp_path / "mnt", tmp_path / "second"
    mnt.mkdir()
    second.mkdir()
    done = run_with_caps(caps, HOLDER_SCRIPT, str(mnt), str(second))
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_unit_capabilities_find_other_users_holders_and_mount(
    unit: Sections, tmp_path: Path
) -> None:
    out = holder_run(unit_caps(unit), tmp_path)
    assert out["holder"] in out["found"].split(","), out
    assert out["mount"] == "ok"


def test_without_ptrace_and_sys_admin_the_agent_would_be_blind(
    unit: Sections, tmp_path: Path
) -> None:
    """Control: CAP_SYS_PTRACE and CAP_SYS_ADMIN in the unit are what make the above work."""
    caps = [c for c in unit_caps(unit) if c not in ("sys_ptrace", "sys_admin")]
    out = holder_run(caps, tmp_path)
    assert out["holder"] not in out["found"].split(","), out
    assert out["mount"] == "denied"
