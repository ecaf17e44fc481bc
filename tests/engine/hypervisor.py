"""A local libvirtd for the engine tests, started by hand (no systemd) and stopped by PID.

Debian's libvirt-daemon-system + qemu-system-x86 + qemu-utils. KVM guests hang on these machines,
so every domain is TCG (`type='qemu'`). The daemons run in the foreground as children of the test
process; nothing else is touched except the libvirt state directories they use. The `default`
NAT network is not started (its autostart link is moved aside while we run and put back after),
so the machine's networking is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")
DAEMONS = ("virtlogd", "libvirtd")
PACKAGES = "libvirt-daemon-system qemu-system-x86 qemu-utils libvirt-clients"
AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")


def missing() -> str | None:
    """Why a local libvirtd cannot be run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run libvirtd"
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64"):
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            return f"{tool} not installed: apt-get install --no-install-recommends {PACKAGES}"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=check,
                          timeout=120)


def answers() -> bool:
    try:
        return virsh("version", check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Hypervisor:
    uri: str
    started_pids: tuple[int, ...]


@contextlib.contextmanager
def local_libvirtd(log_dir: Path) -> Iterator[Hypervisor]:
    """A libvirtd answering on qemu:///system; reuses one already running (and leaves it)."""
    if answers():
        yield Hypervisor(URI, ())
        return
    procs: list[subprocess.Popen[bytes]] = []
    moved = None
    if AUTOSTART.exists():
        moved = AUTOSTART.with_name("default.xml.mac-engine-tests")
        AUTOSTART.rename(moved)
    try:
        Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        for daemon in DAEMONS:
            log = open(log_dir / f"{daemon}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs.append(subprocess.Popen([_exe(daemon)], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
            log.close()
        deadline = time.monotonic() + 30
        while not answers():
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join((log_dir / f"{d}.log").read_text(errors="replace")[-2000:]
                                 for d in DAEMONS)
                raise RuntimeError(f"libvirtd did not come up on {URI}:\n{logs}")
            time.sleep(0.2)
        yield Hypervisor(URI, tuple(p.pid for p in procs))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        if moved is not None and moved.exists():
            moved.rename(AUTOSTART)


def tiny_qcow2(path: Path, size: str = "16M") -> Path:
    """An empty qcow2 image: enough to define and start a TCG domain (it boots nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path
