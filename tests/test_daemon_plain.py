"""The daemon on this machine's real udev (no NVMe here, no bed): sd_notify protocol, start-up
errors, and the intake's overrun path."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nvme_agent.topology.intake import Overrun, UdevIntake


def start(tmp_path: Path, policy: Path, **env: str) -> tuple[subprocess.Popen[str], socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nvme_agent",
            "run",
            "--policy",
            str(policy),
            "--runtime-dir",
            str(tmp_path / "run"),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-target",
            "stderr",
        ],
        env={k: v for k, v in os.environ.items() if k not in ("UMOCKDEV_DIR", "LD_PRELOAD")}
        | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, sock


def messages_until(sock: socket.socket, wanted: str, limit: int = 50) -> list[str]:
    seen: list[str] = []
    for _ in range(limit):
        seen.extend(sock.recv(4096).decode().splitlines())
        if wanted in seen:
            return seen
    raise AssertionError(f"{wanted} not among {seen}")


def test_watchdog_pings_and_a_missing_policy_logs_only(tmp_path: Path) -> None:
    proc, sock = start(tmp_path, tmp_path / "absent.yaml", WATCHDOG_USEC="200000", WATCHDOG_PID="")
    try:
        seen = messages_until(sock, "READY=1")
        assert any(m.startswith("STATUS=0 namespaces") for m in seen)
        pings = 0
        while pings < 3:  # a missing ping ends in the socket's timeout
            pings += sock.recv(4096).decode().splitlines().count("WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        messages_until(sock, "STOPPING=1")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "absent.yaml does not exist: logging changes only" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_invalid_policy_at_start_exits_1_naming_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: x\n    match: {nsid: banana}\n")
    proc, sock = start(tmp_path, policy)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        sock.close()
    assert proc.returncode == 1
    assert f"{policy}:4:" in err and "nsid" in err


def test_enobufs_from_the_monitor_becomes_an_overrun() -> None:
    intake = UdevIntake()

    class Overflowing:
        def poll(self, timeout: float) -> None:
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))

    intake.monitor = Overflowing()
    with pytest.raises(Overrun):
        list(intake.drain())
