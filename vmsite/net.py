"""The vm stack's networks: one namespace per host plus a "switch" namespace joining them.

- `mac-vm`: the switch and the operator's seat. A bridge (the stack's `network.bridge` name)
  holding the gateway address; pulumi, the post-boot SSH steps, the watchdog and the tests run
  here (`argv`).
- `mac-vm-<host>`: one per host, its own network stack like a real machine: a bridge of the same
  name holding the host's management address (its sshd listens there), the taps of the VMs its
  libvirtd starts (each libvirtd names its taps vnet0, vnet1, ... without knowing the others, so
  hosts sharing one namespace collide), and a veth uplink to the switch's bridge.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.topology import Network
from lab.netns import delete_namespace, ip, namespaces, wait_exited

NAMESPACE = "mac-vm"
UPLINK = "uplink"  # the host end of a host's veth, inside its namespace


def argv(netns: str, command: Sequence[str]) -> list[str]:
    """`command` run inside `netns`."""
    return ["ip", "netns", "exec", netns, *command]


def host_namespace(switch: str, host: str) -> str:
    return f"{switch}-{host}"


def switch_port(host: str) -> str:
    """The switch end of a host's veth (IFNAMSIZ: 15 characters)."""
    return f"mvh-{host}"[:15]


def _bridge(netns: str, network: Network, addresses: Sequence[str]) -> None:
    """`netns` (created if needed) with lo up and `network.bridge` up, holding `addresses`."""
    if netns not in namespaces():
        ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    links = ip("-n", netns, "-o", "link", "show", check=False).stdout
    if f": {network.bridge}:" not in links:
        ip("-n", netns, "link", "add", network.bridge, "type", "bridge")
    for address in addresses:
        ip("-n", netns, "addr", "replace", f"{address}/{network.prefix_len}", "dev", network.bridge)
    ip("-n", netns, "link", "set", network.bridge, "up")


def create_switch(switch: str, network: Network) -> None:
    """The switch namespace: its bridge holds the gateway address."""
    _bridge(switch, network, [network.gateway])


def create_host(switch: str, host: str, network: Network, address: str) -> str:
    """Host `host`'s namespace on the switch: its bridge with `address`, the uplink plugged in.
    Returns the namespace's name."""
    netns = host_namespace(switch, host)
    _bridge(netns, network, [address])
    port = switch_port(host)
    if f": {port}@" not in ip("-n", switch, "-o", "link", "show", check=False).stdout:
        ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", UPLINK, "netns", netns)
    ip("-n", switch, "link", "set", port, "master", network.bridge, "up")
    ip("-n", netns, "link", "set", UPLINK, "master", network.bridge, "up")
    return netns


def remove(netns: str) -> list[int]:
    """Kill whatever still runs inside (by PID, waiting for it), then delete the namespace;
    returns the PIDs that had to be killed."""
    killed = delete_namespace(netns)
    wait_exited(killed)
    return killed
