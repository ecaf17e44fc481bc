"""Local libvirtd "hosts": several on one machine, started by hand (no systemd) and stopped by PID.
The engine tests (tests/engine) and the vm stack (`make vm`, vmsite/site.py) use them.

Each host is one libvirtd + virtlogd in its own mount namespace (`unshare -m`), with private bind
mounts over /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt,
/etc/libvirt/qemu (persistent domains and networks), /etc/libvirt/storage (pools) and its own
qemu.conf. From outside it answers on `qemu+unix:///system?socket=DIR/run/libvirt-sock`.
qemu runs as root in these instances: with Debian's default (libvirt-qemu) every define
re-probes QEMU's capabilities for ~45 s (see LAB-NOTES.md). KVM guests hang on these machines,
so every domain is TCG (`type='qemu'`). Nothing outside the hosts' directories is touched except
the test bridge, which the tests create and remove.

With `netns` set, the daemons start inside that network namespace (`ip netns exec`), so the taps
of the domains they start join a bridge that lives there (the vm stack's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = "libvirt-daemon-system qemu-system-x86 qemu-utils libvirt-clients"
QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
# What each host keeps private, mount point -> subdirectory of the host's directory.
PRIVATE = {
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
    "/etc/libvirt/qemu": "etc-qemu",
    "/etc/libvirt/storage": "etc-storage",
}


def missing() -> str | None:
    """Why local libvirtds cannot be run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run libvirtd"
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64", "unshare"):
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            return f"{tool} not installed: apt-get install --no-install-recommends {PACKAGES}"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Host:
    """One local libvirtd "host"."""

    name: str
    dir: Path
    pids: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    netns: str | None = None  # the network namespace the daemons (and so the guests) run in

    @property
    def socket(self) -> Path:
        return self.dir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def pool_root(self) -> Path:
        """Where this host's pools live (outside the private mounts: the tests read them too)."""
        return self.dir / "pools"

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True,
                              check=check, timeout=120)

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.virsh("version", check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def domains(self) -> set[str]:
        return set(self.virsh("list", "--all", "--name").stdout.split())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start (or restart) this host's virtlogd and libvirtd; returns once it answers."""
        for sub in [*PRIVATE.values(), "pools"]:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "qemu.conf"
        conf.write_text(QEMU_CONF)
        mounts = " && ".join(f"mkdir -p {target} && mount --bind {self.dir / sub} {target}"
                             for target, sub in PRIVATE.items())
        script = (f"set -e; {mounts} && mount --bind {conf} /etc/libvirt/qemu.conf && "
                  f"{_exe('virtlogd')} -d -p {self.dir / 'virtlogd.pid'} && "
                  f"exec {_exe('libvirtd')} --pid-file {self.dir / 'libvirtd.pid'}")
        log = open(self.dir / "libvirtd.log", "ab")  # noqa: SIM115 (closed once the child has it)
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        if self.netns is not None:  # `ip netns exec` execs: the PID stays libvirtd's
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "libvirtd.log").read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"libvirtd of {self.name} did not come up on {self.uri}:\n{tail}")
            time.sleep(0.2)
        self.pids = [self.proc.pid, *self._pid_file("virtlogd.pid")]

    def _pid_file(self, name: str) -> list[int]:
        try:
            return [int((self.dir / name).read_text().strip())]
        except (OSError, ValueError):
            return []

    def qemu_pids(self) -> list[int]:
        return [pid for f in (self.dir / "run" / "qemu").glob("*.pid")
                for pid in self._pid_file(str(f.relative_to(self.dir)))]

    def wipe(self) -> None:
        """Remove every domain, volume and pool this host has (after a test left them)."""
        for dom in self.domains():
            self.virsh("destroy", dom, check=False)
            self.virsh("undefine", dom, "--nvram", check=False)
        for pool in self.virsh("pool-list", "--all", "--name").stdout.split():
            self.virsh("pool-start", pool, check=False)
            self.virsh("pool-refresh", pool, check=False)
            for line in self.virsh("vol-list", pool, check=False).stdout.splitlines()[2:]:
                if line.split():
                    self.virsh("vol-delete", line.split()[0], "--pool", pool, check=False)
            self.virsh("pool-destroy", pool, check=False)
            self.virsh("pool-delete", pool, check=False)
            self.virsh("pool-undefine", pool, check=False)

    def stop(self, kill_guests: bool = True) -> None:
        """Stop the daemons by PID (and, by default, the qemu processes they started): what a
        dead host looks like from outside."""
        pids = ([*self.qemu_pids()] if kill_guests else []) + self._pid_file("virtlogd.pid")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if kill_guests else signal.SIGTERM)
        self.proc = None
        self.pids = []
        for f in ("virtlogd.pid", "libvirtd.pid"):
            (self.dir / f).unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)


@contextlib.contextmanager
def local_hosts(base: Path, names: Sequence[str], bridge: str) -> Iterator[dict[str, Host]]:
    """Libvirtd hosts `names` under `base`, started, each in a network namespace of its own
    holding `bridge` (no address, no uplink), stopped by PID and their namespaces removed at the
    end. Each libvirtd names its taps vnet0, vnet1, ... without knowing the others: hosts that
    share one namespace collide ("Unable to create tap device") when they start domains at once."""
    hosts = {name: Host(name, base / name, netns=f"mac-eng-{name}") for name in names}
    try:
        for host in hosts.values():
            assert host.netns is not None
            subprocess.run(["ip", "netns", "add", host.netns], check=True, capture_output=True)
            subprocess.run(["ip", "-n", host.netns, "link", "add", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "-n", host.netns, "link", "set", bridge, "up"], check=True)
        for host in hosts.values():
            host.start()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()
            if host.netns is not None:
                subprocess.run(["ip", "netns", "del", host.netns], check=False, capture_output=True)


def tiny_qcow2(path: Path, size: str = "16M") -> Path:
    """An empty qcow2 image: enough to define and start a TCG domain (it boots nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def iso_files(data: bytes) -> dict[str, bytes]:
    """The files in the root directory of a plain ISO 9660 image (no Rock Ridge/Joliet), by the
    name Linux shows (lower case, `;1` dropped): enough to check a NoCloud seed."""
    sector = 2048
    pvd = data[16 * sector: 17 * sector]
    if pvd[1:6] != b"CD001":
        raise ValueError("not an ISO 9660 image")
    root = pvd[156:190]
    extent, size = int.from_bytes(root[2:6], "little"), int.from_bytes(root[10:14], "little")
    files: dict[str, bytes] = {}
    pos, end = extent * sector, extent * sector + size
    while pos < end:
        length = data[pos]
        if length == 0:  # records do not cross sectors: skip to the next one
            pos = (pos // sector + 1) * sector
            continue
        rec = data[pos: pos + length]
        name_len = rec[32]
        name = rec[33: 33 + name_len].decode("ascii", "replace")
        flags = rec[25]
        if name not in ("\x00", "\x01") and not flags & 2:
            start, n = int.from_bytes(rec[2:6], "little"), int.from_bytes(rec[10:14], "little")
            files[name.split(";")[0].rstrip(".").lower()] = data[start * sector: start * sector + n]
        pos += length
    return files
