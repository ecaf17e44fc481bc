"""Failure drills against the real cluster in namespaces (root only; skipped otherwise).

They assert behaviour (the LB keeps serving, writes continue, nothing acknowledged is lost,
quorum holds), not timings; `bench/failover.py` reports the figures.
"""

from __future__ import annotations

import time

import httpx
import pytest

from components.roles import lb
from components.topology import Role
from lab.cluster import Lab
from lab.drills import restart_and_verify, revive_host_and_verify, run_drill, run_host_drill

pytestmark = pytest.mark.lab

RATE = 200  # req/s: steady, well below what this 2-core machine serves
DURATION_S = 8
KILL_AT_S = 3
GRACE_S = 2.0  # after this long the failure must be invisible to clients


def test_cluster_serves_and_counts_visits(healthy_lab: Lab) -> None:
    first = httpx.get(f"{healthy_lab.url}/index.php", params={"token": "smoke-1"}, timeout=10)
    second = httpx.get(f"{healthy_lab.url}/index.php", params={"token": "smoke-2"}, timeout=10)
    assert first.status_code == second.status_code == 200
    assert second.json()["count"] > first.json()["count"]
    for db in healthy_lab.topology.nodes_of(Role.MYSQL):
        status = healthy_lab.wsrep(db.name)
        assert status["wsrep_cluster_status"] == "Primary"
        assert status["wsrep_cluster_size"] == "3"  # two data nodes + garbd


def test_web_node_death_lb_keeps_serving(healthy_lab: Lab, record_property) -> None:
    victim = healthy_lab.topology.nodes_of(Role.WEB)[0].name
    result = run_drill(healthy_lab, victim, RATE, DURATION_S, KILL_AT_S)
    record_property("web_node_death", result.report.summary())
    print("web node death:", result.report.summary())
    later = result.after_kill(GRACE_S)
    assert later, "the load ended before the kill"
    assert all(o.ok for o in later), [o for o in later if not o.ok][:3]
    assert len(result.report.failed) <= 0.01 * result.report.requests


def test_garbd_keeps_quorum_when_a_db_node_dies(healthy_lab: Lab) -> None:
    first, second = healthy_lab.topology.nodes_of(Role.MYSQL)
    healthy_lab.kill_node(second.name)
    status = {}
    for _ in range(50):  # eviction of the dead member takes about a second
        status = healthy_lab.wsrep(first.name)
        if status["wsrep_cluster_size"] == "2":
            break
        time.sleep(0.1)
    assert status["wsrep_cluster_size"] == "2"  # first + garbd
    assert status["wsrep_cluster_status"] == "Primary"
    assert status["wsrep_local_state_comment"] == "Synced"
    response = httpx.get(f"{healthy_lab.url}/index.php", params={"token": "quorum-1"}, timeout=10)
    assert response.status_code == 200


def test_db_node_death_writes_continue_and_nothing_acknowledged_is_lost(
        healthy_lab: Lab, record_property) -> None:
    victim = healthy_lab.topology.nodes_of(Role.MYSQL)[0].name  # the writer (LB DB frontend)
    result = run_drill(healthy_lab, victim, RATE, DURATION_S, KILL_AT_S)
    later = result.after_kill(GRACE_S)
    assert later and all(o.ok for o in later), [o for o in later if not o.ok][:3]
    assert len(result.report.failed) <= 0.01 * result.report.requests
    resync = restart_and_verify(healthy_lab, victim, result)
    record_property("db_node_death", {**result.report.summary(), "resync_s": round(resync.seconds, 2)})
    print("db node death:", result.report.summary(), "resync", round(resync.seconds, 2))
    assert result.report.acknowledged_tokens
    assert resync.missing == {n.name: set() for n in healthy_lab.topology.nodes_of(Role.MYSQL)}


def test_host_death_lb_keeps_serving_and_loses_no_write(healthy_lab: Lab, record_property) -> None:
    """A whole host goes silent (links cut, no resets): its web and DB node at once.

    No request fails, and none waits out the LB's server timeout more than once: a request in
    flight on the silent web node is replayed on the other one after one server timeout, and the
    replay itself answers within another (it does not wait for the old 10 s, nor time out again).
    """
    host = healthy_lab.topology.nodes_of(Role.MYSQL)[0].host
    result, victims = run_host_drill(healthy_lab, host, RATE, DURATION_S, KILL_AT_S)
    record_property("host_death", result.report.summary())
    print("host death:", victims, result.report.summary())
    assert {n.role for n in healthy_lab.topology.nodes.values() if n.name in victims} >= {
        Role.MYSQL, Role.WEB}
    assert result.report.failed == []
    assert result.report.longest_request_s() < 2 * lb.WEB_SERVER_TIMEOUT_S
    resync = revive_host_and_verify(healthy_lab, host, victims, result)
    assert resync.missing == {n.name: set() for n in healthy_lab.topology.nodes_of(Role.MYSQL)}
