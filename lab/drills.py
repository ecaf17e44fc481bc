"""The failure drills as plain functions: the tests assert on their results, the bench prints them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from components.topology import Role
from lab.cluster import Lab, wait_for
from lab.load import Load, LoadReport, Outcome


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
