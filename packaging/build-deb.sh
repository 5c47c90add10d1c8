#!/usr/bin/env bash
# Build the nvme-agent .deb from a clean copy of this tree.
#
#   packaging/build-deb.sh OUTDIR
#
# Leaves OUTDIR/nvme-agent_<version>_all.deb (plus the .buildinfo and .changes) and prints
# the .deb's path as the last line of standard output.  The copy holds the files git knows
# about plus untracked ones that are not ignored (so .venv, caches and build outputs stay
# out); outside a git checkout, everything but those is copied.  packaging/debian becomes
# debian/ in the copy; the work tree itself is never written to.
#
# Needs the build dependencies of packaging/debian/control (`make deb` installs them).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
outdir=$1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

for f in pyproject.toml packaging/debian/control nvme_agent/data/default-policy.yaml; do
	if [ ! -e "$top/$f" ]; then
		echo "build-deb: $top/$f is missing" >&2
		exit 1
	fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nvme-agent-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/nvme-agent

mkdir -p "$src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Tracked + untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
	git -C "$top" ls-files -z --cached --others --exclude-standard |
		(cd "$top" && while IFS= read -r -d '' f; do
			if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
		done) |
		tar -C "$top" --null --no-recursion -T - -cf - | tar -C "$src" -xf -
else
	tar -C "$top" --exclude-vcs --exclude=__pycache__ --exclude='*.egg-info' --anchored \
		--exclude=./.venv --exclude=./build --exclude=./dist --exclude=./debian \
		--exclude='./.*_cache' --exclude=./tests/e2e/.cache -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"

cd "$src"
# Debian's own python3 and tools only: a venv, pyenv or PYTHONPATH of the caller (tests run
# from .venv) must not leak into the package build.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP PIP_INDEX_URL PIP_EXTRA_INDEX_URL
if ! dpkg-checkbuilddeps; then
	echo "build-deb: missing build dependencies (run: make deb, or apt-get install them)" >&2
	exit 1
fi
log=$work/build.log
if ! dpkg-buildpackage -us -uc -b >"$log" 2>&1; then
	tail -n 60 "$log" >&2
	echo "build-deb: dpkg-buildpackage failed (last lines above)" >&2
	exit 1
fi

shopt -s nullglob
debs=("$work"/nvme-agent_*_all.deb)
if [ ${#debs[@]} -ne 1 ]; then
	echo "build-deb: expected one nvme-agent_*_all.deb, found: ${debs[*]:-none}" >&2
	exit 1
fi
cp "$work"/nvme-agent_*.deb "$work"/nvme-agent_*.buildinfo "$work"/nvme-agent_*.changes "$outdir"/
echo "$outdir/$(basename "${debs[0]}")"
