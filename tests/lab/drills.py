"""The failure drills as plain functions: the tests assert on their results, the bench prints them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from components.topology import Role
from tests.lab.cluster import Lab
from tests.lab.load import Load, LoadReport, Outcome


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
