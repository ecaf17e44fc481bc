"""The topology model: parsing, the cluster rules (table-driven and property-based), serialising."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.topology import (
    BOOL_KEYS,
    DEFAULT_SIZES,
    STRING_KEYS,
    STRUCTURED_KEYS,
    Role,
    Size,
    TopologyError,
    parse_topology,
    to_config,
    validate,
)


def seed() -> dict[str, Any]:
    """The seed cluster of ARCHITECTURE.md as raw config values."""
    return {
        "network": {"bridge": "br0", "cidr": "192.168.50.0/24", "gateway": "192.168.50.1"},
        "image": {"source": "https://example.org/debian-12.qcow2"},
        "hosts": {
            "kvm1": {"uri": "qemu+ssh://root@10.0.0.11/system", "address": "10.0.0.11"},
            "kvm2": {"uri": "qemu+ssh://root@10.0.0.12/system", "address": "10.0.0.12"},
            "kvm3": {"uri": "qemu+ssh://root@10.0.0.13/system", "address": "10.0.0.13"},
            "spare1": {"uri": "qemu+ssh://root@10.0.0.21/system", "address": "10.0.0.21"},
        },
        "spares": ["spare1"],
        "nodes": {
            "db1": {"role": "mysql", "host": "kvm1", "ip": "192.168.50.11"},
            "db2": {"role": "mysql", "host": "kvm2", "ip": "192.168.50.12"},
            "web1": {"role": "web", "host": "kvm1", "ip": "192.168.50.21"},
            "web2": {"role": "web", "host": "kvm2", "ip": "192.168.50.22"},
            "lb1": {"role": "lb", "host": "kvm3", "ip": "192.168.50.10"},
        },
    }


def problems_of(raw: dict[str, Any]) -> list[str]:
    try:
        parse_topology(raw)
    except TopologyError as err:
        return [str(p) for p in err.problems]
    return []


def test_seed_is_valid_and_typed() -> None:
    t = parse_topology(seed())
    assert t.nodes["db1"].role is Role.MYSQL
    assert t.active_hosts == ["kvm1", "kvm2", "kvm3"]
    assert t.live_hosts == ["kvm1", "kvm2", "kvm3", "spare1"]
    assert [n.name for n in t.nodes_on("kvm1")] == ["db1", "web1"]
    assert t.size_of(Role.MYSQL) == DEFAULT_SIZES[Role.MYSQL]
    assert t.health_url(t.nodes["web1"]) == "http://192.168.50.21:80/health.php"
    assert t.health_url(t.nodes["db2"]) == "http://192.168.50.12:9200/"


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    *parents, last = path.split(".")
    target = raw
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return raw


_DELETE = object()

# (what is broken, path to set, value, a fragment the one problem line must contain)
BROKEN: list[tuple[str, str, Any, str]] = [
    ("unknown host", "nodes.db1.host", "kvm9", "mac:nodes.db1.host = 'kvm9': is not a host"),
    ("spare hosts a node", "nodes.lb1.host", "spare1", "mac:nodes.lb1.host = 'spare1': is a spare"),
    ("two DB nodes on one host", "nodes.db2.host", "kvm1", "also runs db1"),
    ("two web nodes on one host", "nodes.web2.host", "kvm1", "also runs web1"),
    ("duplicate IP", "nodes.web2.ip", "192.168.50.21", "is also the IP of web1"),
    ("IP outside the CIDR", "nodes.web2.ip", "10.9.9.9", "is outside mac:network.cidr"),
    ("IP is the gateway", "nodes.web2.ip", "192.168.50.1", "is the gateway's address"),
    ("IP is not an IP", "nodes.web2.ip", "web2.local", "is not an IP address"),
    ("too few mysql", "nodes.db2", _DELETE, "needs at least 2 mysql nodes"),
    ("too few web", "nodes.web2", _DELETE, "needs at least 2 web nodes"),
    ("no lb", "nodes.lb1", _DELETE, "needs at least 1 lb nodes"),
    ("unknown role", "nodes.lb1.role", "cache", "unknown role; use one of: mysql, web, lb"),
    ("bad URI scheme", "hosts.kvm1.uri", "http://10.0.0.11", "unsupported libvirt URI scheme"),
    ("ssh URI with a malformed port", "hosts.kvm1.uri", "qemu+ssh://root@10.0.0.11:22x/system",
     "malformed port"),
    ("ssh URI without host", "hosts.kvm1.uri", "qemu+ssh:///system", "names no host"),
    ("host not a mapping", "hosts.kvm3", "10.0.0.13", "must be a mapping, not str"),
    ("host without address", "hosts.kvm3.address", _DELETE, "mac:hosts.kvm3.address: is missing"),
    ("unknown spare", "spares", ["spare9"], "mac:spares[0] = 'spare9': is not a host"),
    ("spares not a list", "spares", "spare1", "must be a list of names"),
    ("spare also failed", "failedHosts", ["spare1"], "is also in mac:failedHosts"),
    ("node on a failed host", "failedHosts", ["kvm3"], "is in mac:failedHosts"),
    ("bad CIDR", "network.cidr", "192.168.50.0/33", "is not a network in CIDR form"),
    ("gateway outside", "network.gateway", "10.1.1.1", "mac:network.gateway = '10.1.1.1': is outside"),
    ("missing network", "network", _DELETE, "mac:network: is missing"),
    ("missing image source", "image", {}, "mac:image.source: is missing"),
    ("unknown node key", "nodes.db1.cpu", 4, "mac:nodes.db1.cpu = 4: unknown key"),
    ("vcpu not an int", "sizes", {"web": {"vcpu": "two"}}, "mac:sizes.web.vcpu = 'two': must be an integer"),
    ("memory too small", "sizes", {"lb": {"memoryMiB": 16}}, "must be an integer from 256 to 4194304 MiB"),
    ("watchdog share > 1", "watchdog", {"maxUnhealthyShare": 1.5}, "must be a number > 0 and <= 1"),
    ("watchdog bad type", "watchdog", {"interval": "fast"},
     "mac:watchdog.interval = 'fast': must be a number"),
    ("webhook not http", "watchdog", {"webhookUrl": "ftp://x"}, "must be an http:// or https:// URL"),
    ("watchdog suspect interval > interval", "watchdog", {"suspectInterval": 2},
     "mac:watchdog.suspectInterval = 2.0: must be > 0 and <= mac:watchdog.interval (1 s)"),
    ("bad domain type", "hosts.kvm2.domainType", "xen", "mac:hosts.kvm2.domainType = 'xen': use one of"),
    ("postBoot not a bool", "postBoot", "yes", "mac:postBoot = 'yes': must be true or false"),
    ("three mysql", "nodes.db3", {"role": "mysql", "host": "kvm3", "ip": "192.168.50.13"},
     "takes exactly 2 mysql nodes"),
]


@pytest.mark.parametrize(("case", "path", "value", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_gives_one_clear_problem(case: str, path: str, value: Any, expected: str) -> None:
    problems = problems_of(_set(seed(), path, value))
    assert any(expected in p for p in problems), problems
    assert len(problems) == 1, problems


def test_every_problem_is_reported_at_once() -> None:
    raw = _set(seed(), "nodes.db2.host", "kvm1")
    raw = _set(raw, "nodes.web2.ip", "10.9.9.9")
    raw = _set(raw, "hosts.kvm3.uri", "http://x")
    assert len(problems_of(raw)) == 3


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+ssh://root@h1/system",
                                 "qemu+ssh://root@h1/system?keyfile=/k&known_hosts_verify=ignore",
                                 "qemu+tcp://h1/system", "test:///default"])
def test_accepted_uris(uri: str) -> None:
    assert problems_of(_set(seed(), "hosts.kvm1.uri", uri)) == []


def test_round_trip_through_config() -> None:
    raw = seed()
    raw["sizes"] = {"mysql": {"vcpu": 4, "memoryMiB": 8192, "diskGiB": 100}}
    raw["watchdog"] = {"cooldown": 60, "webhookUrl": "https://hooks.example.org/x"}
    raw["hosts"]["kvm1"]["fence"] = "none"
    raw["hosts"]["kvm2"]["domainType"] = "qemu"
    t = parse_topology(raw)
    assert t.sizes[Role.MYSQL] == Size(4, 8192, 100)
    assert t.watchdog.cooldown_s == 60
    assert parse_topology(to_config(t)) == t
    # The key lists the Pulumi side reads cover everything the model writes.
    assert set(to_config(t.with_(post_boot=False, ssh_user="ops", cluster_name="c"))) <= {
        *STRUCTURED_KEYS, *STRING_KEYS, *BOOL_KEYS}


# ---- properties ---------------------------------------------------------------------------

HOST_NAMES = [f"kvm{i}" for i in range(1, 7)]


@st.composite
def placements(draw: st.DrawFn) -> dict[str, Any]:
    """A seed-shaped config with arbitrary host assignments, spares and failed hosts."""
    raw = seed()
    raw["hosts"] = {h: {"uri": f"qemu+ssh://root@{h}/system", "address": f"10.0.0.{i}"}
                    for i, h in enumerate(HOST_NAMES, 1)}
    idle = draw(st.lists(st.sampled_from(HOST_NAMES), unique=True, max_size=3))
    split = draw(st.integers(0, len(idle)))
    raw["spares"], raw["failedHosts"] = idle[:split], idle[split:]
    for node in raw["nodes"].values():
        node["host"] = draw(st.sampled_from(HOST_NAMES))
    return raw


@settings(max_examples=300, deadline=None)
@given(placements())
def test_valid_iff_rules_hold(raw: dict[str, Any]) -> None:
    """parse_topology accepts exactly the placements that keep every rule."""
    nodes = raw["nodes"].values()
    idle = set(raw["spares"]) | set(raw["failedHosts"])
    pairs = [(n["role"], n["host"]) for n in nodes]
    rules_hold = len(set(pairs)) == len(pairs) and not any(n["host"] in idle for n in nodes)
    problems = problems_of(raw)
    assert (problems == []) == rules_hold, problems


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["db1", "db2", "web1", "web2", "lb1"]),
       st.sampled_from(["kvm1", "kvm2", "kvm3", "spare1"]))
def test_validate_agrees_with_parse(node: str, host: str) -> None:
    """validate() on a changed Topology is the check parse_topology makes on its config."""
    moved = parse_topology(seed()).move_nodes([node], host)
    assert (validate(moved) == []) == (problems_of(to_config(moved)) == [])


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4))
def test_any_ip_outside_cidr_is_rejected(ip: Any) -> None:
    raw = _set(seed(), "nodes.web2.ip", str(ip))
    inside = str(ip).startswith("192.168.50.")
    problems = problems_of(raw)
    if not inside:
        assert any("outside" in p for p in problems)
