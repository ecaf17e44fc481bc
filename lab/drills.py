"""The failure drills as plain functions: the tests assert on their results, the bench prints them."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from components.topology import Role
from lab import netns
from lab.cluster import Lab, ns_of, wait_for
from lab.faults import LabFaults
from lab.load import Load, LoadReport, Outcome
from lab.netns import LabError


@dataclass
class DrillResult:
    victim: str
    killed_at_s: float  # seconds after the load started
    report: LoadReport

    def after_kill(self, grace_s: float) -> list[Outcome]:
        """Outcomes of requests sent more than `grace_s` after the kill."""
        start = self.report.started + self.killed_at_s + grace_s
        return [o for o in self.report.outcomes if o.sent >= start]


def run_drill(lab: Lab, victim: str, rate: float, duration_s: float, kill_at_s: float) -> DrillResult:
    """Steady load through the LB; SIGKILL every process of `victim` at `kill_at_s`."""
    with Load(lab.url, rate, duration_s) as load:
        time.sleep(max(0.0, kill_at_s - load.elapsed()))
        killed_at = load.elapsed()
        lab.kill_node(victim)
    return DrillResult(victim, killed_at, load.report())


def run_host_drill(lab: Lab, host: str, rate: float, duration_s: float,
                   kill_at_s: float) -> tuple[DrillResult, list[str]]:
    """Steady load through the LB; the whole `host` goes silent at `kill_at_s` (see kill_host)."""
    with Load(lab.url, rate, duration_s) as load:
        time.sleep(max(0.0, kill_at_s - load.elapsed()))
        killed_at = load.elapsed()
        victims = lab.kill_host(host)
    return DrillResult(host, killed_at, load.report()), victims


def revive_host_and_verify(lab: Lab, host: str, victims: list[str], result: DrillResult) -> Resync:
    """Links back, the host's nodes restarted; its DB node resyncs and holds every acknowledged write."""
    lab.revive_host(host)
    db = next(n for n in victims if lab.node(n).role is Role.MYSQL)
    for name in victims:
        if name != db:
            lab.start_node(name)
    return restart_and_verify(lab, db, result)


@dataclass
class Resync:
    seconds: float
    missing: dict[str, set[str]]  # node -> acknowledged tokens it does not hold


def restart_and_verify(lab: Lab, victim: str, result: DrillResult) -> Resync:
    """Start the dead DB node again, wait until Synced, then look for every acknowledged write."""
    start = time.monotonic()
    lab.start_node(victim)
    lab.wait_node_healthy(victim, 120)
    seconds = time.monotonic() - start
    acknowledged = result.report.acknowledged_tokens
    run_id = next(iter(acknowledged)).rsplit("-", 1)[0] if acknowledged else "none"
    missing = {}
    for node in lab.topology.nodes_of(Role.MYSQL):
        rows = lab.sql(node.name, f"SELECT token FROM mac.visits WHERE token LIKE '{run_id}-%'")
        missing[node.name] = acknowledged - set(rows.split())
    return Resync(seconds, missing)


@dataclass
class FullOutage:
    """A site power cut of every DB node under writes, then a power-on of all of them at once."""

    killed_at_s: float
    report: LoadReport
    to_primary_s: float = 0.0  # power-on until every DB node is Synced in a Primary component
    to_lb_s: float = 0.0  # power-on until a write through the LB succeeds again
    sizes: dict[str, str] = field(default_factory=dict)  # wsrep_cluster_size per DB node after
    missing: dict[str, set[str]] = field(default_factory=dict)
    rows_checked: int = 0
    starts: dict[str, str] = field(default_factory=dict)  # what each mac-galera-start decided


def run_full_outage(lab: Lab, rate: float, duration_s: float, kill_at_s: float,
                    stagger_s: float = 0.0) -> FullOutage:
    """SIGKILL every DB node (unclean: safe_to_bootstrap: 0 everywhere) under writes through the
    LB, then start them all concurrently with mac-galera-start and verify every acknowledged write.

    `stagger_s` > 0 kills them in topology order that far apart: the later nodes keep taking
    writes (with garbd's vote), so the last one holds the highest position and must bootstrap.
    """
    dbs = [n.name for n in lab.topology.nodes_of(Role.MYSQL)]
    with Load(lab.url, rate, duration_s) as load:
        time.sleep(max(0.0, kill_at_s - load.elapsed()))
        killed_at = load.elapsed()
        for i, name in enumerate(dbs):  # without stagger as close to simultaneous as it gets
            if i and stagger_s:
                time.sleep(stagger_s)
            lab.kill_node(name)
    result = FullOutage(killed_at, load.report())
    start = time.monotonic()
    lab.power_on_db_nodes(dbs)
    for name in dbs:
        lab.wait_node_healthy(name, 60)
    result.to_primary_s = time.monotonic() - start

    def lb_writes() -> bool:
        try:
            response = httpx.get(f"{lab.url}/index.php", params={"token": "power-on-probe"},
                                 timeout=5)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    wait_for("the LB to serve writes again", lb_writes, 60, 0.1)
    result.to_lb_s = time.monotonic() - start
    acknowledged = result.report.acknowledged_tokens
    run_id = next(iter(acknowledged)).rsplit("-", 1)[0] if acknowledged else "none"
    for name in dbs:
        result.sizes[name] = lab.wsrep(name).get("wsrep_cluster_size", "?")
        rows = lab.sql(name, f"SELECT token FROM mac.visits WHERE token LIKE '{run_id}-%'")
        result.missing[name] = acknowledged - set(rows.split())
        result.rows_checked += len(acknowledged)
        log = lab.dirs(name).log / "galera-start.log"
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("mac-galera-start: ")]
        result.starts[name] = next((ln for ln in reversed(lines)
                                    if ln.split(": ")[1] in ("bootstrap", "join")), "?")
    return result


# ---- the LB pair (mac:network.vip) -------------------------------------------------------------

class LbFault(StrEnum):
    SERVICE = "service"  # HAProxy dies, the LB's machine (and keepalived) lives on
    HOST = "host"  # the master LB's whole host goes silent


@dataclass
class LbDrill:
    """The LB holding the VIP broken under load, then brought back."""

    fault: LbFault
    master: str  # held the VIP before
    backup: str
    result: DrillResult
    vip_moved_s: float  # from the kill until the backup holds the VIP
    # Client connections the dead LB had: opened before the VIP moved, used after the kill. A
    # request on one fails if it was in flight, or was sent over it later (http.client does not
    # resend a request whose reused connection turns out dead; browsers and urllib3 do).
    connections_to_dead_lb: int = 0
    in_flight_at_kill: int = 0  # sent before the kill, not answered by then
    failed_elsewhere: int = 0  # failed requests on connections opened after the move: must be 0
    holders_after_return: list[str] = field(default_factory=list)  # who holds it once it is back
    return_report: LoadReport | None = None  # load while the old master comes back

    def figures(self) -> dict[str, object]:
        report = self.result.report
        out: dict[str, object] = {
            **report.summary(), "fault": self.fault.value, "master": self.master,
            "backup": self.backup, "vip_moved_s": round(self.vip_moved_s, 3),
            "connections_to_dead_lb": self.connections_to_dead_lb,
            "in_flight_at_kill": self.in_flight_at_kill, "failed_elsewhere": self.failed_elsewhere,
            "failed_samples": [o.error or o.status for o in report.failed][:3],
            "holders_after_return": self.holders_after_return,
            "second_move": self.holders_after_return != [self.backup]}
        if self.return_report is not None:
            out["return_failed"] = len(self.return_report.failed)
            out["return_longest_stall_s"] = round(self.return_report.longest_stall_s(), 3)
        return out


def run_lb_drill(lab: Lab, fault: LbFault, rate: float, duration_s: float, kill_at_s: float,
                 return_s: float = 4.0) -> LbDrill:
    """Steady load through the VIP; the master LB's HAProxy (or its whole host) killed at
    `kill_at_s`; then the old master brought back under load: the VIP must stay on the backup."""
    faults = LabFaults(lab)
    (master,) = lab.vip_holders()
    backup = next(n.name for n in lab.topology.nodes_of(Role.LB) if n.name != master)
    with Load(lab.url, rate, duration_s) as load:
        time.sleep(max(0.0, kill_at_s - load.elapsed()))
        killed_at = load.elapsed()
        start = time.monotonic()
        if fault is LbFault.HOST:
            faults.kill_host(lab.node(master).host)
        else:
            faults.stop_service(master)
        lab.wait_vip(backup, 10, alone=False)
        moved = time.monotonic() - start
    report = load.report()
    drill = LbDrill(fault, master, backup, DrillResult(master, killed_at, report), moved)
    kill_abs, move_abs = report.started + killed_at, start + moved
    def on_dead_lb(o: Outcome) -> bool:
        return (o.connected if o.connected is not None else o.sent) < move_abs

    drill.connections_to_dead_lb = len({o.connected for o in report.outcomes
                                        if o.done > kill_abs and on_dead_lb(o)})
    drill.in_flight_at_kill = sum(1 for o in report.outcomes if o.sent < kill_abs < o.done)
    drill.failed_elsewhere = sum(1 for o in report.failed if not on_dead_lb(o))
    with Load(lab.url, rate, return_s + 6) as again:
        time.sleep(1.0)
        if fault is LbFault.HOST:
            faults.revive_host(lab.node(master).host)
        else:
            lab.restart_haproxy(master)  # as systemd does; keepalived lives on
        time.sleep(return_s)  # keepalived's checks rise (2 s) and the adverts settle
        drill.holders_after_return = lab.vip_holders()
        again.stop()
    drill.return_report = again.report()
    return drill


@dataclass
class SplitBrain:
    """The two LBs cut from each other (not from clients) under load, then healed."""

    holders_during: list[str]
    served_during: dict[str, int]  # requests each LB's HAProxy took in a window during the split
    holders_after: list[str]
    report: LoadReport


def requests_served(lab: Lab, lb: str) -> int:
    """Requests HAProxy's `app` frontend on `lb` took so far (its stats socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(str(lab.dirs(lb).run / "admin.sock"))
        sock.sendall(b"show stat -1 1 -1\n")
        data = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    lines = data.splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        cells = line.split(",")
        if cells[:2] == ["app", "FRONTEND"]:
            return int(cells[header.index("req_tot")] or 0)
    raise LabError(f"no `app` frontend in {lb}'s HAProxy stats")


def cut_lb_peers(lab: Lab, cut: bool) -> None:
    """Each LB drops all traffic to and from the other (iptables in its namespace), or stops
    dropping it: their VRRP adverts are lost, while clients, web and DB nodes reach both."""
    lbs = lab.topology.nodes_of(Role.LB)
    for node in lbs:
        for peer in lbs:
            if peer.name == node.name:
                continue
            for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
                netns.run(["ip", "netns", "exec", ns_of(node.name), "iptables",
                           "-A" if cut else "-D", chain, side, f"{peer.ip}/32", "-j", "DROP"],
                          check=cut)


def run_split_brain(lab: Lab, rate: float, split_s: float = 4.0, settle_s: float = 1.5,
                    window_s: float = 2.0) -> SplitBrain:
    """Load through the VIP; the LBs cut from each other for `split_s`, then healed."""
    assert lab.topology.network.vip is not None, "the split-brain drill needs an LB pair"
    lbs = [n.name for n in lab.topology.nodes_of(Role.LB)]
    with Load(lab.url, rate, split_s + 8) as load:
        time.sleep(2.0)
        cut_lb_peers(lab, True)
        try:
            time.sleep(settle_s)  # the backup's master-down timer, then its gratuitous ARPs
            holders = lab.vip_holders()
            before = {lb: requests_served(lab, lb) for lb in lbs}
            time.sleep(window_s)
            served = {lb: requests_served(lab, lb) - before[lb] for lb in lbs}
            time.sleep(max(0.0, split_s - settle_s - window_s))
        finally:
            cut_lb_peers(lab, False)
        time.sleep(3.0)
        after = lab.vip_holders()
    return SplitBrain(holders, served, after, load.report())
