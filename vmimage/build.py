"""Build one qcow2 image per tier (mysql, web, lb) from Debian bookworm with mmdebstrap (root).

One base build (kernel, cloud-init, sshd, networkd, guest agent) as a tarball; each tier extracts
it, installs its role's packages in a chroot and becomes `<tier>.qcow2` with `<tier>.vmlinuz` and
`<tier>.initrd` beside it (direct kernel boot). Each output carries a stamp, the hash of its inputs
(package lists, this file, mirror): a `make images` with unchanged inputs does nothing.

Usage (root): .venv/bin/python -m vmimage.build [--out DIR] [--tier mysql --tier web ...] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.roles import lb, mysql, web

REPO = Path(__file__).resolve().parents[1]
# Inside the checkout, git-ignored: the images belong to this tree's package lists and roles (a
# branch with other lists would overwrite a shared cache); `MAC_IMAGES_DIR` points elsewhere.
DEFAULT_OUT = Path(os.environ.get("MAC_IMAGES_DIR", REPO / ".images"))
SUITE = "bookworm"
MIRROR = os.environ.get("MAC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("MAC_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
DISK_SIZE = "2G"  # the ext4 file system; qcow2 stores only what is used

# What every VM needs to boot from a NoCloud seed and be reached: kernel + initramfs, systemd,
# cloud-init with netplan (-> systemd-networkd), sshd, the guest agent. `curl` is in every role's
# cloud-config (components/roles.user_data), `sudo` for a non-root `mac:sshUser`.
BASE_PACKAGES = (
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus",
    "cloud-init", "netplan.io", "iproute2", "openssh-server", "qemu-guest-agent",
    "ca-certificates", "curl", "sudo", "procps", "less",
)
# The role's packages come from the role modules: the cloud-config and the image list the same.
TIER_PACKAGES: dict[str, tuple[str, ...]] = {
    "mysql": mysql.PACKAGES,
    "web": web.PACKAGES,
    "lb": lb.PACKAGES,
}
# Debian enables a package's own unit at install; on a MAC VM the role's unit runs the daemon
# (mac-galera-start starts mariadb, mac-apache replaces apache2, mac-garbd replaces garb). Enabled,
# mariadb would start at boot with the rendered Galera config before anything decided how to join.
TIER_DISABLED_UNITS: dict[str, tuple[str, ...]] = {
    "mysql": ("mariadb.service",),
    "web": ("apache2.service",),
    "lb": ("garb.service",),
}
# Their SysV scripts go too: while /etc/init.d/NAME exists, every `systemctl enable/disable` of
# the roles' runcmd also runs update-rc.d (perl), seconds each under TCG. Native units stay.
TIER_SYSV_SCRIPTS: dict[str, tuple[str, ...]] = {
    "mysql": ("mariadb",),
    "web": ("apache2", "apache-htcacheclean"),
    "lb": ("haproxy", "garb"),
}
# Housekeeping a short-lived VM does not need; e2scrub_reap alone took ~20 s of a TCG boot.
BASE_DISABLED_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer",
                       "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer")
TIERS = tuple(TIER_PACKAGES)

CLOUD_CFG = """\
# MAC golden image: NoCloud seed only (no network probing for other datasources).
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
# Fingerprints on the console cost an ssh-keygen run each under TCG; nobody reads them there.
no_ssh_fingerprints: true
ssh:
  emit_keys_to_console: false
"""
FSTAB = "LABEL=root / ext4 defaults,noatime,errors=remount-ro 0 1\n"
POLICY_RC_D = "#!/bin/sh\nexit 101\n"
# The image has its packages: cloud-init's package module would run `apt-get update` at every
# first boot (a replacement VM must not need the mirror). The same user-data still installs the
# packages on a plain cloud image.
NO_PACKAGE_MODULE = "package-update-upgrade-install"


@dataclass(frozen=True)
class TierResult:
    tier: str
    built: bool
    seconds: float
    qcow2_mb: float


def sources() -> list[str]:
    return [f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main",
            f"deb {SECURITY_MIRROR} {SUITE}-security main"]


def inputs_hash(*parts: object) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for part in parts:
        h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:16]


def base_hash() -> str:
    return inputs_hash(BASE_PACKAGES, sources())


def tier_hash(tier: str) -> str:
    return inputs_hash(base_hash(), TIER_PACKAGES[tier], TIER_DISABLED_UNITS[tier],
                       TIER_SYSV_SCRIPTS[tier], BASE_DISABLED_UNITS)


def outputs(out: Path, tier: str) -> list[Path]:
    return [out / f"{tier}.qcow2", out / f"{tier}.vmlinuz", out / f"{tier}.initrd"]


def up_to_date(stamp: Path, digest: str, files: Sequence[Path]) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == digest and all(f.is_file() for f in files)


def run(argv: Sequence[str], **kwargs: object) -> None:
    """Run a build step; its output goes to stderr (stdout carries only the report)."""
    print("+", " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run(list(argv), check=True, stdout=sys.stderr, **kwargs)  # type: ignore[call-overload]


def build_base(out: Path) -> bool:
    """The shared base tarball; False when it was up to date."""
    tarball, stamp = out / "base.tar", out / "base.stamp"
    digest = base_hash()
    if up_to_date(stamp, digest, [tarball]):
        return False
    stamp.unlink(missing_ok=True)
    partial = out / "base.tar.partial"
    # apt lists kept: the tiers install from them without another `apt-get update`.
    run(["mmdebstrap", "--mode=root", "--variant=minbase", "--format=tar",
         "--skip=cleanup/apt/lists", "--include=" + ",".join(BASE_PACKAGES),
         SUITE, str(partial), *sources()], stdin=subprocess.DEVNULL)
    partial.replace(tarball)
    stamp.write_text(digest + "\n")
    return True


def chroot(root: Path, script: str) -> None:
    """Run `script` (sh) in the tier's root with /proc, /sys and /dev, in a private mount namespace
    so nothing stays mounted whatever happens."""
    run(["unshare", "--mount", "--propagation", "private", "sh", "-euc",
         'mount -t proc proc "$1/proc"; mount -t sysfs sysfs "$1/sys"; mount --rbind /dev "$1/dev"; '
         'chroot "$1" /bin/sh -euc "$2"', "chroot", str(root), script],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"})


def customize(root: Path, tier: str) -> None:
    """Settings every tier shares (LAB-NOTES "Real VMs under qemu") plus the tier's disabled units."""
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/cloud/cloud.cfg.d/90-mac.cfg").write_text(CLOUD_CFG)
    cloud_cfg = root / "etc/cloud/cloud.cfg"
    lines = cloud_cfg.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() != f"- {NO_PACKAGE_MODULE}"]
    if len(kept) != len(lines) - 1:
        raise RuntimeError(f"{cloud_cfg}: no single '- {NO_PACKAGE_MODULE}' line to remove")
    cloud_cfg.write_text("".join(kept))
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/machine-id").write_text("")  # a new one per VM at first boot
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # cloud-init makes them per instance
    disabled = " ".join([*TIER_DISABLED_UNITS[tier], *BASE_DISABLED_UNITS])
    sysv = " ".join(f"/etc/init.d/{name} /etc/rc?.d/[SK][0-9][0-9]{name}" for name in TIER_SYSV_SCRIPTS[tier])
    chroot(root, f"systemctl enable systemd-networkd.service; systemctl disable {disabled}; rm -f {sysv}; "
                 "apt-get clean; rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old")


def build_tier(out: Path, tier: str, work: Path) -> TierResult:
    started = time.monotonic()
    files, stamp = outputs(out, tier), out / f"{tier}.stamp"
    digest = tier_hash(tier)
    if up_to_date(stamp, digest, files):
        return TierResult(tier, False, time.monotonic() - started, files[0].stat().st_size / 2**20)
    stamp.unlink(missing_ok=True)
    root = work / tier
    root.mkdir()
    run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(out / "base.tar")])
    (root / "usr/sbin/policy-rc.d").write_text(POLICY_RC_D)
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    chroot(root, "apt-get install -y -q --no-install-recommends " + " ".join(TIER_PACKAGES[tier]))
    (root / "usr/sbin/policy-rc.d").unlink()
    customize(root, tier)
    boot = root / "boot"
    kernel = max(boot.glob("vmlinuz-*"))
    initrd = boot / kernel.name.replace("vmlinuz-", "initrd.img-")
    shutil.copyfile(kernel, files[1])
    shutil.copyfile(initrd, files[2])
    raw = work / f"{tier}.raw"
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw), DISK_SIZE])
    partial = out / f"{tier}.qcow2.partial"
    run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(partial)])
    partial.replace(files[0])
    raw.unlink()
    shutil.rmtree(root)
    stamp.write_text(digest + "\n")
    return TierResult(tier, True, time.monotonic() - started, files[0].stat().st_size / 2**20)


def build(out: Path, tiers: Sequence[str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base_built = build_base(out)
    base_s = time.monotonic() - started
    results = []
    with tempfile.TemporaryDirectory(prefix="mac-images-", dir=out) as tmp:
        for tier in tiers:
            results.append(build_tier(out, tier, Path(tmp)))
    return {
        "out": str(out),
        "base": {"built": base_built, "seconds": round(base_s, 1),
                 "tar_mb": round((out / "base.tar").stat().st_size / 2**20, 1)},
        "tiers": {r.tier: {"built": r.built, "seconds": round(r.seconds, 1), "qcow2_mb": round(r.qcow2_mb, 1)}
                  for r in results},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tier", action="append", choices=TIERS, help="default: every tier")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("vmimage.build: needs root (mmdebstrap --mode=root, chroot)", file=sys.stderr)
        return 2
    report = build(args.out.resolve(), args.tier or TIERS)
    if args.json:
        print(json.dumps(report))
    else:
        base = report["base"]
        print(f"base: {'built' if base['built'] else 'up to date'} ({base['seconds']} s, "
              f"{base['tar_mb']} MB tar)")
        for tier, figures in report["tiers"].items():
            state = "built" if figures["built"] else "up to date"
            print(f"{tier}: {state} ({figures['seconds']} s, {figures['qcow2_mb']} MB) "
                  f"in {report['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
