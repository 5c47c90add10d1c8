"""The RPM spec (packaging/rpm/nvme-agent.spec), checked statically.

No rpmbuild with Fedora's macros runs here; these checks keep the spec in step with the code
and with the Debian package: the version, the installed files, the systemd scriptlets and a
policy that upgrades never overwrite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nvme_agent import __version__

SPEC = Path(__file__).resolve().parent.parent / "packaging/rpm/nvme-agent.spec"


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC.read_text()


def sections(spec: str) -> dict[str, str]:
    """Body of each %section (%prep, %install, %post, %files...)."""
    parts = re.split(
        r"^%(prep|generate_buildrequires|build|install|check|pre|post|preun|"
        r"postun|files|changelog)\b.*$",
        spec,
        flags=re.M,
    )
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = found.get(name, "") + body
    return found


def tag(spec: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*(.+?)\s*$", spec, flags=re.M)


def test_version(spec: str) -> None:
    assert tag(spec, "Version") == [__version__]
    assert re.search(rf"^\* .+ - {re.escape(__version__)}-1$", spec, flags=re.M)


def test_requires_distribution_python_packages(spec: str) -> None:
    requires = set(tag(spec, "Requires"))
    assert {"python3-pyudev", "python3-psutil", "python3-pyyaml", "python3-systemd"} <= requires
    assert "systemd" in requires


def test_systemd_scriptlets(spec: str) -> None:
    body = sections(spec)
    assert "%systemd_post nvme-agent.service" in body["post"]
    assert "%systemd_preun nvme-agent.service" in body["preun"]
    assert "%systemd_postun_with_restart nvme-agent.service" in body["postun"]
    assert "%sysusers_create_compat" in body["pre"]
    assert "%tmpfiles_create" in body["post"]


def test_files_match_installed_paths(spec: str) -> None:
    body = sections(spec)
    files = body["files"]
    assert re.search(
        r"^%config\(noreplace\) %\{_sysconfdir\}/nvme-agent/policy\.yaml$", files, flags=re.M
    )
    for path in (
        "%{_unitdir}/nvme-agent.service",
        "%{_tmpfilesdir}/nvme-agent.conf",
        "%{_sysusersdir}/nvme-agent.conf",
        "%{_bindir}/nvme-agent",
        "%{_mandir}/man8/nvme-agent.8*",
        "%{_mandir}/man5/nvme-agent.policy.5*",
        "%{bash_completions_dir}/nvme-agent",
        "%{zsh_completions_dir}/_nvme-agent",
        "%{_journalcatalogdir}/nvme-agent.catalog",
        "%{_datadir}/nvme-agent/schema.json",
        "%{_datadir}/nvme-agent/examples/policy.yaml",
    ):
        assert path in files, path
    # every installed file in %install is claimed in %files (the other way round is rpmbuild's)
    for dest in re.findall(r"%\{buildroot\}(\S+)", body["install"]):
        assert any(
            dest.rstrip("/") in line or dest in line + ".gz" for line in files.splitlines()
        ), dest


def test_installs_the_same_sources_as_the_debian_build(spec: str) -> None:
    """The spec installs generated files or the same repository files as debian/rules."""
    body = sections(spec)
    generated = set(re.findall(r"(?: -o|>) (\S+)", body["build"]))
    rules = (SPEC.parents[1] / "debian/rules").read_text()
    for src in re.findall(r"install -D -m 0644 (\S+) ", body["install"]):
        if src in generated or src.startswith("%{SOURCE"):
            continue
        assert f" {src} " in rules, f"{src} is not installed by debian/rules"


def test_python_and_distributions(spec: str) -> None:
    """Issue 14.12: the project needs Python >= 3.11, so RHEL 9 (3.9) is not claimed."""
    header = spec.split("\nName:", 1)[0]
    assert "RHEL/Alma/Rocky (>= 9" not in header and ">= 10" in header
    assert "python3-devel >= 3.11" in tag(spec, "BuildRequires")
    assert "python3 >= 3.11" in tag(spec, "Requires")
    assert "%{error:" in spec  # a build on RHEL 9 stops with the reason


def test_license_and_suggests(spec: str) -> None:
    assert re.search(r"^%license LICENSE$", sections(spec)["files"], flags=re.M)
    assert {"umockdev", "python3-gobject"} <= set(tag(spec, "Suggests"))


def test_generated_files_are_the_ones_debian_generates(spec: str) -> None:
    """The same generator commands as debian/rules (one source for both packages)."""
    rules = (SPEC.parents[1] / "debian/rules").read_text()
    build = sections(spec)["build"]
    for module in re.findall(r"\$\(RUN\) (nvme_agent\S*)", rules):
        assert f"-m {module}" in build, module
