"""A real boot through our plugins: cloud-init inside a TCG guest reads the NoCloud ISO that
pulumi-resource-libvirt wrote.

A golden Debian image (tests/engine/golden.py) is uploaded as a Volume `source`, a copy-on-write
root volume goes over it, a CloudInitDisk carries user-data, meta-data and network-config, and a
Domain boots the kernel directly with the ISO as its cdrom and a NIC on the test bridge. The
user-data checks inside the guest that the hostname came from meta-data and that the
network-config file is on the seed, and only then powers the guest off: a domain that shuts
itself off proves cloud-init read all three files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine import golden
from tests.engine.conftest import TEST_BRIDGE, PulumiFactory, require_providers
from tests.engine.test_engine_basics import write_project
from vmsite.hypervisor import Host

pytestmark = pytest.mark.engine

BOOT_TIMEOUT_S = 420
USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, 'test "$(hostname)" = mac-boot-check && mount -o ro /dev/sr0 /mnt &&
      grep -q mac-net-marker /mnt/network-config && touch /run/mac-seed-ok']
power_state:
  mode: poweroff
  condition: [sh, -c, 'test -f /run/mac-seed-ok']
"""


@pytest.fixture(scope="module")
def image() -> Iterator[golden.Golden]:
    why = golden.missing()
    if why:
        pytest.skip(why)
    yield golden.build()


def test_cloud_init_reads_our_seed_in_a_real_boot(tmp_path: Path, pulumi_in: PulumiFactory,
                                                  libvirt_hosts: dict[str, Host],
                                                  image: golden.Golden) -> None:
    require_providers("libvirt")
    host = libvirt_hosts["h3"]
    program = f"""import json, pulumi, pulumi_libvirt as lv
p = lv.Provider("h3", uri={host.uri!r})
on = pulumi.ResourceOptions(provider=p)
pool = lv.Pool("pool", name="boot", type="dir",
               target=lv.PoolTargetArgs(path={str(host.pool_root / "boot")!r}), opts=on)
base = lv.Volume("golden", name="golden.qcow2", pool=pool.name, source={str(image.disk)!r}, opts=on)
root = lv.Volume("root", name="vm-root.qcow2", pool=pool.name, base_volume_id=base.id,
                 size=2 * 1024**3, opts=on)
seed = lv.CloudInitDisk("seed", name="vm-seed.iso", pool=pool.name,
    user_data=pulumi.Output.secret({USER_DATA!r}),
    meta_data=json.dumps({{"instance-id": "mac-boot-check-1", "local-hostname": "mac-boot-check"}}),
    network_config="# mac-net-marker\\nversion: 2\\nethernets: {{}}\\n", opts=on)
lv.Domain("vm", name="mac-boot-check", type="qemu", vcpu=1, memory=768, autostart=False,
    kernel={str(image.kernel)!r}, initrd={str(image.initrd)!r},
    cmdlines=[{{"root": "LABEL=root", "console": "ttyS0,115200", "net.ifnames": "0"}}, {{"_": "ro"}}],
    disks=[lv.DomainDiskArgs(volume_id=root.id)], cloudinit=seed.id,
    network_interfaces=[lv.DomainNetworkInterfaceArgs(bridge={TEST_BRIDGE!r}, mac="52:54:00:4d:41:43")],
    consoles=[lv.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")], opts=on)
"""
    p = pulumi_in(write_project(tmp_path / "boot", program))
    p.run("stack", "init", "boot")
    try:
        p.run("up", "--yes", "--skip-preview", timeout=600)
        xml = host.virsh("dumpxml", "mac-boot-check").stdout
        assert "<kernel>" in xml and "root=LABEL=root" in xml and "vm-seed.iso" in xml
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            state = host.virsh("domstate", "mac-boot-check").stdout.strip()
            if state == "shut off":
                break
            time.sleep(3)
        assert state == "shut off", (
            f"the guest did not power itself off within {BOOT_TIMEOUT_S} s: cloud-init did not "
            "read the seed (or the boot is slower than that)")
        # The guest is off now: refresh shows it, and up would start it again.
        p.run("refresh", "--yes", "--skip-preview")
        exported = json.loads(p.run("stack", "export").stdout)
        vm = next(r for r in exported["deployment"]["resources"] if r["urn"].endswith("::vm"))
        assert vm["outputs"]["running"] is False
    finally:
        p.run("destroy", "--yes", "--skip-preview", check=False, timeout=600)
