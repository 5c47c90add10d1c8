"""Build (and cache) the Debian 12 guest image the end-to-end suite boots.

The image is a raw ext4 root filesystem made without any loop mount: ``debootstrap`` into a
directory, a few files written into it, the initramfs regenerated with a small module list,
then ``mkfs.ext4 -d DIR`` turns the directory into ``root.img``.  The kernel and initramfs are
copied out next to it so QEMU can boot them with ``-kernel``/``-initrd``.

The cache is keyed by a hash of everything that decides the image's content: the package
list, the initramfs modules, the suite, the source of the functions that build and configure
the tree, and the kernel version the mirror offers.  Change any of them and a new image is
built; otherwise the cached one is reused (editing the cache handling itself does not force a
rebuild).  The cache lives outside the repository (``$NVME_AGENT_E2E_CACHE`` or
``/var/cache/nvme-agent-e2e``).  Images not used for :data:`PRUNE_AFTER_DAYS` days and
leftovers of killed builds are removed when an image is requested.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/nvme-agent-e2e")

#: Everything the guest needs: an init, udev, the kernel, the agent's Debian dependencies
#: (so the .deb installs offline), the NVMe and filesystem tools, and the guest agent.
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "procps",
    "psmisc",
    "python3",
    "python3-pyudev",
    "python3-psutil",
    "python3-yaml",
    "python3-systemd",
    "nvme-cli",
    "e2fsprogs",
    "xfsprogs",
    "qemu-guest-agent",
)

#: Modules the initramfs carries (MODULES=list keeps it small and fast to build): enough to
#: find the root filesystem on virtio-blk and to talk to the guest agent early.
INITRAMFS_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "ext4",
    "nvme",
)

#: Images (about 0.8 GB each) not used for this many days are deleted from the cache.
PRUNE_AFTER_DAYS = 7
#: Touched each time an image is handed out: what pruning looks at.
LAST_USED = "last-used"

ROOT_LABEL = "e2e-root"
ROOT_SIZE = "2G"
HOSTNAME = "nvme-guest"


class ImageBuildError(RuntimeError):
    """The guest image could not be built; the message names the failing step."""


@dataclass(frozen=True)
class AptSource:
    """One apt repository entry of the host: where debootstrap fetches the suite from."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class GuestImage:
    """A built guest image in the cache: root filesystem, kernel and initramfs."""

    directory: Path
    root: Path
    kernel: Path
    initrd: Path
    kernel_version: str
    key: str
    build_seconds: float | None = None
    manifest: dict[str, object] = field(default_factory=dict)


def cache_dir() -> Path:
    """The cache directory: ``$NVME_AGENT_E2E_CACHE`` or ``/var/cache/nvme-agent-e2e``."""
    env = os.environ.get("NVME_AGENT_E2E_CACHE")
    return Path(env) if env else DEFAULT_CACHE


def host_codename() -> str:
    """The host's Debian codename (the guest is the same release as the machine)."""
    text = Path("/etc/os-release").read_text(encoding="utf-8")
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if not match:
        raise ImageBuildError("/etc/os-release has no VERSION_CODENAME")
    return match.group(1)


def _parse_deb822(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri=uri,
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                )
            )
    return sources


def _parse_one_line(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        # Drop an options block: deb [arch=amd64 signed-by=...] URI suite comp...
        line = re.sub(r"\[[^]]*\]", "", line[4:]).strip()
        parts = line.split()
        if len(parts) >= 2:
            sources.append(AptSource(parts[0], (parts[1],), tuple(parts[2:])))
    return sources


def apt_sources(root: Path = Path("/")) -> list[AptSource]:
    """Every enabled ``deb`` entry of the host's apt configuration (both file formats)."""
    etc = root / "etc/apt"
    found: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        found += _parse_one_line(main.read_text(encoding="utf-8"))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                found += _parse_deb822(path.read_text(encoding="utf-8"))
            elif path.suffix == ".list":
                found += _parse_one_line(path.read_text(encoding="utf-8"))
    return found


def mirror_for(suite: str, sources: list[AptSource]) -> str:
    """The mirror URI the host itself uses for ``suite`` with the ``main`` component."""
    for source in sources:
        if suite in source.suites and "main" in source.components:
            return source.uri
    raise ImageBuildError(
        f"no apt source for suite {suite!r} with component 'main' in /etc/apt; "
        "debootstrap takes its mirror from the machine's apt configuration"
    )


def candidate_version(package: str) -> str:
    """The version apt would install for ``package`` (from the host's package lists)."""
    try:
        out = subprocess.run(
            ["apt-cache", "policy", package], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return "unknown"
    match = re.search(r"Candidate:\s*(\S+)", out)
    return match.group(1) if match and match.group(1) != "(none)" else "unknown"


def image_key(packages: tuple[str, ...], suite: str, kernel: str) -> str:
    """Hash of the image's inputs: packages, initramfs modules, suite, kernel version and the
    source of the functions that make the tree (so changing them rebuilds the image)."""
    digest = hashlib.sha256()
    digest.update("\n".join(packages).encode())
    digest.update("\0".join(INITRAMFS_MODULES).encode())
    digest.update(f"\0{suite}\0{kernel}\0{ROOT_LABEL}\0{ROOT_SIZE}\0{HOSTNAME}\0".encode())
    for function in (_configure, build):
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()[:16]


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(prefix):
            targets.append(target)
    return targets


def remove_tree(path: Path) -> None:
    """``rm -rf`` that never reaches into a mounted filesystem.

    debootstrap mounts proc (and, in some containers, binds the host's /dev) inside the tree
    it builds; a build killed mid-way leaves them mounted, and a plain rmtree would delete
    through them.  Unmount what is below ``path`` first; refuse if anything stays mounted.
    """
    if not path.exists():
        return
    for target in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)
    left = _mounts_below(path)
    if left:
        log.warning("not removing %s: still mounted below it: %s", path, ", ".join(left))
        return
    shutil.rmtree(path, ignore_errors=True)


def prune_cache(cache: Path, keep: Path, max_age_days: float = PRUNE_AFTER_DAYS) -> list[Path]:
    """Delete leftovers of killed builds and images unused for ``max_age_days``.

    Call with the cache lock held: no build is running then, so every ``.build-*`` directory
    is a leftover.  A guest still running from a deleted image is unaffected (QEMU holds the
    files open).  Returns what was removed.
    """
    removed: list[Path] = []
    cutoff = time.time() - max_age_days * 86400
    for path in sorted(cache.iterdir()):
        if path == keep or not path.is_dir():
            continue
        if path.name.startswith(".build-"):
            stale = True
        elif path.name.startswith("image-"):
            stamp = path / LAST_USED
            used = stamp if stamp.exists() else path
            stale = used.stat().st_mtime < cutoff
        else:
            stale = False
        if stale:
            log.info("guest image cache: removing %s", path)
            remove_tree(path)
            removed.append(path)
    return removed


def _run(step: str, argv: list[str]) -> None:
    log.info("guest image: %s: %s", step, " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise ImageBuildError(f"{step} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


def _configure(rootdir: Path) -> None:
    """Files that make the debootstrapped tree a bootable, headless, offline test guest."""
    (rootdir / "etc/hostname").write_text(HOSTNAME + "\n")
    (rootdir / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (rootdir / "etc/fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 1\n")
    # Root login on the serial console without a password: only for debugging a hung boot
    # from console.log; the suite itself talks to the guest agent.
    shadow = rootdir / "etc/shadow"
    shadow.write_text(re.sub(r"^root:[^:]*:", "root::", shadow.read_text(), flags=re.M))
    getty = rootdir / "etc/systemd/system/serial-getty@ttyS0.service.d"
    getty.mkdir(parents=True, exist_ok=True)
    (getty / "autologin.conf").write_text(
        "[Service]\nExecStart=\n"
        "ExecStart=-/sbin/agetty --autologin root --noclear %I 115200 linux\n"
    )
    # Units that only cost boot time in a throw-away offline guest.
    for unit in (
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "fstrim.timer",
        "man-db.timer",
        "systemd-timesyncd.service",
    ):
        link = rootdir / "etc/systemd/system" / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
    # Keep the journal in RAM: the root disk is a throw-away snapshot anyway.
    journald = rootdir / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "e2e.conf").write_text("[Journal]\nStorage=volatile\n")
    # A small initramfs with exactly the modules needed to mount root from virtio-blk.
    conf = rootdir / "etc/initramfs-tools/conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "e2e.conf").write_text("MODULES=list\nCOMPRESS=gzip\n")
    (rootdir / "etc/initramfs-tools/modules").write_text("\n".join(INITRAMFS_MODULES) + "\n")
    # The agent's .deb is installed offline from a payload disk: apt must not need lists.
    shutil.rmtree(rootdir / "var/cache/apt/archives", ignore_errors=True)
    (rootdir / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _kernel_version(rootdir: Path) -> str:
    kernels = sorted((rootdir / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"no kernel in {rootdir}/boot after debootstrap")
    return kernels[-1].name.removeprefix("vmlinuz-")


def build(workdir: Path, packages: tuple[str, ...], suite: str, mirror: str) -> dict[str, object]:
    """Build root.img, vmlinuz and initrd.img into ``workdir``; return the manifest."""
    rootdir = workdir / "rootfs"
    started = time.monotonic()
    _run(
        "debootstrap",
        [
            "debootstrap",
            "--variant=minbase",
            "--components=main",
            "--include=" + ",".join(packages),
            suite,
            str(rootdir),
            mirror,
        ],
    )
    debootstrap_s = time.monotonic() - started
    _configure(rootdir)
    version = _kernel_version(rootdir)
    _run("update-initramfs", ["chroot", str(rootdir), "update-initramfs", "-u", "-k", version])
    shutil.copyfile(rootdir / "boot" / f"vmlinuz-{version}", workdir / "vmlinuz")
    shutil.copyfile(rootdir / "boot" / f"initrd.img-{version}", workdir / "initrd.img")
    _run(
        "mkfs.ext4",
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            ROOT_LABEL,
            "-d",
            str(rootdir),
            str(workdir / "root.img"),
            ROOT_SIZE,
        ],
    )
    shutil.rmtree(rootdir)
    return {
        "suite": suite,
        "mirror": mirror,
        "packages": list(packages),
        "kernel_version": version,
        "debootstrap_seconds": round(debootstrap_s, 1),
        "build_seconds": round(time.monotonic() - started, 1),
    }


def _build_with_retry(
    workdir: Path, packages: tuple[str, ...], suite: str, mirror: str, attempts: int = 2
) -> dict[str, object]:
    """:func:`build`, tried again from scratch once: a CI machine's first build downloads
    ~200 packages, and one dropped connection to the mirror should not fail the suite."""
    for attempt in range(1, attempts + 1):
        try:
            return build(workdir, packages, suite, mirror)
        except ImageBuildError as exc:
            if attempt == attempts:
                raise
            log.warning("guest image build failed (attempt %d), retrying: %s", attempt, exc)
            remove_tree(workdir / "rootfs")
    raise AssertionError("unreachable")


def ensure_image(packages: tuple[str, ...] = PACKAGES, cache: Path | None = None) -> GuestImage:
    """Return the cached image for these inputs, building it first if it is missing.

    A lock file serialises concurrent builds; the build happens in a temporary directory
    that is renamed into place only when complete, so a killed build never looks cached.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    suite = host_codename()
    kernel = candidate_version("linux-image-amd64")
    key = image_key(packages, suite, kernel)
    final = cache / f"image-{key}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built_now: float | None = None
        if not (final / "manifest.json").is_file():
            mirror = mirror_for(suite, apt_sources())
            tmp = cache / f".build-{key}-{os.getpid()}"
            remove_tree(tmp)
            tmp.mkdir()
            try:
                manifest = _build_with_retry(tmp, packages, suite, mirror)
                manifest["key"] = key
                manifest["kernel_candidate"] = kernel
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
                remove_tree(final)
                tmp.rename(final)
            except BaseException:
                remove_tree(tmp)
                raise
            built_now = float(str(manifest["build_seconds"]))
        manifest = json.loads((final / "manifest.json").read_text())
        (final / LAST_USED).touch()
        prune_cache(cache, keep=final)
    return GuestImage(
        directory=final,
        root=final / "root.img",
        kernel=final / "vmlinuz",
        initrd=final / "initrd.img",
        kernel_version=str(manifest["kernel_version"]),
        key=key,
        build_seconds=built_now,
        manifest=manifest,
    )


def make_payload_disk(source: Path, image: Path, label: str = "e2e-payload") -> None:
    """A small ext4 disk image holding the files of ``source`` (the agent's .deb, policies)."""
    size_mib = 16 + sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) // 2**20 * 2
    _run(
        "payload mkfs.ext4",
        ["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(source), str(image), f"{size_mib}M"],
    )
