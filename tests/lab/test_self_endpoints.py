"""The self-check endpoints (SELF_ENDPOINTS) on the real daemons in the lab (root only): every node
answers 200 with nothing degraded while the cluster is whole, and a node whose dependency is down
still answers 200 and names it."""

from __future__ import annotations

import time

import httpx
import pytest

from components.topology import Role
from lab.cluster import Lab, wait_for

pytestmark = pytest.mark.lab


def self_check(lab: Lab, name: str) -> httpx.Response:
    return httpx.get(lab.topology.self_url(lab.node(name)), timeout=2)


def test_every_node_answers_its_self_check_with_nothing_degraded(healthy_lab: Lab) -> None:
    ips = {n.ip for n in healthy_lab.topology.nodes.values() if n.role is not Role.LB}
    for name in healthy_lab.topology.nodes:
        answer = self_check(healthy_lab, name)
        assert answer.status_code == 200, (name, answer.text)
        assert not answer.json()["degraded"], (name, answer.text)
    lb1 = self_check(healthy_lab, healthy_lab.lb.name).json()
    assert lb1["sees"] == {ip: True for ip in ips}  # every web and DB server, up
    for db in healthy_lab.topology.nodes_of(Role.MYSQL):
        sees = self_check(healthy_lab, db.name).json()["sees"]
        assert sees == {n.ip: True for n in healthy_lab.topology.nodes_of(Role.MYSQL)}


def test_lb_without_web_servers_is_degraded_not_failed(healthy_lab: Lab) -> None:
    webs = [n.name for n in healthy_lab.topology.nodes_of(Role.WEB)]
    lb1 = healthy_lab.lb
    for name in webs:
        healthy_lab.kill_node(name)
    try:
        wait_for("the LB to see no web server", lambda: self_check(healthy_lab, lb1.name).json()[
            "degraded"] == "no web server up", 10)
        assert httpx.get(healthy_lab.topology.health_url(lb1), timeout=2).status_code == 503
        assert self_check(healthy_lab, lb1.name).status_code == 200
    finally:
        for name in webs:
            healthy_lab.start_node(name)
    time.sleep(0.5)
    healthy_lab.wait_healthy(30)
    answer = self_check(healthy_lab, webs[0]).json()
    assert answer["degraded"] is None and answer["db"] != "down"
