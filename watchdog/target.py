"""What the watchdog probes and what a probe tells: targets, their keys, probe results.

Plain data, no I/O: the detector and the planner read these without loading any client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from components.topology import HEALTH_ENDPOINTS, SSH_PORT, Node, Role, Topology


class Kind(StrEnum):
    HOST = "host"
    NODE = "node"
    VIP = "vip"  # the LB pair's floating IP: watched and reported, never remediated (detect.classify)


class TargetKey(NamedTuple):
    """Which target: a host or a node, by name. Prints as `node:db1` (logs and JSON)."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def host(cls, name: str) -> TargetKey:
        return cls(Kind.HOST, name)

    @classmethod
    def node(cls, name: str) -> TargetKey:
        return cls(Kind.NODE, name)


@dataclass(frozen=True)
class Target:
    """One thing to probe: a node's health URL or a host's management address."""

    kind: Kind
    name: str
    address: str  # a URL for a node, HOST:PORT for a host
    role: str = ""  # the node's role; "host" for hosts

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.kind, self.name)


@dataclass(frozen=True)
class ProbeResult:
    key: TargetKey
    ok: bool
    latency_s: float
    error: str | None
    at: float  # clock reading when the probe finished
    asked_at: float | None = None  # when the round asked for it (before waiting for a slot)


def targets(
    topology: Topology,
    url_for: Callable[[Node], str] | None = None,
    ssh_port: int = SSH_PORT,
) -> list[Target]:
    """Every node, every host the program manages (active hosts and spares, not failed ones), and
    the LB pair's VIP (each LB is probed as a node too)."""
    url = url_for or topology.health_url
    found = [Target(Kind.HOST, name, f"{topology.hosts[name].address}:{ssh_port}", "host")
             for name in topology.live_hosts]
    found += [Target(Kind.NODE, node.name, url(node), node.role.value)
              for node in sorted(topology.nodes.values(), key=lambda n: n.name)]
    if topology.network.vip is not None:
        monitor = HEALTH_ENDPOINTS[Role.LB]
        found.append(Target(Kind.VIP, "vip", f"http://{topology.network.vip}:{monitor.port}"
                            f"{monitor.path}", Role.LB.value))
    return found
