"""The vm stack for real (root, `make engine`, `make images`): `pulumi up` with our plugins boots
five VMs from the golden images on four local libvirtd hosts inside the namespace mac-vm, and
everything is checked through real requests from inside it: HTTP through the LB, SQL through the
app, `wsrep_cluster_size` on the DB nodes, HAProxy's stats. Then one web and one DB VM are
replaced (their host changed in the working copy's stack file, `pulumi up`) while the LB keeps
serving, and `down` leaves nothing behind. One stack for the whole session (tests/vm/conftest.py);
the tests run in file order and the last one destroys it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from components.topology import Role
from lab.netns import namespaces
from vmimage.boot import EXPECTED_UNITS
from vmsite.site import Site

# What the post-boot steps change on top of a role's cloud-config (garbd-start starts garbd).
POST_BOOT_UNITS = {Role.LB: {"mac-garbd.service": "active"}}

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def sql(site: Site, node: str, query: str) -> str:
    """`query` on DB node `node` with the mariadb client over SSH (root, socket auth)."""
    ip = site.topology().nodes[node].ip
    code, out = site.ssh(ip, f'mariadb -N -B -e "{query}"')
    assert code == 0, f"{node}: {query}: {out}"
    return out.strip()


def cluster_size(site: Site, node: str) -> int:
    return int(sql(site, node, "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'").split()[-1])


def app(site: Site, base: str, token: str) -> dict[str, object]:
    code, body = site.http(f"{base}/index.php?token={token}", timeout=15)
    assert code == 200, f"{base}/index.php: {code} {body[:300]}"
    return dict(json.loads(body))


def haproxy_up(site: Site) -> set[str]:
    """The servers HAProxy's stats (CSV) report UP."""
    topology = site.topology()
    code, csv = site.http(f"http://{topology.arbitrator.ip}:8404/stats;csv")
    assert code == 200, csv[:300]
    return {f.split(",")[1] for f in csv.splitlines()
            if f.count(",") > 17 and f.split(",")[17].startswith("UP")}


@contextmanager
def lb_poller(site: Site, every_s: float = 0.5) -> Iterator[list[int]]:
    """GET / through the LB every `every_s` until the block ends: the status codes seen."""
    url = f"http://{site.topology().front_ip}/health.php"
    codes: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every_s):
            codes.append(site.http(url, timeout=5)[0])

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(timeout=30)


def domains_on(site: Site, host: str) -> set[str]:
    return site.hosts[host].domains()


def test_every_host_and_node_healthy_for_the_watchdog(vm_site: Site) -> None:
    ok, report = vm_site.status()
    assert ok, report
    targets = report["targets"]
    assert isinstance(targets, list)
    assert {t["name"] for t in targets if t["kind"] == "host"} == {"kvm1", "kvm2", "kvm3", "spare1"}
    assert {t["name"] for t in targets if t["kind"] == "node"} == set(vm_site.topology().nodes)


def test_vms_run_on_their_hosts_from_the_golden_images(vm_site: Site) -> None:
    topology = vm_site.topology()
    for name, node in topology.nodes.items():
        assert name in domains_on(vm_site, node.host)
        xml = vm_site.hosts[node.host].virsh("dumpxml", name).stdout
        assert "<type arch='x86_64'" in xml and "<kernel>" in xml, xml[:500]
        assert f"{node.role.value}.vmlinuz" in xml or "kernel" in xml
    assert domains_on(vm_site, "spare1") == set()


def test_cloud_init_applied_static_ip_and_role(vm_site: Site) -> None:
    for name, node in vm_site.topology().nodes.items():
        code, out = vm_site.ssh(node.ip, "hostname; ip -4 -o addr show eth0; cloud-init status")
        assert code == 0, out
        assert out.splitlines()[0] == name
        assert f"{node.ip}/24" in out and "status: done" in out, out
        # The role's units as its cloud-config and the post-boot steps leave them (the packaged
        # services stay disabled: MAC's own units run them).
        units = {**EXPECTED_UNITS[node.role], **POST_BOOT_UNITS.get(node.role, {})}
        _, out = vm_site.ssh(node.ip, " ; ".join(
            f"echo {u}=$(systemctl {'is-active' if want == 'active' else 'is-enabled'} {u})"
            for u, want in units.items()))
        assert set(out.split()) >= {f"{u}={want}" for u, want in units.items()}, (name, out)


def test_galera_has_two_data_nodes_and_garbd(vm_site: Site) -> None:
    for db in vm_site.topology().nodes_of(Role.MYSQL):
        assert cluster_size(vm_site, db.name) == 3  # db1, db2 and garbd on lb1
        assert sql(vm_site, db.name, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'"
                   ).split()[-1] == "Synced"
        code, body = vm_site.http(f"http://{db.ip}:9200/")
        assert code == 200, body


def test_both_web_nodes_serve_through_the_lb(vm_site: Site) -> None:
    assert {"web1", "web2"} <= haproxy_up(vm_site)
    lb = f"http://{vm_site.topology().front_ip}"
    served = {str(app(vm_site, lb, uuid.uuid4().hex)["web"]) for _ in range(8)}
    assert served == {"web1", "web2"}


def test_write_through_one_web_node_read_back_through_the_other(vm_site: Site) -> None:
    topology = vm_site.topology()
    web1, web2 = (f"http://{n.ip}" for n in topology.nodes_of(Role.WEB))
    token = uuid.uuid4().hex
    written = app(vm_site, web1, token)
    again = app(vm_site, web2, token)  # the same token: web2 finds the row, counts nothing new
    assert again["count"] == written["count"], (written, again)
    for db in topology.nodes_of(Role.MYSQL):  # the row is on both data nodes
        assert sql(vm_site, db.name, f"SELECT web FROM mac.visits WHERE token='{token}'") == "web1"


def test_noop_up_changes_nothing(vm_site: Site) -> None:
    # The up after the founding deploy switches the galera-start steps to their joining command
    # (components/cluster.py: the stack's record now says founded); from then on nothing changes.
    vm_site.deploy("test: settle after founding")
    vm_site.pulumi("up", "--stack", "vm", "--yes", "--skip-preview", "--expect-no-changes")
    assert not vm_site.site_healthy()


def test_replace_web_node_joins_the_pool_site_stays_up(vm_site: Site) -> None:
    lb = f"http://{vm_site.topology().front_ip}"
    before = app(vm_site, lb, uuid.uuid4().hex)["count"]
    vm_site.move("web1", "kvm3")
    with lb_poller(vm_site) as codes:
        vm_site.deploy("test: web1 to kvm3")
        vm_site.wait_healthy(timeout_s=300)
    assert "web1" in domains_on(vm_site, "kvm3") and "web1" not in domains_on(vm_site, "kvm1")
    assert "web1" in haproxy_up(vm_site)
    assert codes and set(codes) == {200}, codes  # the LB served throughout
    _, out = vm_site.ssh(vm_site.topology().nodes["web1"].ip, "cloud-init status")
    assert "status: done" in out, out
    assert int(str(app(vm_site, lb, uuid.uuid4().hex)["count"])) > int(str(before))


def test_replace_db_node_rejoins_galera_with_the_data(vm_site: Site) -> None:
    lb = f"http://{vm_site.topology().front_ip}"
    token = uuid.uuid4().hex
    app(vm_site, lb, token)
    vm_site.move("db1", "kvm3")
    with lb_poller(vm_site) as codes:
        vm_site.deploy("test: db1 to kvm3")
        vm_site.wait_healthy(timeout_s=600)
    assert "db1" in domains_on(vm_site, "kvm3") and "db1" not in domains_on(vm_site, "kvm1")
    assert cluster_size(vm_site, "db1") == 3 and cluster_size(vm_site, "db2") == 3
    # The new db1 got the data by state transfer, including what was written before the move.
    assert sql(vm_site, "db1", f"SELECT count(*) FROM mac.visits WHERE token='{token}'") == "1"
    assert codes and set(codes) == {200}, codes


def test_down_leaves_nothing(vm_site: Site) -> None:
    pids = [pid for host in vm_site.hosts.values() for pid in [*host.pids, *host.qemu_pids()]]
    assert pids
    vm_site.down()
    assert vm_site.netns not in namespaces()
    assert not [p for p in pids if _alive(p)]
    assert sorted(p.name for p in vm_site.run.root.iterdir()) in ([], ["logs"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
