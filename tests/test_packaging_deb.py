"""The Debian package: built once per run with packaging/build-deb.sh (about 10 s), then
inspected with dpkg-deb, lintian, systemd-analyze and Debian's own python3.

Installing it into a clean Debian system and checking that the service is enabled is the
real-guest e2e suite's job (tests/e2e); here the extracted package is checked instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.packaging import REPO, UNIT_NAME, add_host_units, require_tools, verify_unit

from nvme_agent import __version__
from nvme_agent.cli import catalog
from nvme_agent.cli.clidoc import describe
from nvme_agent.cli.completion import render as render_completion
from nvme_agent.cli.main import build_parser
from nvme_agent.policy import schema_text

POLICY_SOURCE = Path("nvme_agent/data/default-policy.yaml")

#: Debian packages the .deb must depend on (upstream names map to these).
PYTHON_DEPENDS = {"python3-pyudev", "python3-psutil", "python3-yaml", "python3-systemd"}

EXPECTED_FILES = (
    "usr/bin/nvme-agent",
    "usr/lib/python3/dist-packages/nvme_agent/__init__.py",
    "usr/lib/python3/dist-packages/nvme_agent/cli/main.py",
    "usr/lib/python3/dist-packages/nvme_agent/service/daemon.py",
    "usr/lib/tmpfiles.d/nvme-agent.conf",
    "usr/lib/sysusers.d/nvme-agent.conf",
    "etc/nvme-agent/policy.yaml",
    "usr/share/man/man8/nvme-agent.8.gz",
    "usr/share/man/man5/nvme-agent.policy.5.gz",
    "usr/share/bash-completion/completions/nvme-agent",
    "usr/share/zsh/vendor-completions/_nvme-agent",
    "usr/lib/systemd/catalog/nvme-agent.catalog",
    "usr/share/nvme-agent/schema.json",
    "usr/share/nvme-agent/examples/policy.yaml",
    "usr/share/doc/nvme-agent/copyright",
)

#: Where debhelper may put the unit (dh_installsystemd decides, by release).
UNIT_DIRS = ("lib/systemd/system", "usr/lib/systemd/system")


@dataclass(frozen=True)
class Built:
    deb: Path
    changes: Path
    tree: Path  # the package extracted with dpkg-deb -x
    control: Path  # its control area (dpkg-deb -e)
    source: Path  # the tree it was built from


def run(
    argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=cwd
    )


def source_tree(tmp: Path) -> Path:
    """The tree to build: the checkout, or a temporary copy with a placeholder policy while
    the default policy has not been written yet (never written into the checkout)."""
    if (REPO / POLICY_SOURCE).exists():
        return REPO
    copy = tmp / "src"
    shutil.copytree(
        REPO,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", ".cache"
        ),
    )
    (copy / POLICY_SOURCE).parent.mkdir(parents=True, exist_ok=True)
    (copy / POLICY_SOURCE).write_text("# placeholder for the packaging test\n")
    return copy


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    require_tools("dpkg-buildpackage", "dpkg-deb", "dh", "dpkg-checkbuilddeps")
    tmp = tmp_path_factory.mktemp("deb")
    top = source_tree(tmp)
    out = tmp / "out"
    done = run([str(top / "packaging/build-deb.sh"), str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    deb = Path(done.stdout.strip().splitlines()[-1])
    assert deb.parent == out and re.fullmatch(r"nvme-agent_.+_all\.deb", deb.name), deb
    (changes,) = out.glob("nvme-agent_*.changes")
    tree, control = tmp / "tree", tmp / "control"
    for argv in (
        ["dpkg-deb", "-x", str(deb), str(tree)],
        ["dpkg-deb", "-e", str(deb), str(control)],
    ):
        step = run(argv)
        assert step.returncode == 0, step.stderr
    yield Built(deb=deb, changes=changes, tree=tree, control=control, source=top)


def field(built: Built, name: str) -> str:
    done = run(["dpkg-deb", "-f", str(built.deb), name])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def relations(value: str) -> set[str]:
    """Package names of a Depends-style field (alternatives flattened, versions dropped)."""
    names: set[str] = set()
    for clause in value.split(","):
        for alt in clause.split("|"):
            if alt.strip():
                names.add(re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0])
    return names


def unit_path(tree: Path) -> Path:
    """The packaged unit, wherever debhelper put it (exactly one place)."""
    found = [tree / d / UNIT_NAME for d in UNIT_DIRS if (tree / d / UNIT_NAME).exists()]
    assert len(found) == 1, found
    return found[0]


def test_contents(built: Built) -> None:
    done = run(["dpkg-deb", "-c", str(built.deb)])
    assert done.returncode == 0, done.stderr
    listed = {line.split()[-1].removeprefix("./") for line in done.stdout.splitlines()}
    missing = [path for path in EXPECTED_FILES if path not in listed]
    assert not missing, missing
    assert len([d for d in UNIT_DIRS if f"{d}/{UNIT_NAME}" in listed]) == 1
    # nothing from the developer's checkout
    assert not [p for p in listed if re.search(r"(\.venv|\.git|__pycache__|\.pyc$|tests/)", p)]


def test_every_command_module_is_packaged(built: Built) -> None:
    package = built.tree / "usr/lib/python3/dist-packages/nvme_agent"
    for src in (REPO / "nvme_agent").rglob("*.py"):
        assert (package / src.relative_to(REPO / "nvme_agent")).exists(), src


def test_version_matches_the_code(built: Built) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
    assert field(built, "Version").split("-")[0] == __version__
    assert built.deb.name == f"nvme-agent_{__version__}_all.deb"


def test_depends_on_debian_python_packages(built: Built) -> None:
    depends = relations(field(built, "Depends"))
    assert depends >= PYTHON_DEPENDS | {"systemd", "udev", "mount"}
    # upstream (PyPI) names must not leak into the Debian dependencies
    assert not depends & {"python3-systemd-python", "python3-pyyaml", "systemd-python"}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    upstream = " ".join(pyproject["project"]["dependencies"]).lower()
    assert ("python3-jsonschema" in depends) == ("jsonschema" in upstream)


def test_policy_is_a_conffile(built: Built) -> None:
    conffiles = (built.control / "conffiles").read_text().split()
    assert "/etc/nvme-agent/policy.yaml" in conffiles
    packaged = (built.tree / "etc/nvme-agent/policy.yaml").read_bytes()
    assert packaged == (built.source / POLICY_SOURCE).read_bytes()


def test_postinst_creates_group_then_dirs_then_enables(built: Built) -> None:
    postinst = (built.control / "postinst").read_text()
    order = [
        postinst.find("systemd-sysusers"),
        postinst.find("systemd-tmpfiles"),
        postinst.find("deb-systemd-helper enable 'nvme-agent.service'"),
        postinst.find("deb-systemd-invoke $_dh_action 'nvme-agent.service'"),
    ]
    assert -1 not in order, postinst
    assert order == sorted(order)


def test_installed_unit_verifies(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(built.tree, root, symlinks=True)
    add_host_units(root)
    result = verify_unit(root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    packaged = unit_path(root).read_text()
    assert packaged == (REPO / "systemd" / UNIT_NAME).read_text()


def test_packaged_cli_runs_on_debian_python(built: Built) -> None:
    """The packaged entry point, with Debian's python3 and python3-* libraries only."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3")
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(built.tree / "usr/lib/python3/dist-packages"),
        "LC_ALL": "C.UTF-8",
    }
    script = built.tree / "usr/bin/nvme-agent"
    assert script.read_text().startswith("#!/usr/bin/python3")
    version = run([str(python), "-s", str(script), "--version"], env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"nvme-agent {__version__}"
    helped = run([str(python), "-s", str(script), "--help"], env=env)
    assert helped.returncode == 0, helped.stderr
    for sub in describe(build_parser()).subcommands:
        assert sub.path[-1] in helped.stdout


def test_packaged_man_page_and_completion(built: Built) -> None:
    require_tools("man")
    page = built.tree / "usr/share/man/man8/nvme-agent.8.gz"
    done = run(["man", "--warnings", "-l", str(page)], env={**os.environ, "MANWIDTH": "80"})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = re.sub(".\b", "", done.stdout)
    for sub in describe(build_parser()).subcommands:
        assert sub.name in text
    policy_page = built.tree / "usr/share/man/man5/nvme-agent.policy.5.gz"
    done = run(["man", "--warnings", "-l", str(policy_page)], env={**os.environ, "MANWIDTH": "80"})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "allowed_filesystems" in re.sub(".\b", "", done.stdout)
    completion = built.tree / "usr/share/bash-completion/completions/nvme-agent"
    assert completion.read_text() == render_completion(shell="bash")
    zsh = built.tree / "usr/share/zsh/vendor-completions/_nvme-agent"
    assert zsh.read_text() == render_completion(shell="zsh")


def test_lintian_clean(built: Built) -> None:
    require_tools("lintian")
    done = run(["lintian", "--fail-on", "error,warning", "--pedantic", str(built.changes)])
    assert done.returncode == 0, done.stdout + done.stderr
    # Every override carries a justification comment above it.
    overrides = (REPO / "packaging/debian/nvme-agent.lintian-overrides").read_text().splitlines()
    for i, line in enumerate(overrides):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and overrides[i - 1].startswith("#"), line


def test_policy_documentation_is_installed(built: Built) -> None:
    """Issue 14.11: the example and the schema ship; the default policy's modeline names the
    installed schema, which is what `nvme-agent check --print-schema` prints."""
    share = built.tree / "usr/share/nvme-agent"
    assert (share / "schema.json").read_text() == schema_text()
    example = (share / "examples/policy.yaml").read_text().splitlines()
    source = (built.source / "examples/policy.yaml").read_text().splitlines()
    assert example[1:] == source[1:]
    policy = (built.tree / "etc/nvme-agent/policy.yaml").read_text()
    for installed in (policy, example[0]):
        modeline = re.search(r"^# yaml-language-server: \$schema=(\S+)$", installed, re.M)
        assert modeline, "no yaml-language-server modeline"
        assert modeline.group(1) == "/usr/share/nvme-agent/schema.json"
    for doc in ("/usr/share/nvme-agent/examples/policy.yaml", "man nvme-agent.policy"):
        assert doc in policy


def test_journal_catalog_is_installed_and_loads(built: Built, tmp_path: Path) -> None:
    packaged = built.tree / catalog.INSTALL_PATH.lstrip("/")
    assert packaged.read_text() == catalog.render()
    require_tools("journalctl")
    root = tmp_path / "root"
    shutil.copytree(built.tree, root, symlinks=True)
    done = run(["journalctl", f"--root={root}", "--update-catalog"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    listed = run(["journalctl", f"--root={root}", "--list-catalog"])
    assert listed.stdout.count(" nvme-agent: ") == catalog.render().count("\n-- ")


def test_suggests_what_simulate_and_replay_need(built: Built) -> None:
    assert {"umockdev", "gir1.2-umockdev-1.0", "python3-gi"} <= relations(field(built, "Suggests"))


def test_rules_let_debhelper_place_the_unit() -> None:
    rules = (REPO / "packaging/debian/rules").read_text()
    commands = [line for line in rules.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if "systemd/system" in line]
    assert "install -m 0644 systemd/nvme-agent.service debian/nvme-agent.service" in rules


def test_make_deb_needs_neither_setup_nor_pypi() -> None:
    """Issue 14.12: `make deb` installs Debian build dependencies only."""
    require_tools("make")
    done = run(["make", "-n", "-C", str(REPO), "deb"])
    assert done.returncode == 0, done.stderr
    commands = done.stdout
    assert "packaging/build-deb.sh" in commands
    for word in (".venv", "pip ", "make setup", "PyPI", "-m venv"):
        assert word not in commands, word
    wanted = set(re.findall(r"ensure-apt-packages\.sh deb (.*)$", commands, re.M)[0].split())
    control = (REPO / "packaging/debian/control").read_text()
    build_depends = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
    assert build_depends
    for name in relations(re.sub(r"^#.*$", "", build_depends.group(1), flags=re.M)):
        # Virtual packages of debhelper and dh-python.
        if not name.startswith("dh-sequence-") and name != "debhelper-compat":
            assert name in wanted, name
    assert "lintian" in wanted


def license_text() -> str:
    return (REPO / "LICENSE").read_text()


def test_debian_copyright_carries_the_license_text() -> None:
    """The .deb ships the license as debian/copyright (dh_python3 drops dist-info copies)."""
    copyright_ = (REPO / "packaging/debian/copyright").read_text()
    paragraph = copyright_.split("License: MIT\n", 2)[2]
    body = "\n".join("" if line == " ." else line[1:] for line in paragraph.splitlines())
    expected = license_text().split("\n\n", 2)[2]  # after the title and the copyright line
    assert " ".join(body.split()) == " ".join(expected.split())
    assert "Copyright (c) 2025 nvme-agent developers" in license_text()


def test_the_wheel_carries_the_license(tmp_path: Path) -> None:
    """The wheel, built by the real build backend (setuptools) from a clean copy."""
    import zipfile

    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3")
    src = tmp_path / "src"
    listed = run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"])
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path / "wheel"
    out.mkdir()
    done = run(
        [
            str(python),
            "-c",
            "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))",
            str(out),
        ],
        cwd=src,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = out / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        licensed = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")]
        assert len(licensed) == 1
        assert zf.read(licensed[0]).decode() == license_text()
