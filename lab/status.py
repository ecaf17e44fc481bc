"""The live view of a running lab: what each node, host, HAProxy backend and the watchdog say now.

`collect` probes (concurrently, each bounded by a short timeout) into a plain `Snapshot`;
`render` turns one into rich tables; `frames` yields one snapshot per refresh.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from components.topology import Role
from lab import daemons, netns
from lab.cluster import Lab, http_status, ns_of, tcp_open
from lab.faults import HOST_NS_PREFIX, host_rule_cidr, link_up

PROBE_TIMEOUT_S = 0.5  # a dead node's probe must not hold up the next refresh
GALERA_QUERY = ("SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('wsrep_local_state_comment','wsrep_cluster_size','wsrep_cluster_status')")
WATCHDOG_EVENTS = ("decision", "planned", "step", "finished", "reclaimed", "note")
TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class NodeView:
    name: str
    role: str
    host: str
    ip: str
    link: bool
    health: int | None  # HTTP status of the health endpoint, None when it does not answer
    galera: dict[str, str] = field(default_factory=dict)  # wsrep status (DB nodes), {} when silent


@dataclass(frozen=True)
class HostView:
    name: str
    kind: str  # host | spare
    address: str
    link: bool
    sshd: bool
    cut_from_watchdog: bool


@dataclass(frozen=True)
class Backend:
    proxy: str
    server: str
    status: str  # HAProxy's: UP, DOWN, "UP 1/2", MAINT, ...


@dataclass(frozen=True)
class Snapshot:
    at: float
    nodes: list[NodeView]
    hosts: list[HostView]
    backends: list[Backend] | None  # None: the stats socket did not answer
    watchdog: str | None  # the watchdog's last decision or step, None when not watched


# ---- probes -----------------------------------------------------------------------------------

def galera_status(lab: Lab, node: str) -> dict[str, str]:
    """wsrep state through the node's own socket (it answers even when the node is cut off)."""
    argv = ["ip", "netns", "exec", ns_of(node), "mariadb", "--no-defaults", "-uroot",
            f"--socket={daemons.mysql_paths(lab.dirs(node)).socket}", "--connect-timeout=1",
            "-N", "-B", "-e", GALERA_QUERY]
    try:
        out = netns.run(argv, check=False, timeout=2).stdout
    except (OSError, subprocess.TimeoutExpired):  # a hung server
        return {}
    rows = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {k.removeprefix("wsrep_"): v for k, v in rows.items()}


def haproxy_backends(stats_socket: Path, timeout_s: float = PROBE_TIMEOUT_S) -> list[Backend] | None:
    """Every server line of `show stat` from HAProxy's admin socket (a unix socket: no namespace)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    return parse_show_stat(b"".join(chunks).decode(errors="replace"))


def parse_show_stat(csv: str) -> list[Backend]:
    lines = csv.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    col = {name: i for i, name in enumerate(header)}
    out = []
    for line in lines[1:]:
        cells = line.split(",")
        if len(cells) < len(header) or cells[col["svname"]] in ("FRONTEND", "BACKEND"):
            continue
        out.append(Backend(cells[col["pxname"]], cells[col["svname"]], cells[col["status"]]))
    return out


def describe_watchdog_event(event: dict[str, Any], now: float) -> str:
    age = f"{max(0.0, now - float(event.get('ts', now))):.0f} s ago"
    kind = event.get("event")
    if kind == "decision":
        dry = " (dry run)" if event.get("dry_run") else ""
        return f"{age}: decision {event.get('action')}{dry}: {event.get('reason')}"
    if kind == "planned":
        plan = event.get("plan") or {}
        return f"{age}: planned {plan.get('action')}: {plan.get('reason')}"
    if kind == "step":
        return f"{age}: step {event.get('step')} {event.get('status')}"
    if kind == "finished":
        return f"{age}: remediation {event.get('outcome')}"
    if kind == "note":
        return f"{age}: note: {event.get('note')}"
    return f"{age}: {kind}"


def watchdog_last(path: Path, now: float | None = None) -> str:
    """The newest decision/step in a watchdog state dir (its `*.jsonl`: the journal, a saved
    `--json-log`) or in one such file; says so when there is none yet."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    newest: dict[str, Any] | None = None
    for file in files:
        try:
            with open(file, "rb") as f:
                f.seek(max(0, file.stat().st_size - TAIL_BYTES))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (isinstance(event, dict) and event.get("event") in WATCHDOG_EVENTS
                    and (newest is None or event.get("ts", 0) >= newest.get("ts", 0))):
                newest = event
    if newest is None:
        return f"no decision yet in {path}"
    return describe_watchdog_event(newest, time.time() if now is None else now)


def collect(lab: Lab, watchdog: Path | None = None) -> Snapshot:
    """Probe everything once, concurrently; takes about PROBE_TIMEOUT_S when something is dead."""
    topology = lab.topology
    lab.state.reload()
    rules = set(lab.state.rules)
    nodes = sorted(topology.nodes.values(), key=lambda n: n.name)
    with ThreadPoolExecutor(max_workers=16) as pool:
        health = {n.name: pool.submit(http_status, topology.health_url(n), PROBE_TIMEOUT_S)
                  for n in nodes}
        galera = {n.name: pool.submit(galera_status, lab, n.name)
                  for n in nodes if n.role is Role.MYSQL}
        sshd = {h: pool.submit(tcp_open, host.address, 22, PROBE_TIMEOUT_S)
                for h, host in topology.hosts.items()}
        stats = pool.submit(haproxy_backends, lab.dirs(lab.lb.name).run / "admin.sock")
        node_views = [NodeView(n.name, n.role.value, n.host, n.ip, link_up(n.name),
                               health[n.name].result(),
                               galera[n.name].result() if n.name in galera else {})
                      for n in nodes]
        host_views = [HostView(h, "spare" if h in topology.spares else "host", host.address,
                               link_up(HOST_NS_PREFIX + h), sshd[h].result(),
                               host_rule_cidr(host.address) in rules)
                      for h, host in sorted(topology.hosts.items())]
        backends = stats.result()
    return Snapshot(time.time(), node_views, host_views, backends,
                    watchdog_last(watchdog) if watchdog else None)


def frames(lab: Lab, interval_s: float = 1.0, watchdog: Path | None = None,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[Snapshot]:
    """One snapshot per refresh, forever: a refresh starts `interval_s` after the previous one did."""
    while True:
        start = time.monotonic()
        yield collect(lab, watchdog)
        sleep(max(0.0, interval_s - (time.monotonic() - start)))


# ---- rendering --------------------------------------------------------------------------------

def _ok(text: str, good: bool) -> Text:
    return Text(text, style="green" if good else "bold red")


def render(snap: Snapshot) -> Group:
    """Nodes, hosts, HAProxy backends and the watchdog's last word, as rich tables."""
    backend = {b.server: b.status for b in snap.backends or []}
    nodes = Table(title=f"MAC lab  {time.strftime('%H:%M:%S', time.localtime(snap.at))}",
                  title_justify="left")
    for column in ("node", "role", "host", "ip", "link", "health", "galera", "size", "haproxy"):
        nodes.add_column(column, no_wrap=True)
    for n in snap.nodes:
        health = _ok(str(n.health) if n.health is not None else "down", n.health == 200)
        state = n.galera.get("local_state_comment", "-" if n.role != Role.MYSQL.value else "down")
        primary = n.galera.get("cluster_status", "")
        galera = "" if n.role != Role.MYSQL.value else f"{state} {primary}".strip()
        hap = backend.get(n.name, "")
        nodes.add_row(n.name, n.role, n.host, n.ip, _ok("up" if n.link else "cut", n.link), health,
                      _ok(galera, state == "Synced" and primary == "Primary") if galera else "",
                      n.galera.get("cluster_size", ""),
                      _ok(hap, hap.startswith("UP")) if hap else "")
    hosts = Table()
    for column in ("host", "kind", "address", "link", "sshd :22", "from watchdog"):
        hosts.add_column(column, no_wrap=True)
    for h in snap.hosts:
        hosts.add_row(h.name, h.kind, h.address, _ok("up" if h.link else "cut", h.link),
                      _ok("open" if h.sshd else "silent", h.sshd),
                      _ok("cut" if h.cut_from_watchdog else "reachable", not h.cut_from_watchdog))
    parts: list[Table | Text] = [nodes, hosts]
    if snap.backends is None:
        parts.append(Text("haproxy: stats socket does not answer", style="bold red"))
    if snap.watchdog is not None:
        parts.append(Text(f"watchdog: {snap.watchdog}"))
    return Group(*parts)
