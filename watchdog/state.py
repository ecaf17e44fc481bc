"""Pulumi state surgery: remove a dead host's provider and everything bound to it.

The libvirt provider cannot even be configured against a dead host, so `up` would fail on every
resource bound to it. There is no Python API to delete one resource, so we export the state,
prune it here (a pure function over the exported deployment) and import it back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from components import naming
from components.topology import Host
from watchdog.errors import StateError

LIBVIRT_PROVIDER_TYPE = "pulumi:providers:libvirt"
DOMAIN_TYPE = "libvirt:index/domain:Domain"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class PruneResult:
    deployment: dict[str, Any]  # the inner `deployment` object, pruned
    removed: tuple[str, ...]  # URNs removed, in state order
    providers: tuple[str, ...]  # the provider URNs that started it


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def provider_urn(reference: str) -> str:
    """`URN::ID` (how resources name their provider) -> URN."""
    return reference.rsplit("::", 1)[0] if reference.count("::") >= 4 else reference


def _resources(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    resources = deployment.get("resources")
    if resources is None:
        return []
    if not isinstance(resources, list):
        raise StateError("the exported state has no resource list; is it a Pulumi deployment?")
    return resources


def host_providers(deployment: Mapping[str, Any], host: Host) -> list[str]:
    """URNs of the libvirt providers of `host`: named by components.naming, as the program names
    them (the URI is no identity: every ci host used to share one)."""
    name = naming.host_provider(host.name)
    return [r["urn"] for r in _resources(deployment)
            if r.get("type") == LIBVIRT_PROVIDER_TYPE and urn_name(r["urn"]) == name]


def _bound_to(r: Mapping[str, Any], removed: set[str]) -> bool:
    if r.get("provider") and provider_urn(r["provider"]) in removed:
        return True
    if r.get("parent") in removed or r.get("deletedWith") in removed:
        return True
    if any(d in removed for d in r.get("dependencies") or ()):
        return True
    return any(d in removed for deps in (r.get("propertyDependencies") or {}).values()
               for d in deps or ())


def prune(deployment: Mapping[str, Any], roots: Iterable[str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Remove `roots` and every resource bound to, parented by or depending on them (transitively),
    then every component left without any of its children (the dead host's component, the Vm
    components of the nodes that lived there: the program registers them afresh).

    Pure: returns a pruned deep copy and the URNs removed, in state order.
    """
    removed = set(roots)
    resources = _resources(deployment)
    children: dict[str, list[str]] = {}
    for r in resources:
        if r.get("parent"):
            children.setdefault(r["parent"], []).append(r["urn"])
    grew = bool(removed)
    while grew:  # dependents come after their dependencies in a state, but parents may not
        grew = False
        for r in resources:
            urn = r["urn"]
            if urn in removed:
                continue
            emptied = (not r.get("custom") and r.get("type") != STACK_TYPE and urn in children
                       and all(c in removed for c in children[urn]))
            if emptied or _bound_to(r, removed):
                removed.add(urn)
                grew = True
    out = copy.deepcopy(dict(deployment))
    if "resources" in out:
        out["resources"] = [r for r in out["resources"] if r["urn"] not in removed]
    if out.get("pending_operations"):
        out["pending_operations"] = [op for op in out["pending_operations"]
                                     if (op.get("resource") or {}).get("urn") not in removed]
    return out, tuple(r["urn"] for r in resources if r["urn"] in removed)


def prune_hosts(deployment: Mapping[str, Any], hosts: Iterable[Host]) -> PruneResult:
    providers = [urn for h in hosts for urn in host_providers(deployment, h)]
    pruned, removed = prune(deployment, providers)
    return PruneResult(pruned, removed, tuple(providers))


def domain_urns(deployment: Mapping[str, Any], node: str) -> list[str]:
    """The URN of `node`'s libvirt Domain, named by components.naming as the program names it."""
    name = naming.vm_domain(node)
    return [r["urn"] for r in _resources(deployment)
            if r.get("type") == DOMAIN_TYPE and urn_name(r["urn"]) == name]
