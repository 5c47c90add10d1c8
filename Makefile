# nvme-agent developer entry points.  Run as root on Debian 12:
#   make demo   -> set up, then simulate the bundled hot-swap scenario
#   make test   -> set up, then lint, type-check and run the whole test suite
#   make soak   -> the long seeded storm (issue 16), figures in build/soak.json
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nvme-agent-installed

# What `make deb` needs, and nothing else: the build dependencies of packaging/debian/control
# and lintian.  The package is built with Debian's python3; no venv, no PyPI.
DEB_APT_PACKAGES := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools python3-wheel python3-pyudev python3-psutil python3-yaml python3-systemd \
	lintian
# Debian packages for development: build deps for systemd-python, the umockdev fake-udev
# testbed (with Debian's python3-gi for its controller), the filesystem tools real mounts
# need, the .deb's build deps (tests/test_packaging*.py build it), groff/man to render the
# generated man page, zsh to test the generated zsh completion, and journalctl (systemd) to
# check the journal catalog, FUSE (fuse, python3-fusepy) for the slow-disk fault tests.
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config libsystemd-dev \
	umockdev gir1.2-umockdev-1.0 libumockdev0 python3-gi \
	e2fsprogs xfsprogs util-linux mount psmisc kmod systemd \
	$(DEB_APT_PACKAGES) groff-base man-db zsh fuse python3-fusepy

.PHONY: setup apt venv demo test lint lint-types unit bench soak clean

setup: apt venv

apt:
	@scripts/ensure-apt-packages.sh setup $(APT_PACKAGES)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)
	@echo "setup: CLI at $(BIN)/nvme-agent"

demo: setup
	$(BIN)/nvme-agent simulate

# lint and unit need only the venv (a developer who has the Debian packages already does not
# wait for apt); `make test` sets everything up first.
lint: venv
	$(BIN)/ruff check nvme_agent tests benchmarks
	$(BIN)/ruff format --check nvme_agent tests benchmarks
	@$(MAKE) --no-print-directory lint-types

# The types alone (pre-commit runs this on every commit).
lint-types: venv
	$(BIN)/mypy --strict nvme_agent benchmarks tests

unit: venv
	$(BIN)/python -m pytest -q -m 'not e2e and not bench'

# The whole suite: lint and types, the fast suite (real mounts, the umockdev bed), then the
# real-guest suite (QEMU, about 6 minutes with a warm image cache, 8 cold).  `make unit` is
# the fast suite alone.
test: setup lint
	$(BIN)/python -m pytest -q -m 'not soak' $(PYTEST_ARGS)
	$(MAKE) --no-print-directory e2e

# Benchmarks (issue 13): every figure against a baseline measured in the same run, printed as
# a table and written to build/bench.json.  Figures, not pass/fail targets; run it on a quiet
# machine (the real-mount figures need root).  BENCH_ARGS=--quick is a smoke run,
# BENCH_ARGS="--only topology,policy" the in-process part alone.
bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	@echo "bench: to publish a full run in the README: $(BIN)/python -m benchmarks.doc build/bench.json"

# The soak (issue 16): the real daemon in the umockdev bed under the 10,000-step seeded storm
# of tests/test_storm.py (SOAK), with real mounts, reloads, kill -9 and overruns; as root.
# Hours on a busy 2-core machine.  Its figures go to build/soak.json (RELIABILITY.md quotes
# them: `python -m tests.support.reliability_doc` regenerates that section).  A failure names
# its seed; STORM_SEED=<seed> make soak replays it.  `make test` never runs it.
SOAK_FIGURES := build/soak.json
soak: setup
	NVME_AGENT_SOAK=1 $(if $(STORM_SEED),STORM_SEED=$(STORM_SEED)) $(BIN)/python -m pytest -q -m soak \
		-p no:cacheprovider tests/test_storm.py $(PYTEST_ARGS)
	@echo "soak: figures in $(SOAK_FIGURES)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# --- Packaging (appended) --------------------------------------------------------------------
DEB_OUT ?= dist

.PHONY: deb man

# The .deb, built from a clean copy of the tree with Debian's tools only (no `make setup`, no
# PyPI), then lintian (overrides are justified in packaging/debian/nvme-agent.lintian-overrides).
deb:
	@scripts/ensure-apt-packages.sh deb $(DEB_APT_PACKAGES)
	packaging/build-deb.sh $(DEB_OUT)
	lintian --fail-on error,warning $(DEB_OUT)/nvme-agent_*.changes

# The man pages, into build/man/: nvme-agent(8) from the argparse definitions,
# nvme-agent.policy(5) from the policy language's tables (nvme_agent/policy/spec.py).
man: setup
	@mkdir -p build/man
	$(BIN)/python -m nvme_agent.cli.manpage -o build/man/nvme-agent.8
	$(BIN)/python -m nvme_agent.cli.policyman -o build/man/nvme-agent.policy.5
	@echo "man: build/man/nvme-agent.8 build/man/nvme-agent.policy.5 (view: man -l FILE)"

# End-to-end suite (tests/e2e): boots Debian 12 guests in QEMU, see tests/e2e/README.md.
E2E_APT_PACKAGES := qemu-system-x86 qemu-utils debootstrap debian-archive-keyring fdisk e2fsprogs xfsprogs

.PHONY: e2e
e2e: setup
	@scripts/ensure-apt-packages.sh e2e $(E2E_APT_PACKAGES)
	$(BIN)/python -m pytest -m e2e tests/e2e $(PYTEST_ARGS)
