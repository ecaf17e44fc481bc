"""The MAC program under the real engine with our provider plugins, against local libvirtd hosts.

1. `pulumi preview` of dev and prod, every host URI rewritten (in a temporary copy of the stack
   file) to a local libvirtd socket: nothing is ever sent to the stacks' real addresses.
2. The ci stack for real: `up` creates pools, base volumes, copy-on-write root volumes,
   cloud-init ISOs and TCG domains on four local libvirtds (checked with virsh); a second `up`
   changes nothing; moving one node to another host replaces exactly that node's resources;
   `refresh` after a `virsh undefine` (or a stop) behind Pulumi's back shows the drift and `up`
   repairs it;
   `destroy` leaves nothing. The wall times go to .engine/report/ci-stack.json.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from components.stack_file import load_topology, stack_path, write_topology
from components.topology import Role
from tests.engine.conftest import (
    ENGINE,
    PROGRAM_PROVIDERS,
    Pulumi,
    PulumiFactory,
    copy_project,
    require_providers,
)
from tests.engine.test_engine_basics import write_project
from vmsite import hypervisor
from vmsite.hypervisor import Host

pytestmark = pytest.mark.engine

DOMAIN = "libvirt:index/domain:Domain"


def point_hosts_at(project: Path, stack: str, hosts: dict[str, Host]) -> dict[str, Host]:
    """Rewrite the project copy's stack file: every host becomes one of the local libvirtds
    (round robin), with its own pool directory, TCG domains. Returns stack host -> local host."""
    path = stack_path(project, stack)
    topo = load_topology(path)
    local = list(hosts.values())
    mapping = {name: hosts.get(name) or local[i % len(local)]
               for i, name in enumerate(sorted(topo.hosts))}
    rewritten = {name: replace(h, uri=mapping[name].uri, domain_type="qemu",
                               pool_path=str(mapping[name].pool_root / stack / name))
                 for name, h in topo.hosts.items()}
    write_topology(path, topo.with_(hosts=rewritten))
    # The stack's real addresses must be gone from every URI of the copy.
    assert all(h.uri.startswith("qemu+unix:///system?socket=")
               for h in load_topology(path).hosts.values())
    return mapping


@pytest.fixture(scope="module")
def program_providers() -> None:
    require_providers(*PROGRAM_PROVIDERS)


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_stack_config_passes_cli_validation(stack: str, tmp_path: Path,
                                            pulumi_in: PulumiFactory) -> None:
    """The real CLI checks stack files against Pulumi.yaml's declarations (a key declared without
    a default is required), which the mocks never do. Every host points at a socket nobody
    serves: the preview still succeeds, because our libvirt provider dials a host only when
    something on it changes (a PR can be previewed without access to the hosts)."""
    require_providers(*PROGRAM_PROVIDERS)
    project = copy_project(tmp_path / "mac", stacks=[stack])
    dead = {n: Host(n, tmp_path / "nohost" / n) for n in ("a",)}
    point_hosts_at(project, stack, dead)
    p = pulumi_in(project)
    p.run("stack", "init", stack)
    proc = p.run("preview", "--stack", stack, check=False)
    out = proc.stdout + proc.stderr
    assert "validating stack config" not in out, out
    assert "pulumi:pulumi:Stack" in out, out  # the program ran
    assert proc.returncode == 0, out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_preview(stack: str, tmp_path: Path, program_providers: None,
                 libvirt_hosts: dict[str, Host], pulumi_in: PulumiFactory) -> None:
    project = copy_project(tmp_path / "mac", stacks=[stack])
    point_hosts_at(project, stack, libvirt_hosts)
    p = pulumi_in(project)
    p.run("stack", "init", stack)
    result = json.loads(p.run("preview", "--stack", stack, "--json").stdout)
    types = [s["newState"]["type"] for s in result["steps"] if s["op"] == "create"]
    topo = load_topology(stack_path(project, stack))
    assert types.count(DOMAIN) == len(topo.nodes)
    assert types.count("pulumi:providers:libvirt") == len(topo.live_hosts)
    assert types.count("libvirt:index/cloudInitDisk:CloudInitDisk") == len(topo.nodes)
    assert types.count("command:remote:Command") > 0  # the post-boot steps, previewed
    # Secrets stay secret in the preview: no cloud-config (it holds passwords) in plain text.
    assert "#cloud-config" not in json.dumps(result)


def resources(p: Pulumi, stack: str) -> dict[str, dict[str, Any]]:
    exported = json.loads(p.run("stack", "export", "--stack", stack).stdout)
    return {r["urn"]: r for r in exported["deployment"].get("resources") or []}


def ids_of(state: dict[str, dict[str, Any]], node: str) -> dict[str, str]:
    """URN -> id of the resources that belong to `node` (its Vm component's children)."""
    return {urn: r.get("id", "") for urn, r in state.items()
            if urn.split("::")[-1].startswith(f"{node}-") or urn.endswith(f"::{node}")}


def timed(times: dict[str, float], label: str, p: Pulumi, *args: str, **kw: Any) -> str:
    t0 = time.monotonic()
    out = p.run(*args, **kw).stdout
    times[label] = round(time.monotonic() - t0, 2)
    return out


def run_ci_scenario(project: Path, p: Pulumi, hosts: dict[str, Host]) -> dict[str, float]:
    """up, no-op up, one-node move, refresh after an undefine behind Pulumi's back, destroy;
    asserting on each. Returns the wall times (also what bench/engine.py prints)."""
    path = stack_path(project, "ci")
    point_hosts_at(project, "ci", hosts)
    topo = load_topology(path)
    hypervisor.tiny_qcow2(Path(topo.image_of(Role.MYSQL).source))
    times: dict[str, float] = {}
    p.run("stack", "init", "ci")
    try:
        timed(times, "first_up_s", p, "up", "--stack", "ci", "--yes", "--skip-preview", timeout=1200)
        for name, node in topo.nodes.items():
            host = hosts[node.host]
            assert name in host.domains(), (name, node.host)
            xml = host.virsh("dumpxml", name).stdout
            assert "type='qemu'" in xml and f"{name}-root.qcow2" in xml and f"{name}-cloud-init.iso" in xml
            assert "org.qemu.guest_agent.0" in xml and "virbr-mac" in xml
            assert host.virsh("domstate", name).stdout.strip() == "running"
            vols = host.virsh("vol-list", f"mac-{node.host}").stdout
            assert f"{name}-root.qcow2" in vols and f"{name}-cloud-init.iso" in vols
            info = host.virsh("vol-dumpxml", f"{name}-root.qcow2", "--pool", f"mac-{node.host}").stdout
            assert "<backingStore>" in info and "mac-base-" in info  # copy-on-write over the base
        for name in topo.spares:  # warm spares: pool and base image, no domains
            assert not hosts[name].domains()
            assert "mac-base-" in hosts[name].virsh("vol-list", f"mac-{name}").stdout
        db1 = topo.nodes["db1"]
        seed = project / "db1-seed.iso"
        hosts[db1.host].virsh("vol-download", "db1-cloud-init.iso", str(seed), "--pool", f"mac-{db1.host}")
        files = hypervisor.iso_files(seed.read_bytes())
        assert set(files) == {"user-data", "meta-data", "network-config"}, set(files)
        assert files["user-data"].startswith(b"#cloud-config")
        assert b'"local-hostname": "db1"' in files["meta-data"]
        assert b"192.168.150.11/24" in files["network-config"]
        exported = json.dumps(resources(p, "ci"))
        assert "#cloud-config" not in exported  # the user-data (passwords) is stored encrypted

        timed(times, "noop_up_s", p, "up", "--stack", "ci", "--yes", "--expect-no-changes",
              timeout=600)

        before = resources(p, "ci")
        write_topology(path, topo.move_nodes(["web1"], "h3"))  # what the watchdog writes
        preview = json.loads(p.run("preview", "--stack", "ci", "--json").stdout)
        replaced = {s["urn"] for s in preview["steps"]
                    if s["op"] in ("replace", "create-replacement", "delete-replaced")}
        changed = {s["urn"] for s in preview["steps"] if s["op"] not in ("same", "read")}
        assert replaced, preview["steps"]
        assert all(urn.split("::")[-1].startswith("web1-") for urn in replaced), replaced
        assert all("web1" in urn.split("::")[-1] for urn in changed), changed
        timed(times, "move_one_node_s", p, "up", "--stack", "ci", "--yes", "--skip-preview",
              timeout=1200)
        after = resources(p, "ci")
        for other in topo.nodes:
            if other != "web1":
                assert ids_of(before, other) == ids_of(after, other), other
        assert "web1" in hosts["h3"].domains() and "web1" not in hosts["h1"].domains()
        assert "web1-root.qcow2" not in hosts["h1"].virsh("vol-list", "mac-h1").stdout

        # Drift: lb1's domain removed behind Pulumi's back; refresh notices, up repairs it.
        lb1 = hosts[topo.nodes["lb1"].host]
        lb1.virsh("destroy", "lb1")
        lb1.virsh("undefine", "lb1")
        refresh = p.run("refresh", "--stack", "ci", "--yes", "--skip-preview").stdout
        assert "lb1-domain" in refresh and "deleted" in refresh, refresh
        state = resources(p, "ci")
        assert not any(u.endswith("::lb1-domain") for u in state), "refresh kept the gone domain"
        p.run("up", "--stack", "ci", "--yes", "--skip-preview", timeout=600)
        assert "lb1" in lb1.domains()

        # Drift in place: db2 stopped behind Pulumi's back; refresh shows it, up starts it again.
        db2 = hosts[topo.nodes["db2"].host]
        db2.virsh("destroy", "db2")
        refresh = p.run("refresh", "--stack", "ci", "--yes", "--skip-preview").stdout
        assert "db2-domain" in refresh and "updated" in refresh, refresh
        p.run("up", "--stack", "ci", "--yes", "--skip-preview", timeout=600)
        assert db2.virsh("domstate", "db2").stdout.strip() == "running"
        p.run("up", "--stack", "ci", "--yes", "--expect-no-changes", timeout=600)
    finally:
        t0 = time.monotonic()
        p.run("destroy", "--stack", "ci", "--yes", "--skip-preview", check=False, timeout=1200)
        times["destroy_s"] = round(time.monotonic() - t0, 2)
    for host in hosts.values():
        assert not host.domains(), (host.name, host.domains())
        assert not host.virsh("pool-list", "--all", "--name").stdout.split(), host.name
        assert not any(host.pool_root.glob("ci/*/*")), list(host.pool_root.glob("ci/*/*"))
    assert not resources(p, "ci")
    return times


def test_ci_up_noop_move_refresh_destroy(tmp_path: Path, program_providers: None,
                                         libvirt_hosts: dict[str, Host],
                                         pulumi_in: PulumiFactory) -> None:
    project = copy_project(tmp_path / "mac", stacks=["ci"])
    times = run_ci_scenario(project, pulumi_in(project), libvirt_hosts)
    report = ENGINE / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "ci-stack.json").write_text(json.dumps(times, indent=2) + "\n")


def test_local_libvirtd_runs_a_tcg_domain(tmp_path: Path, libvirt_hosts: dict[str, Host]) -> None:
    """The hypervisor side on its own (no Pulumi): pool, copy-on-write volume, TCG domain."""
    host = libvirt_hosts["h1"]
    pool_dir = host.pool_root / "selftest"
    pool_dir.mkdir(parents=True, exist_ok=True)
    base = hypervisor.tiny_qcow2(pool_dir / "base.qcow2")
    name = "mac-engine-selftest"
    host.virsh("pool-create-as", name, "dir", "--target", str(pool_dir))
    try:
        host.virsh("pool-refresh", name)
        host.virsh("vol-create-as", name, "root.qcow2", "32M", "--format", "qcow2",
                   "--backing-vol", str(base), "--backing-vol-format", "qcow2")
        xml = tmp_path / "domain.xml"
        xml.write_text(f"""<domain type='qemu'>
  <name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{pool_dir / "root.qcow2"}'/><target dev='vda' bus='virtio'/></disk>
    <console type='pty'/>
  </devices>
</domain>""")
        t0 = time.monotonic()
        host.virsh("define", str(xml))
        assert time.monotonic() - t0 < 10, "define re-probed QEMU: is qemu.conf's user root?"
        try:
            host.virsh("start", name)
            assert "running" in host.virsh("domstate", name).stdout
            assert "type='qemu'" in host.virsh("dumpxml", name).stdout
        finally:
            host.virsh("destroy", name, check=False)
            host.virsh("undefine", name, check=False)
    finally:
        host.virsh("vol-delete", "root.qcow2", "--pool", name, check=False)
        host.virsh("pool-destroy", name, check=False)
        subprocess.run(["rm", "-rf", str(pool_dir)], check=False)


def test_volume_source_over_http(tmp_path: Path, program_providers: None,
                                 libvirt_hosts: dict[str, Host], pulumi_in: PulumiFactory) -> None:
    """`source` as an http URL (what dev and prod use): read where pulumi runs, streamed into the
    host's pool; here from a loopback HTTP server. A 404 fails naming the URL."""
    import functools
    import http.server
    import threading

    served = tmp_path / "www"
    image = hypervisor.tiny_qcow2(served / "base.qcow2", size="64M")
    payload = image.read_bytes()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    host = libvirt_hosts["h3"]
    pool_dir = host.pool_root / "http"
    program = f"""import pulumi, pulumi_libvirt as lv
p = lv.Provider("h3", uri={host.uri!r})
on = pulumi.ResourceOptions(provider=p)
pool = lv.Pool("pool", name="http", type="dir", target=lv.PoolTargetArgs(path={str(pool_dir)!r}), opts=on)
img = lv.Volume("img", name="base.qcow2", pool=pool.name, source=pulumi.Config().require("src"), opts=on)
pulumi.export("format", img.format)
"""
    p = pulumi_in(write_project(tmp_path / "http", program))
    p.run("stack", "init", "http")
    try:
        p.run("config", "set", "src", f"{url}/nope.qcow2")
        proc = p.run("up", "--yes", "--skip-preview", check=False)
        assert proc.returncode != 0 and f"{url}/nope.qcow2: HTTP 404" in proc.stdout + proc.stderr
        p.run("config", "set", "src", f"{url}/base.qcow2")
        p.run("up", "--yes", "--skip-preview")
        assert json.loads(p.run("stack", "output", "--json").stdout)["format"] == "qcow2"
        assert (pool_dir / "base.qcow2").read_bytes() == payload
    finally:
        p.run("destroy", "--yes", "--skip-preview", check=False)
        server.shutdown()
