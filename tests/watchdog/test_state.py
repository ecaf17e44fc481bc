"""State pruning: a pure function over an exported deployment."""

from __future__ import annotations

import copy

from components import naming
from components.topology import Topology
from tests.watchdog.state_fixture import P, deployment
from watchdog.state import domain_urns, host_providers, prune, prune_hosts, urn_name


def names(urns: tuple[str, ...] | list[str]) -> set[str]:
    return {urn_name(u) for u in urns}


def test_prune_removes_the_provider_and_everything_bound_to_it(topology: Topology) -> None:
    before = deployment()
    original = copy.deepcopy(before)
    result = prune_hosts(before, [topology.hosts["kvm1"]])
    assert before == original  # pure: the input is untouched
    assert names(result.providers) == {"kvm1"}
    assert names(result.removed) == {
        "kvm1", "kvm1-pool", "kvm1-base-image",  # provider-bound
        "db1-root", "db1-cloud-init", "db1-domain", "web1-root", "web1-cloud-init", "web1-domain",
        "db1-bootstrap", "web1-app",  # deleted_with / depending on a dead domain
        "db2-join",  # depends on db1-bootstrap
        "db1", "web1",  # Vm components left without children (registered afresh on the spare)
    } | {"kvm1"}  # and the host's component (same name as its provider)
    host_components = [r["urn"] for r in result.deployment["resources"]
                       if r["type"] == "mac:index:HypervisorHost"]
    assert names(host_components) == {"kvm2", "kvm3", "spare1"}
    left = names([r["urn"] for r in result.deployment["resources"]])
    # the cluster keeps its other children; other hosts are untouched
    assert {"mac", "kvm2", "kvm2-pool", "db2", "db2-domain", "lb1-garbd", "web2-app"} <= left
    assert result.deployment["pending_operations"] == []
    # state order is kept
    order = [r["urn"] for r in before["resources"] if r["urn"] not in result.removed]
    assert [r["urn"] for r in result.deployment["resources"]] == order


def test_provider_found_by_the_programs_name(topology: Topology) -> None:
    d = deployment()
    assert names(host_providers(d, topology.hosts["kvm2"])) == {naming.host_provider("kvm2")}
    for r in d["resources"]:
        if r["type"] == "pulumi:providers:libvirt":
            r["inputs"] = r["outputs"] = {"uri": "qemu:///system"}  # one URI for all: no clue
    assert names(host_providers(d, topology.hosts["kvm2"])) == {"kvm2"}


def test_prune_of_unknown_host_or_empty_state_removes_nothing(topology: Topology) -> None:
    d = deployment()
    for r in d["resources"]:
        if r["type"] == "pulumi:providers:libvirt" and urn_name(r["urn"]) == "kvm3":
            d["resources"].remove(r)
            break
    assert prune_hosts({}, [topology.hosts["kvm1"]]).removed == ()
    pruned, removed = prune(d, [])
    assert removed == () and pruned["resources"] == d["resources"]


def test_prune_follows_parents_listed_after_children() -> None:
    d = {"resources": [
        {"urn": f"{P}x::child", "type": "t", "parent": f"{P}x::parent"},
        {"urn": f"{P}x::parent", "type": "t", "parent": f"{P}x::root"},
        {"urn": f"{P}x::root", "type": "t"},
    ]}
    _, removed = prune(d, [f"{P}x::root"])
    assert names(removed) == {"child", "parent", "root"}


def test_domain_urn_of_a_node() -> None:
    d = deployment()
    assert names(domain_urns(d, "web2")) == {"web2-domain"}
    assert domain_urns(d, "nope") == []
