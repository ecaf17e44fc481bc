"""The vm stack's network namespace: a bridge holding the gateway and the hosts' management
addresses. Every process that talks to VM or host addresses runs in it (`argv`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from components.topology import Network
from lab.netns import delete_namespace, ip, namespaces, wait_exited

NAMESPACE = "mac-vm"


def argv(netns: str, command: Sequence[str]) -> list[str]:
    """`command` run inside `netns`."""
    return ["ip", "netns", "exec", netns, *command]


def create(netns: str, network: Network, addresses: Sequence[str]) -> None:
    """The namespace with lo up and `network.bridge` holding the gateway and `addresses` (the hosts'
    management addresses), all in `network`'s prefix."""
    prefix = network.prefix_len
    if netns not in namespaces():
        ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    links = ip("-n", netns, "-o", "link", "show", check=False).stdout
    if f": {network.bridge}:" not in links:
        ip("-n", netns, "link", "add", network.bridge, "type", "bridge")
    for address in (network.gateway, *addresses):
        ip("-n", netns, "addr", "replace", f"{address}/{prefix}", "dev", network.bridge)
    ip("-n", netns, "link", "set", network.bridge, "up")


def remove_address(netns: str, network: Network, address: str) -> None:
    """A host "powered off": its management address is gone from the bridge."""
    ip("-n", netns, "addr", "del", f"{address}/{network.prefix_len}", "dev", network.bridge,
       check=False)


def add_address(netns: str, network: Network, address: str) -> None:
    ip("-n", netns, "addr", "replace", f"{address}/{network.prefix_len}", "dev", network.bridge)


def remove(netns: str) -> list[int]:
    """Kill whatever still runs inside (by PID, waiting for it), then delete the namespace;
    returns the PIDs that had to be killed."""
    killed = delete_namespace(netns)
    wait_exited(killed)
    return killed


def in_network(network: Network, address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(network.cidr, strict=False)
