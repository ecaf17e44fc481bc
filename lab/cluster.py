"""The lab cluster: a stack's topology run for real in namespaces, plus failure injection."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from components.roles import Secrets, mysql
from components.stack_file import load_topology, stack_path
from components.topology import HEALTH_ENDPOINTS, LB_HTTP_PORT, Node, Role, Topology
from lab import daemons, netns
from lab.daemons import NodeDirs
from lab.lock import LabLock
from lab.netns import LabError
from lab.state import NS_PREFIX, REPO, LabState, lab_dir, start_ticks

LAB_SECRETS = Secrets(db_root_password="lab-root-pw", db_app_password="lab-app-pw")


@dataclass(frozen=True)
class NodeStatus:
    node: str
    host: str
    ip: str
    health_url: str
    status: int | None


def ns_of(name: str) -> str:
    return f"{NS_PREFIX}{name}"


def mgmt_ns(host: str) -> str:
    return f"{NS_PREFIX}h-{host}"


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> float:
    """Poll `check` until true; returns the seconds it took. LabError on timeout."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise LabError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - start


class Lab:
    """One topology on this machine. `up()` builds it, `down()` (or `teardown()`) removes it."""

    def __init__(self, topology: Topology, directory: Path | None = None,
                 secrets: Secrets = LAB_SECRETS) -> None:
        self.topology = topology
        self.dir = directory or lab_dir()
        self.secrets = secrets
        self.state = LabState.load(self.dir)
        self.lock = LabLock(self.dir)

    @classmethod
    def from_stack(cls, stack: str, directory: Path | None = None) -> Lab:
        return cls(load_topology(stack_path(REPO, stack)), directory)

    # ---- names -------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.topology.nodes[name]

    def dirs(self, name: str) -> NodeDirs:
        return NodeDirs(self.dir / "nodes" / name)

    def host_dirs(self, host: str) -> NodeDirs:
        return NodeDirs(self.dir / "hosts" / host)

    @property
    def lb(self) -> Node:
        return self.topology.nodes_of(Role.LB)[0]

    @property
    def url(self) -> str:
        """Where clients go: the LB pair's VIP, else the one LB."""
        return f"http://{self.topology.front_ip}:{LB_HTTP_PORT}"

    def vip_holders(self) -> list[str]:
        """The LBs that carry the VIP now (one, or two in a split brain; [] without a VIP). A dead
        host's LB keeps it on its downed link (its namespace lives on)."""
        vip = self.topology.network.vip
        if vip is None:
            return []
        return [n.name for n in self.topology.nodes_of(Role.LB)
                if f" {vip}/" in netns.ip("-n", ns_of(n.name), "-o", "-4", "addr", "show", "up",
                                          check=False).stdout]

    def wait_vip(self, name: str, timeout_s: float = 10, alone: bool = True) -> float:
        """Wait until `name` holds the VIP (`alone`: and no other LB); the seconds it took.
        A dead host's namespace keeps the address on its downed link: `alone=False` then."""
        def held() -> bool:
            holders = self.vip_holders()
            return holders == [name] if alone else name in holders
        return wait_for(f"{name} to hold the VIP", held, timeout_s, 0.01)

    # ---- bring up ----------------------------------------------------------------------------

    def up(self, timeout_s: float = 120) -> float:
        """Network, then DB nodes one by one, schema, garbd, web, HAProxy; waits for health.

        LabBusy (nothing touched) while another live process holds the lab; a dead one's lock and
        leftovers are taken over."""
        start = time.monotonic()
        self.lock.acquire(shlex.join(sys.argv)[:120])
        down(self.dir)  # leftovers of an earlier run (crash) first
        self.state = LabState.load(self.dir)
        net = self.topology.network
        self.state.bridge = net.bridge
        self.state.save()
        netns.create_bridge(net.bridge, net.gateway, net.prefix_len)
        names = {n.name: n.ip for n in self.topology.nodes.values()}
        names |= {h.name: h.address for h in self.topology.hosts.values()}
        for host in self.topology.hosts.values():
            self._namespace(mgmt_ns(host.name), f"h-{host.name}", host.address, names)
        for node in self.topology.nodes.values():
            self._namespace(ns_of(node.name), node.name, node.ip, names)
        for name in self.topology.hosts:
            self.start_host(name)
        for node in self.topology.nodes_of(Role.MYSQL):
            self.start_node(node.name, first_deploy=True)  # the lab's first deploy founds it
        first = self.topology.nodes_of(Role.MYSQL)[0]
        daemons.sql(ns_of(first.name), self.dirs(first.name), "",
                    stdin=mysql.app_schema_sql(self.secrets.db_app_password,
                                               self.secrets.db_root_password))
        for node in self.topology.nodes_of(Role.LB):
            self.start_node(node.name)
            if self.topology.network.vip is not None and node == self.topology.arbitrator:
                self.wait_vip(node.name)  # the preferred master first: who is master is known
        for node in self.topology.nodes_of(Role.WEB):
            self.start_node(node.name)
        self.wait_healthy(timeout_s)
        return time.monotonic() - start

    def _namespace(self, ns: str, short: str, ip: str, names: dict[str, str]) -> None:
        net = self.topology.network
        self.state.add("namespaces", ns)
        self.state.add("veths", netns.veth_name(short))
        self.state.add("etc_netns", ns)
        netns.write_etc(ns, names)
        netns.create_namespace(ns, netns.veth_name(short), ip, net.prefix_len, net.bridge, net.gateway)

    def start_host(self, host: str) -> None:
        """The host's own daemon: sshd on its management address, port 22 (the watchdog probes it)."""
        address = self.topology.hosts[host].address
        daemons.start_sshd(self.state, mgmt_ns(host), host, address, self.host_dirs(host))
        wait_for(f"sshd of {host} on {address}:22", lambda: tcp_open(address, 22), 10, 0.05)

    def start_node(self, name: str, first_deploy: bool = False) -> None:
        """Start a node's daemons (again): a DB node joins through mac-galera-start (a fresh
        datadir founds the cluster only with `first_deploy`, as on a VM)."""
        node, ns, dirs = self.node(name), ns_of(name), self.dirs(name)
        if node.role is Role.MYSQL:
            cnf = daemons.prepare_mysql(node, self.topology, dirs)
            daemons.start_clustercheck(self.state, ns, node, dirs)
            daemons.start_galera(self.state, ns, node, self.topology, dirs, cnf,
                                 first_deploy=first_deploy)
        elif node.role is Role.WEB:
            daemons.start_web(self.state, ns, node, self.topology, dirs, self.secrets.db_app_password)
        else:
            if node == self.topology.arbitrator:  # garbd on one LB only (odd number of votes)
                daemons.start_garbd(self.state, ns, node, self.topology, dirs)
            daemons.start_haproxy(self.state, ns, node, self.topology, dirs)
            if self.topology.network.vip is not None:
                daemons.start_keepalived(self.state, ns, node, self.topology, dirs)

    def restart_haproxy(self, name: str) -> None:
        """HAProxy alone started again on an LB (as systemd restarts it), nothing else touched."""
        daemons.start_haproxy(self.state, ns_of(name), self.node(name), self.topology, self.dirs(name))

    def power_on_db_nodes(self, names: list[str], timeout_s: float = 120) -> None:
        """Start several DB nodes at once, as a site power-on: every clustercheck first (a VM
        starts it at boot), then every mac-galera-start concurrently; waits until all are Synced."""
        for name in names:
            daemons.prepare_mysql(self.node(name), self.topology, self.dirs(name))
            daemons.start_clustercheck(self.state, ns_of(name), self.node(name), self.dirs(name))
        procs = [daemons.spawn_galera(self.state, ns_of(name), self.node(name), self.topology,
                                      self.dirs(name), self.dirs(name).root / "my.cnf", timeout_s)
                 for name in names]
        for name, proc in zip(names, procs, strict=True):
            daemons.wait_galera(proc, self.node(name), self.dirs(name), timeout_s)

    def wait_healthy(self, timeout_s: float = 60) -> float:
        """Until the cluster is whole: every node's health endpoint answers 200, every self check
        (both LBs' with a pair) answers with nothing degraded and every peer it sees up (HAProxy
        takes a node back only after two good checks, so a revived node is healthy before its LB
        says so), and with a pair the VIP reaches an HAProxy that serves the app."""
        return wait_for("every node healthy, every self check whole (and the VIP answering)",
                        lambda: all(s.status == 200 for s in self.status()) and self._whole()
                        and (self.topology.network.vip is None or self.vip_status() == 200),
                        timeout_s, 0.2)

    def _whole(self) -> bool:
        for node in self.topology.nodes.values():
            try:
                answer = httpx.get(self.topology.self_url(node), timeout=1.0)
                body = answer.json()
            except (httpx.HTTPError, ValueError):
                return False
            sees = body.get("sees") or {}
            if answer.status_code != 200 or body.get("degraded") or not all(sees.values()):
                return False
        return True

    def vip_status(self) -> int | None:
        """The LB monitor's answer at the VIP (None: no VIP, or no answer)."""
        vip = self.topology.network.vip
        if vip is None:
            return None
        monitor = HEALTH_ENDPOINTS[Role.LB]
        return http_status(f"http://{vip}:{monitor.port}{monitor.path}", 1.0)

    def wait_node_healthy(self, name: str, timeout_s: float = 60) -> float:
        url = self.topology.health_url(self.node(name))
        return wait_for(f"{url} to answer 200", lambda: http_status(url, 1.0) == 200, timeout_s, 0.05)

    # ---- look ----------------------------------------------------------------------------------

    def status(self) -> list[NodeStatus]:
        rows = []
        for node in self.topology.nodes.values():
            url = self.topology.health_url(node)
            rows.append(NodeStatus(node.name, node.host, node.ip, url, http_status(url)))
        return rows

    def wsrep(self, name: str) -> dict[str, str]:
        out = daemons.sql(ns_of(name), self.dirs(name), "SHOW GLOBAL STATUS LIKE 'wsrep_%'")
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def sql(self, name: str, query: str) -> str:
        return daemons.sql(ns_of(name), self.dirs(name), query)

    # ---- break things --------------------------------------------------------------------------

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of the node: its recorded process groups, then anything left."""
        killed = []
        for proc in self.state.procs:
            if proc.node == name and start_ticks(proc.pid) == proc.start_ticks:
                try:
                    os.killpg(proc.pgid, signal.SIGKILL)
                    killed.append(proc.pid)
                except ProcessLookupError:
                    pass
        killed += netns.kill_namespace_processes(ns_of(name))
        daemons.reap([p.pid for p in self.state.procs if p.node == name])
        netns.wait_exited(killed)  # a restart must not meet the dying daemon's files and ports
        return killed

    def cut_link(self, name: str) -> None:
        netns.set_link(netns.veth_name(name), up=False)

    def restore_link(self, name: str) -> None:
        netns.set_link(netns.veth_name(name), up=True)

    def kill_host(self, host: str) -> list[str]:
        """The host goes silent, as on a power loss: links cut first (management address too),
        then its nodes' processes and its own sshd killed, so peers get no FIN or RST, only silence."""
        victims = [n.name for n in self.topology.nodes.values() if n.host == host]
        netns.set_link(netns.veth_name(f"h-{host}"), up=False)
        for name in victims:
            self.cut_link(name)
        for name in victims:
            self.kill_node(name)
        self.kill_node(f"h-{host}")  # the host's sshd (its namespace is ns_of("h-HOST"))
        return victims

    def revive_host(self, host: str) -> None:
        """Links back and the host's sshd started again (the host booted); its nodes stay down."""
        netns.set_link(netns.veth_name(f"h-{host}"), up=True)
        for node in self.topology.nodes.values():
            if node.host == host:
                self.restore_link(node.name)
        self.start_host(host)

    def isolate_root(self) -> None:
        """Cut the root namespace (where a watchdog runs) off from the whole lab network at once;
        the namespaces still reach each other. `end_isolation` (or `down`) undoes it."""
        cidr = str(ipaddress.ip_network(self.topology.network.cidr, strict=False))
        self.state.add("rules", cidr)
        netns.add_rule(netns.isolation_rule(cidr))

    def end_isolation(self) -> None:
        for cidr in self.state.rules:
            netns.delete_rule(netns.isolation_rule(cidr))
        self.state.rules.clear()
        self.state.save()

    def netem(self, name: str, delay_ms: float = 0, loss_pct: float = 0) -> None:
        netns.netem(ns_of(name), delay_ms, loss_pct)

    def clear_netem(self, name: str) -> None:
        netns.clear_netem(ns_of(name))

    def teardown(self) -> list[str]:
        """Remove this lab (returns what was removed); a no-op unless this object holds the lab:
        a refused `up` removes nothing."""
        if not self.lock.held:
            return []
        try:
            return down(self.dir)
        finally:
            self.lock.release()


def down(directory: Path | None = None) -> list[str]:
    """Remove everything a lab created (from its state file, plus stray `maclab-` namespaces)."""
    directory = directory or lab_dir()
    state = LabState.load(directory)
    done = []
    groups = [p.pgid for p in state.procs if start_ticks(p.pid) == p.start_ticks]
    killed = netns.group_members(groups)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    for cidr in state.rules:
        netns.delete_rule(netns.isolation_rule(cidr))
    for ns in sorted({*state.namespaces, *(n for n in netns.namespaces() if n.startswith(NS_PREFIX))}):
        killed += netns.delete_namespace(ns)
        done.append(f"namespace {ns}")
    for ns in state.etc_netns:
        shutil.rmtree(netns.ETC_NETNS / ns, ignore_errors=True)
    for veth in state.veths:
        netns.delete_link(veth)
    if state.bridge:
        netns.delete_link(state.bridge)
        done.append(f"bridge {state.bridge}")
    daemons.reap(killed)
    still = netns.wait_exited(killed)
    if still:
        raise LabError(f"processes {still} survived SIGKILL; {directory} left in place")
    if directory.exists():
        shutil.rmtree(directory)
        done.append(f"directory {directory}")
    return done
