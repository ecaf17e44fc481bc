"""What the watchdog probes and what a probe tells: targets, their keys, probe results.

Plain data, no I/O: the detector and the planner read these without loading any client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from components.topology import SELF_ENDPOINTS, SSH_PORT, Node, Role, Topology


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
    # From a node's self-check (SELF_ENDPOINTS) that answered 200: the dependency it names as
    # degraded (the node works; something it needs does not), and the peer IPs it sees up.
    degraded: str | None = None
    sees: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SelfReport:
    """What a node's self-check body says (JSON: `degraded`, a reason or null/""; `sees`,
    {IP: bool}). A body that says nothing readable reports nothing: the status alone decides."""

    degraded: str | None = None
    sees: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, body: bytes) -> SelfReport:
        try:
            data = json.loads(body)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        degraded = data.get("degraded")
        sees = data.get("sees")
        return cls(str(degraded)[:200] if degraded else None,
                   frozenset(str(ip) for ip, up in sees.items() if up is True)
                   if isinstance(sees, dict) else frozenset())


def targets(
    topology: Topology,
    url_for: Callable[[Node], str] | None = None,
    ssh_port: int = SSH_PORT,
) -> list[Target]:
    """Every node (at its self-check), every host the program manages (active hosts and spares,
    not failed ones), and the LB pair's VIP (each LB is probed as a node too). The VIP is watched
    and reported only: classify never counts it nor acts on it."""
    url = url_for or topology.self_url
    found = [Target(Kind.HOST, name, f"{topology.hosts[name].address}:{ssh_port}", "host")
             for name in topology.live_hosts]
    found += [Target(Kind.NODE, node.name, url(node), node.role.value)
              for node in sorted(topology.nodes.values(), key=lambda n: n.name)]
    if topology.network.vip is not None:
        # The self-check, like the LBs': whichever HAProxy holds the VIP answers 200 whatever its
        # backends do (no web server up is a degraded dependency, not a VIP down).
        check = SELF_ENDPOINTS[Role.LB]
        found.append(Target(Kind.VIP, "vip", f"http://{topology.network.vip}:{check.port}"
                            f"{check.path}", Role.LB.value))
    return found


def fenced_host_targets(topology: Topology, ssh_port: int = SSH_PORT) -> list[Target]:
    """The hosts in mac:failedHosts, probed apart from the detector: one that answers again may
    run its old VMs on the IPs of the nodes that moved away (split brain)."""
    return [Target(Kind.HOST, name, f"{topology.hosts[name].address}:{ssh_port}", "failed host")
            for name in topology.failed_hosts if name in topology.hosts]

