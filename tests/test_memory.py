"""The idle daemon's memory (issue 13): what it does not import, and the heap it gives back.

No size is asserted (sizes live in ``make bench``); what is guarded is the cause of the size:
the real ``nvme-agent run`` in a bed, after coldplug and a settle, has not imported OpenSSL
(``ssl``, ``_hashlib``: libssl and libcrypto mapped, ~4.5 MiB) nor psutil (~1.3 MiB), and
its hashes are the same without OpenSSL.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvme_agent.harness.agent import AgentProcess
from nvme_agent.harness.bed import Bed, unavailable_reason
from nvme_agent.harness.layout import ControllerConfig, NamespaceConfig
from nvme_agent.heap import release_free_memory
from nvme_agent.policy import load_policy_text

REPO = Path(__file__).resolve().parents[1]

#: Modules an idle daemon must not have imported: each one a regression of its RSS.  (The
#: blocked OpenSSL modules are not here: ``-X importtime`` lists an import that failed too.)
NOT_IMPORTED = ("psutil",)
#: Shared objects that must not be mapped into it: OpenSSL's libraries and the extension
#: modules of ``ssl``, ``hashlib`` and psutil, as the kernel sees them.
NOT_MAPPED = ("libssl.so", "libcrypto.so", "/_ssl.", "/_hashlib.", "/_psutil_linux.")

POLICY = """\
version: 1
defaults:
  mount_root: /run/media/nvme-agent-test/memory
rules:
  - name: data
    match: {fs_type: ext4}
    on_add:
      - mount: {path: "/run/media/nvme-agent-test/memory/{label}"}
      - signal: {process: some-daemon, signal: HUP}
    on_remove:
      - unmount: {}
"""


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    names.discard("imported package")  # the header line
    return names


@pytest.mark.umockdev
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_idle_daemon_has_not_imported_openssl_nor_psutil(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with Bed(multipath=True) as bed:
        bed.add_controller(ControllerConfig("nvme0", serial="SNMEM"))
        for nsid in (1, 2, 3):
            bed.add_namespace(NamespaceConfig("nvme0", nsid=nsid, fs="ext4", label=f"m{nsid}"))
        env = bed.env()
        env["PYTHONPROFILEIMPORTTIME"] = "1"
        agent = AgentProcess(policy, env, dry_run=True, workdir=tmp_path).start()
        try:
            assert agent.proc is not None
            answer = agent.request({"cmd": "settle", "timeout": 30})
            assert answer["ok"] is True, answer
            maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
            assert agent.stderr is not None
            agent.stderr.seek(0)
            log = agent.stderr.read().decode("utf-8", "replace")
        finally:
            agent.stop()
    names = imported(log)
    # The trace is real: the daemon's own modules and asyncio are in it.
    assert {"nvme_agent.service.daemon", "asyncio", "hashlib", "pyudev"} <= names
    assert "nvme-agent ready" in log
    assert sorted(names & set(NOT_IMPORTED)) == []
    assert [lib for lib in NOT_MAPPED if lib in maps] == []


def _lean_child(code: str, stdin: str = "") -> str:
    """Run ``code`` in a fresh interpreter after the program's start (without OpenSSL)."""
    prelude = "from nvme_agent.__main__ import without_openssl\nwithout_openssl()\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(max_size=4096), min_size=1, max_size=5))
def test_hashes_without_openssl_are_the_same(blobs: list[bytes]) -> None:
    code = (
        "import asyncio, hashlib, json, secrets, sys\n"
        "blobs = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]\n"
        "print(json.dumps({\n"
        "  'sha256': [hashlib.sha256(b).hexdigest() for b in blobs],\n"
        "  'sha1': [hashlib.sha1(b, usedforsecurity=False).hexdigest() for b in blobs],\n"
        "  'loaded': sorted(m for m in ('ssl', '_ssl', '_hashlib') if sys.modules.get(m)),\n"
        "  'token': len(secrets.token_hex(8)),\n"
        "}))\n"
    )
    got = json.loads(_lean_child(code, json.dumps([b.hex() for b in blobs])))
    assert got["loaded"] == []
    assert got["sha256"] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert got["sha1"] == [hashlib.sha1(b, usedforsecurity=False).hexdigest() for b in blobs]
    assert got["token"] == 16


def test_policy_digest_without_openssl_is_the_same() -> None:
    text = POLICY + "# a comment: \u00e9\n"
    code = (
        "from nvme_agent.policy import load_policy_text\n"
        f"print(load_policy_text({text!r}).digest)\n"
    )
    assert _lean_child(code).strip() == load_policy_text(text).digest


def test_without_openssl_keeps_what_is_already_loaded() -> None:
    code = (
        "import sys, ssl\n"
        "from nvme_agent.__main__ import without_openssl\n"
        "without_openssl()\n"
        "print(sys.modules['ssl'] is ssl, sys.modules.get('_ssl') is not None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True"]


def test_the_installed_program_starts_without_openssl() -> None:
    """The console script (what the unit runs) and ``python -m nvme_agent`` are one function."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nvme-agent"] == "nvme_agent.__main__:main"


def test_release_free_memory_finds_glibc_malloc_trim() -> None:
    # Debian's glibc has it: a wrong symbol lookup would make the daemon silently keep its
    # coldplug's peak for its whole life.
    assert release_free_memory() is True
