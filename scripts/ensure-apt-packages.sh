#!/usr/bin/env bash
# Install the Debian packages named as arguments that are not installed yet (idempotent).
# Usage: scripts/ensure-apt-packages.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift
missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "$label: Debian packages present"
	exit 0
fi
echo "$label: installing Debian packages: ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
	echo "$label: need root to install: ${missing[*]}" >&2
	exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
