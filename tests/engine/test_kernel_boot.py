"""Per-role images and direct kernel boot under the real engine, our plugins and local libvirtds.

The ci stack with one image per role, given as paths relative to the project directory: every
host's pool (the spare's too) gets each role's base image, kernel and initrd; the domains define
and start with `<kernel>`, `<initrd>` and the exact `<cmdline>`. The kernel is a stand-in (a boot
sector that halts: no Linux kernel exists on this machine outside the golden images, and booting
the real thing is tests/vm's job), so the test needs neither `make images` nor CPU for guests.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from components.host import pool_volume_name
from components.stack_file import load_topology, stack_path, write_topology
from components.topology import DEFAULT_KERNEL_CMDLINE, Image, Role
from tests.engine.conftest import (
    PROGRAM_PROVIDERS,
    Pulumi,
    PulumiFactory,
    copy_project,
    require_providers,
)
from tests.engine.test_mac_program import point_hosts_at, resources
from vmsite import hypervisor
from vmsite.hypervisor import Host

pytestmark = pytest.mark.engine

WEB_CMDLINE = "root=LABEL=root ro console=ttyS0,115200 quiet"


def halting_kernel(path: Path) -> Path:
    """A stand-in bzImage (Linux boot protocol 2.06) whose setup code runs `cli; hlt`: QEMU
    loads it with an initrd and a command line like a real kernel, and the guest idles."""
    data = bytearray(512 * 3)
    data[0x1F1] = 1  # setup sectors
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x200:0x202] = b"\xeb\x7e"  # jmp 0x280, over the header
    data[0x202:0x208] = b"HdrS" + struct.pack("<H", 0x0206)
    data[0x211] = 0x01  # loaded high
    data[0x22C:0x230] = struct.pack("<I", 0x37FFFFFF)  # highest initrd address
    data[0x238:0x23C] = struct.pack("<I", 2048)  # command line size
    data[0x280:0x284] = b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp back
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def mysql_untouched(p: Pulumi) -> bool:
    """A preview changes nothing of the mysql nodes nor of the files they use, while the other
    roles' VMs move to their own images."""
    changed, mysql = [], []
    for step in json.loads(p.run("preview", "--stack", "ci", "--json").stdout)["steps"]:
        if step["op"] in ("same", "read"):
            continue
        name = step["urn"].rsplit("::", 1)[-1]
        state = step.get("newState") or step.get("oldState") or {}
        changed.append(name)
        if name.startswith("db") or "mysql" in str((state.get("inputs") or {}).get("source", "")):
            mysql.append(f"{name} ({step['op']})")
    assert any(n.startswith("web1-") for n in changed), changed
    assert not mysql, mysql
    return True


def test_per_role_images_and_stand_in_kernel_boot_on_libvirtd(
        tmp_path: Path, libvirt_hosts: dict[str, Host], pulumi_in: PulumiFactory) -> None:
    require_providers(*PROGRAM_PROVIDERS)
    project = copy_project(tmp_path / "mac", stacks=["ci"])
    point_hosts_at(project, "ci", libvirt_hosts)
    path = stack_path(project, "ci")
    images = project / ".images"
    for role in ("mysql", "web", "lb"):
        hypervisor.tiny_qcow2(images / f"{role}.qcow2")
    for role in ("mysql", "web"):
        halting_kernel(images / f"{role}.vmlinuz")
        (images / f"{role}.initrd").write_bytes(role.encode() * 1000)
    per_role = {
        Role.MYSQL: Image(".images/mysql.qcow2", ".images/mysql.vmlinuz", ".images/mysql.initrd"),
        Role.WEB: Image(".images/web.qcow2", ".images/web.vmlinuz", ".images/web.initrd", WEB_CMDLINE),
        Role.LB: Image(".images/lb.qcow2"),  # boots from its disk, as before
    }
    one = per_role[Role.MYSQL]
    p = pulumi_in(project)
    p.run("stack", "init", "ci")
    try:
        # One image (with a kernel) for all first; then one per role, mysql's being that one.
        write_topology(path, load_topology(path).with_(image=one))
        p.run("up", "--stack", "ci", "--yes", "--skip-preview", timeout=1200)
        assert "<kernel>" in libvirt_hosts[load_topology(path).nodes["lb1"].host].virsh(
            "dumpxml", "lb1").stdout
        write_topology(path, load_topology(path).with_(image=per_role))
        topo = load_topology(path)
        assert topo.image == per_role
        assert mysql_untouched(p), "switching forms must keep mysql's files and VMs in place"
        p.run("up", "--stack", "ci", "--yes", "--skip-preview", timeout=1200)
        files = [f for image in per_role.values()
                 for f in (image.source, image.kernel, image.initrd) if f is not None]
        kinds = {".qcow2": "base", ".vmlinuz": "kernel", ".initrd": "initrd"}
        for name in topo.live_hosts:  # spares too: warm
            pool = libvirt_hosts[name].pool_root / "ci" / name
            for f in files:
                volume = pool / pool_volume_name(kinds[Path(f).suffix], f)
                # Read from the project directory (the path is relative), uploaded byte for byte.
                assert volume.read_bytes() == (project / f).read_bytes(), (name, f)
        for node in topo.nodes.values():
            host = libvirt_hosts[node.host]
            pool = host.pool_root / "ci" / node.host
            xml = host.virsh("dumpxml", node.name).stdout
            assert host.virsh("domstate", node.name).stdout.strip() == "running", node.name
            image = topo.image_of(node.role)
            backing = host.virsh("vol-dumpxml", f"{node.name}-root.qcow2", "--pool",
                                 f"mac-{node.host}").stdout
            assert str(pool / pool_volume_name("base", image.source)) in backing, node.name
            if image.kernel is None or image.initrd is None:
                assert "<kernel>" not in xml and "<cmdline>" not in xml, node.name
                continue
            assert f"<kernel>{pool / pool_volume_name('kernel', image.kernel)}</kernel>" in xml
            assert f"<initrd>{pool / pool_volume_name('initrd', image.initrd)}</initrd>" in xml
            cmdline = re.search(r"<cmdline>(.*)</cmdline>", xml)
            assert cmdline is not None and cmdline.group(1) == image.kernel_cmdline, xml
        assert topo.image_of(Role.MYSQL).kernel_cmdline == DEFAULT_KERNEL_CMDLINE
        p.run("up", "--stack", "ci", "--yes", "--expect-no-changes", timeout=600)
        sources = {r.get("inputs", {}).get("source") for r in resources(p, "ci").values()}
        assert ".images/mysql.qcow2" in sources and not any(
            str(project) in (s or "") for s in sources), "the state holds the paths as written"
        write_topology(path, topo.with_(image=one))  # and back: mysql's again stay in place
        assert mysql_untouched(p)
    finally:
        p.run("destroy", "--stack", "ci", "--yes", "--skip-preview", check=False, timeout=1200)
    for host in libvirt_hosts.values():
        assert not host.domains(), (host.name, host.domains())
        assert not any(host.pool_root.glob("ci/*/*")), list(host.pool_root.glob("ci/*/*"))
    assert json.dumps(resources(p, "ci")) == "{}"
