"""Fault injection for people and tests: kill, stop, partition, slow, revive; one seam per backend.

`Faults` is what `mac-lab` needs from a running cluster; `LabFaults` implements it for the lab
(namespaces + real daemons). A VM-stack backend (qemu per VM, libvirtd per host) implements the
same protocol. Every method works from any process: the lab's state file says what runs where.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
from pathlib import Path
from typing import Protocol

from components.topology import Role
from lab import netns
from lab.cluster import Lab, http_status, wait_for
from lab.netns import LabError

HOST_NS_PREFIX = "h-"  # a host's management namespace is ns_of("h-HOST"), its veth veth_name("h-HOST")
SERVICE = {Role.MYSQL: "galera-start", Role.WEB: "apache2", Role.LB: "haproxy"}  # the daemon's Proc.what


class UnknownTarget(LabError):
    """A node or host name the cluster does not have; the message lists the known ones."""


class Faults(Protocol):
    """What `mac-lab` can do to a running cluster (the lab today; the VM stack later)."""

    def node_names(self) -> list[str]: ...
    def host_names(self) -> list[str]: ...
    def kill_node(self, node: str) -> None: ...
    def kill_host(self, host: str) -> list[str]: ...
    def stop_service(self, node: str) -> str: ...
    def revive_nodes(self, nodes: list[str], timeout_s: float = 120) -> None: ...
    def revive_host(self, host: str, timeout_s: float = 120) -> list[str]: ...
    def partition_host(self, host: str, watchdog_only: bool = False) -> None: ...
    def heal_host(self, host: str) -> None: ...
    def slow_node(self, node: str, delay_ms: float) -> None: ...
    def unslow_node(self, node: str) -> None: ...


def host_rule_cidr(address: str) -> str:
    """The /32 an `ip rule` makes unreachable from the root namespace (where the watchdog runs)."""
    return str(ipaddress.ip_network(f"{address}/32"))


class LabFaults:
    """`Faults` for the lab. Nothing here waits for the watchdog; revive waits for health."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    # ---- names ---------------------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return sorted(self.lab.topology.nodes)

    def host_names(self) -> list[str]:
        return sorted(self.lab.topology.hosts)

    def check_node(self, node: str) -> str:
        """`node`, or UnknownTarget naming it and every known node."""
        if node not in self.lab.topology.nodes:
            raise UnknownTarget(f"unknown node {node!r}; known nodes: {', '.join(self.node_names())}")
        return node

    def check_host(self, host: str) -> str:
        """`host`, or UnknownTarget naming it and every known host."""
        if host not in self.lab.topology.hosts:
            raise UnknownTarget(f"unknown host {host!r}; known hosts: {', '.join(self.host_names())}")
        return host

    def nodes_on(self, host: str) -> list[str]:
        return sorted(n.name for n in self.lab.topology.nodes.values() if n.host == host)

    # ---- break ---------------------------------------------------------------------------------

    def kill_node(self, node: str) -> None:
        """Silent death of one node (a VM killed): its link is cut first, so peers see silence
        rather than a reset, then every process in its namespace is SIGKILLed."""
        self.check_node(node)
        self.lab.state.reload()
        self.lab.cut_link(node)
        self.lab.kill_node(node)

    def kill_host(self, host: str) -> list[str]:
        """Silent death of a host (power loss): every link of the host cut (management address
        too), then its nodes' processes and its sshd killed. Returns the nodes that died with it."""
        self.check_host(host)
        self.lab.state.reload()
        return self.lab.kill_host(host)

    def stop_service(self, node: str) -> str:
        """The node's main daemon dies, the machine stays up (link, sshd-like helpers, clustercheck,
        garbd keep running): mariadbd on a DB node, Apache on a web node, HAProxy on the LB.
        Returns what was stopped. LabError when that daemon is not running."""
        name = self.check_node(node)
        what = SERVICE[self.lab.node(name).role]
        self.lab.state.reload()
        groups = [p.pgid for p in self.lab.state.procs if p.node == name and p.what == what]
        # mariadbd outlives mac-galera-start (the recorded PID) in its process group: look at the
        # group, not the PID. A live group's id cannot be reused, so a member is ours.
        members = netns.group_members(groups)
        live = sorted({g for pid in members if (g := _pgid(pid)) is not None})
        if not live:
            raise LabError(f"{what} is not running on {name}")
        for pgid in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        netns.wait_exited(members)
        return "mariadbd" if what == "galera-start" else what

    def partition_host(self, host: str, watchdog_only: bool = False) -> None:
        """Cut a live host off the network: its management address and every node on it lose their
        link to the bridge (so to the watchdog in the root namespace, the other hosts, and each
        other), while every process keeps running: a split brain. `watchdog_only`: only the root
        namespace loses the host's addresses (an `ip rule` there); the cluster still talks."""
        self.check_host(host)
        if watchdog_only:
            for address in self._addresses(host):
                cidr = host_rule_cidr(address)
                self.lab.state.add("rules", cidr)
                netns.add_rule(netns.isolation_rule(cidr))
            return
        netns.set_link(netns.veth_name(HOST_NS_PREFIX + host), up=False)
        for node in self.nodes_on(host):
            self.lab.cut_link(node)

    def heal_host(self, host: str) -> None:
        """Undo `partition_host` (either kind): links up, the root namespace's rules for it gone."""
        self.check_host(host)
        for address in self._addresses(host):
            cidr = host_rule_cidr(address)
            netns.delete_rule(netns.isolation_rule(cidr))
            self.lab.state.remove("rules", cidr)
        netns.set_link(netns.veth_name(HOST_NS_PREFIX + host), up=True)
        for node in self.nodes_on(host):
            self.lab.restore_link(node)

    def slow_node(self, node: str, delay_ms: float) -> None:
        """Add `delay_ms` to every packet the node sends (tc netem on its eth0).
        NetemUnavailable (a LabError) where the kernel has no sch_netem."""
        self.lab.netem(self.check_node(node), delay_ms=delay_ms)

    def unslow_node(self, node: str) -> None:
        """Remove the node's netem delay (nothing happens when it has none)."""
        self.lab.clear_netem(self.check_node(node))

    # ---- put back ------------------------------------------------------------------------------

    def revive_nodes(self, nodes: list[str], timeout_s: float = 120) -> None:
        """Reboot nodes (after kill, stop-service or slow): link up, netem off, leftovers killed,
        daemons started again, then wait until each health endpoint answers 200. Several dead DB
        nodes start together (a power-on: mac-galera-start picks the most advanced to bootstrap)."""
        for node in nodes:
            self.check_node(node)
        self.lab.state.reload()
        for node in nodes:
            self.lab.restore_link(node)
            self.lab.clear_netem(node)
            self.lab.kill_node(node)
        dbs = [n for n in nodes if self.lab.node(n).role is Role.MYSQL]
        if len(dbs) > 1:
            self.lab.power_on_db_nodes(dbs, timeout_s)
        elif dbs:
            self.lab.start_node(dbs[0])
        for node in nodes:
            if node not in dbs:
                self.lab.start_node(node)
        for node in nodes:
            self.lab.wait_node_healthy(node, timeout_s)
        if any(self.lab.node(n).role is Role.LB for n in nodes):
            self._wait_garbd(timeout_s)

    def _wait_garbd(self, timeout_s: float) -> None:
        """An LB is back when its garbd votes again: every DB node and arbitrator in the cluster."""
        topology = self.lab.topology
        dbs = [n.name for n in topology.nodes_of(Role.MYSQL)]
        if not all(http_status(topology.health_url(self.lab.node(d)), 1.0) == 200 for d in dbs):
            return  # a DB node is down on purpose: the full size cannot be reached
        size = str(len(dbs) + 1)  # one garbd, on Topology.arbitrator, also with an LB pair
        wait_for(f"garbd to rejoin (cluster size {size})",
                 lambda: self.lab.wsrep(dbs[0]).get("wsrep_cluster_size") == size, timeout_s, 0.1)

    def revive_host(self, host: str, timeout_s: float = 120) -> list[str]:
        """Power a host on again (after kill-host or partition): its rules and links back, its sshd
        restarted, then every node on it revived. Returns those nodes."""
        self.heal_host(host)
        self.lab.state.reload()
        self.lab.kill_node(HOST_NS_PREFIX + host)  # a partitioned host's sshd still runs
        self.lab.start_host(host)
        nodes = self.nodes_on(host)
        self.revive_nodes(nodes, timeout_s)
        return nodes

    def _addresses(self, host: str) -> list[str]:
        return [self.lab.topology.hosts[host].address,
                *(self.lab.node(n).ip for n in self.nodes_on(host))]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def link_up(name: str) -> bool:
    """Whether a node's (or `h-HOST`'s) link to the bridge is up (False when it does not exist)."""
    try:
        flags = int(Path(f"/sys/class/net/{netns.veth_name(name)}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)  # IFF_UP

