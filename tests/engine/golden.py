"""A small bootable Debian image for the engine tests' real boot, built once and cached.

mmdebstrap (bookworm, minbase + the cloud kernel, systemd, udev, cloud-init) into a rootfs, then
`mkfs.ext4 -d` (no loop devices, no partitions) and `qemu-img convert` to qcow2; the kernel and
initrd are copied out for direct kernel boot (the image has no boot loader). ~45 s and ~500 MB
the first time (see LAB-NOTES.md), then reused from /var/cache/mac-engine-tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path("/var/cache/mac-engine-tests")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,cloud-init,iproute2"
RECIPE = f"bookworm minbase {PACKAGES} ext4 1536M datasource NoCloud v1"


@dataclass(frozen=True)
class Golden:
    disk: Path  # qcow2, ext4 labelled `root`
    kernel: Path
    initrd: Path


def missing() -> str | None:
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img"):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            return (f"{tool} not installed: apt-get install --no-install-recommends "
                    "mmdebstrap e2fsprogs qemu-utils")
    return None


def build() -> Golden:
    out = CACHE / ("golden-" + hashlib.sha256(RECIPE.encode()).hexdigest()[:12])
    golden = Golden(out / "disk.qcow2", out / "vmlinuz", out / "initrd.img")
    if all(p.exists() for p in (golden.disk, golden.kernel, golden.initrd)):
        return golden
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    subprocess.run(["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={PACKAGES}",
                    "bookworm", str(rootfs), MIRROR], check=True, capture_output=True, timeout=900)
    (rootfs / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (rootfs / "etc/cloud/cloud.cfg.d/90-mac.cfg").write_text("datasource_list: [ NoCloud, None ]\n")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.copy2(next((rootfs / "boot").glob("vmlinuz-*")), work / "vmlinuz")
    shutil.copy2(next((rootfs / "boot").glob("initrd.img-*")), work / "initrd.img")
    raw = work / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(rootfs), "-L", "root", str(raw), "1536M"], check=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], check=True)
    raw.unlink()
    shutil.rmtree(rootfs)
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return golden
