# MAC: common tasks. Every target uses the project's own virtualenv (.venv).
PY      ?= .venv/bin/python
STACK   ?= lab

.PHONY: setup packages engine-packages venv lint typecheck test test-fast lab lab-down engine bench validate

# Everything a fresh Debian machine needs: the daemons the lab runs (as root) and the venv.
setup: packages venv

LAB_PACKAGES = apache2 libapache2-mod-php php-mysql mariadb-server galera-4 galera-arbitrator-4 \
	haproxy keepalived iptables iproute2 rsync socat curl openssh-server
packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends $(LAB_PACKAGES); \
	else echo "not root: skipping Debian packages ($(LAB_PACKAGES))"; fi

# A local hypervisor for the engine tests (libvirtd + TCG qemu, started by the tests by hand).
ENGINE_PACKAGES = libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
engine-packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(ENGINE_PACKAGES); \
	else echo "not root: skipping Debian packages ($(ENGINE_PACKAGES))"; fi

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $@

lint: venv
	.venv/bin/ruff check .

typecheck: venv
	.venv/bin/mypy .

validate: venv
	.venv/bin/mac-watchdog validate

# The README's test command: lint, type-check, then every test (lab and engine tests skip with a
# reason where root, namespaces or the built engine are missing).
test: lint typecheck
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest tests/unit tests/watchdog -q

# The whole cluster for real on this machine (root): namespaces + real daemons, shown live until
# Ctrl-C. Break it from another shell with .venv/bin/mac-lab (README: "Play with the lab").
# LAB_ARGS="--watchdog-state /tmp/mac-wd" shows a watchdog's last decision in the view.
LAB_ARGS ?=
lab: venv
	$(PY) -m lab up --stack $(STACK) $(LAB_ARGS)

lab-down: venv
	$(PY) -m lab down

# Build the Pulumi CLI, Python language host and providers from their Go modules into .engine/.
engine:
	bash tools/engine/build.sh

bench: venv
	$(PY) bench/failover.py
	$(PY) bench/detection.py
	$(PY) bench/mock_scale.py
