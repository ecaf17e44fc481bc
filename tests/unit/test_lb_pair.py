"""The optional LB pair (mac:network.vip): validation, rendering, and the single-LB default kept."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from components.cluster import lb_url
from components.roles import Secrets, keepalived, lb, mysql, post_boot_steps, user_data, web
from components.stack_file import load_topology
from components.topology import Role, Topology, parse_topology, to_config
from tests.unit.test_topology import problems_of, seed

ROOT = Path(__file__).resolve().parents[2]
SECRETS = Secrets(db_root_password="root-pw", db_app_password="app-pw")
VIP = "192.168.50.100"


def pair_raw() -> dict[str, Any]:
    """The seed with a second LB on its own host and a VIP."""
    raw = seed()
    raw["hosts"]["kvm4"] = {"uri": "qemu+ssh://root@10.0.0.14/system", "address": "10.0.0.14"}
    raw["nodes"]["lb2"] = {"role": "lb", "host": "kvm4", "ip": "192.168.50.9"}
    raw["network"]["vip"] = VIP
    return raw


def _cloud_config(text: str) -> dict[str, Any]:
    return YAML(typ="safe").load(io.StringIO(text))


def _files(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def test_a_pair_validates_and_round_trips() -> None:
    t = parse_topology(pair_raw())
    assert t.network.vip == VIP
    assert t.front_ip == VIP
    assert t.arbitrator.name == "lb1"
    assert parse_topology(to_config(t)) == t
    assert lb_url(t) == f"http://{VIP}/"


def test_the_lab_ha_stack_validates() -> None:
    t = load_topology(ROOT / "stacks" / "Pulumi.lab-ha.yaml")
    lbs = t.nodes_of(Role.LB)
    assert len(lbs) == 2 and len({n.host for n in lbs}) == 2
    assert t.network.vip is not None
    # garbd's LB shares no host with a DB node: one host death costs Galera at most 1 of 3 votes.
    assert t.arbitrator.host not in {n.host for n in t.nodes_of(Role.MYSQL)}


@pytest.mark.parametrize(("vip", "expected"), [
    ("10.1.2.3", "mac:network.vip = '10.1.2.3': is outside mac:network.cidr 192.168.50.0/24"),
    ("192.168.50.1", "mac:network.vip = '192.168.50.1': is the gateway's address; pick a free one"),
    ("192.168.50.10", "mac:network.vip = '192.168.50.10': is also the IP of lb1; the VIP floats"),
    ("192.168.50.255", "mac:network.vip = '192.168.50.255': is the network or broadcast address"),
    ("not-an-ip", "mac:network.vip = 'not-an-ip': must be an IP address"),
])
def test_a_bad_vip_gives_one_clear_problem(vip: str, expected: str) -> None:
    raw = pair_raw()
    raw["network"]["vip"] = vip
    problems = problems_of(raw)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_vip_needs_exactly_two_lbs() -> None:
    raw = seed()
    raw["network"]["vip"] = VIP
    assert problems_of(raw) == [f"mac:network.vip = '{VIP}': needs exactly 2 lb nodes (a pair that "
                                "hands it over), not 1; drop the vip for a single LB"]
    raw = pair_raw()
    raw["nodes"]["lb3"] = {"role": "lb", "host": "kvm1", "ip": "192.168.50.8"}
    assert any("needs exactly 2 lb nodes" in p for p in problems_of(raw))


def test_the_two_lbs_sit_on_distinct_hosts() -> None:
    raw = pair_raw()
    raw["nodes"]["lb2"]["host"] = "kvm3"
    assert any(p.startswith("mac:nodes.lb2.host = 'kvm3': also runs lb1 (lb)")
               for p in problems_of(raw)), problems_of(raw)


def test_the_single_lb_default_renders_no_keepalived() -> None:
    t = parse_topology(seed())
    node = t.nodes_of(Role.LB)[0]
    doc = _cloud_config(user_data(node, t, SECRETS))
    assert "keepalived" not in doc["packages"]
    files = _files(doc)
    assert keepalived.KEEPALIVED_CONF not in files and keepalived.SYSCTL_CONF not in files
    assert lb.GARBD_UNIT in files
    assert files[lb.HAPROXY_CFG].count("    bind ") == 3  # the LB's own IP only
    assert not any("keepalived" in str(c) or "sysctl" in str(c) for c in doc["runcmd"])
    assert web.db_hosts(t)[0] == node.ip
    assert lb_url(t) == f"http://{node.ip}/"


@pytest.fixture
def pair() -> Topology:
    return parse_topology(pair_raw())


def test_each_lb_of_a_pair_gets_keepalived_and_binds_the_vip(pair: Topology) -> None:
    lb1, lb2 = pair.nodes_of(Role.LB)
    confs = {}
    for node, peer in ((lb1, lb2), (lb2, lb1)):
        doc = _cloud_config(user_data(node, pair, SECRETS))
        assert "keepalived" in doc["packages"]
        files = _files(doc)
        conf = confs[node.name] = files[keepalived.KEEPALIVED_CONF]
        assert f"unicast_src_ip {node.ip}\n" in conf
        assert f"unicast_peer {{\n        {peer.ip}\n    }}" in conf
        assert f"{VIP}/24\n" in conf
        assert "vrrp_version 3" in conf and "advert_int 0.1\n" in conf
        assert "state BACKUP\n    nopreempt\n" in conf
        assert f"http://{node.ip}:8404/node" in conf  # HAProxy itself, not its backends
        assert "net.ipv4.ip_nonlocal_bind = 1" in files[keepalived.SYSCTL_CONF]
        cfg = files[lb.HAPROXY_CFG]
        for port in (80, 8404, 3306):
            assert f"    bind {node.ip}:{port}\n    bind {VIP}:{port}\n" in cfg
        # sysctl before HAProxy binds the VIP; keepalived after HAProxy is up
        flat = [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]
        assert flat.index(f"sysctl -p {keepalived.SYSCTL_CONF}") < flat.index("systemctl restart haproxy")
        assert flat.index("systemctl restart haproxy") < flat.index("systemctl restart keepalived")
    assert "priority 150" in confs["lb1"] and "priority 100" in confs["lb2"]


def test_garbd_runs_on_one_lb_of_a_pair(pair: Topology) -> None:
    lb1, lb2 = pair.nodes_of(Role.LB)
    assert lb.GARBD_UNIT in _files(_cloud_config(user_data(lb1, pair, SECRETS)))
    assert lb.GARBD_UNIT not in _files(_cloud_config(user_data(lb2, pair, SECRETS)))
    garbd_steps = [s for s in post_boot_steps(pair) if s.name.startswith("garbd-start-")]
    assert [s.node for s in garbd_steps] == ["lb1"]
    argv = mysql.galera_start_argv("galera_start.py", pair.nodes["db1"], pair, "/var/lib/mysql",
                                   "start", "bootstrap")
    assert argv[argv.index("--arbitrators") + 1] == lb1.ip


def test_the_app_reaches_the_db_writer_through_the_vip(pair: Topology) -> None:
    assert web.db_hosts(pair) == [VIP, "192.168.50.12", "192.168.50.11"]


def test_preemption_is_a_choice() -> None:
    conf = keepalived.render_keepalived_conf("lb1", "10.0.0.10", ["10.0.0.9"], "10.0.0.100", 24, 150,
                                             keepalived.VM_PATHS, preempt=True)
    assert "nopreempt" not in conf and "state BACKUP" in conf


def test_keepalived_accepts_the_rendered_config(pair: Topology, tmp_path: Path) -> None:
    binary = shutil.which("keepalived")
    if binary is None:
        pytest.skip("keepalived is not installed here (apt-get install keepalived)")
    for node in pair.nodes_of(Role.LB):
        conf = tmp_path / f"{node.name}.conf"
        conf.write_text(_files(_cloud_config(user_data(node, pair, SECRETS)))[keepalived.KEEPALIVED_CONF])
        # keepalived -t exits 143 either way; a problem is a line naming the file
        out = subprocess.run([binary, "-t", "-f", str(conf)], capture_output=True, text=True,
                             timeout=30, check=False)
        problems = [line for line in (out.stdout + out.stderr).splitlines()
                    if line.strip() and line.strip() != "Terminated"]
        assert problems == [], problems
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("advert_int 0.1", "advert_int x"))
    out = subprocess.run([binary, "-t", "-f", str(broken)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert str(broken) in out.stdout + out.stderr  # the check does see a bad config
