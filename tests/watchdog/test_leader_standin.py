"""Three `mac-watchdog run` processes, one real 3-member etcd cluster (loopback, members started
and stopped by PID), the loopback test stack and the STAND-IN pulumi (records argv; deploys
nothing). All watchdogs share the project dir (stack file) and the stand-in's state (backend).

Every test checks the same invariants: one fence, one `up`, and no two watchdogs ever holding a
step at once (the step records in etcd, with the journal of a watchdog that stopped acting)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.stack_file import load_topology, stack_path
from components.topology import Topology
from tests.watchdog.conftest import REPO, Servers, StandIn
from tests.watchdog.etcd_cluster import CutProxy, EtcdCluster, etcd_fixture  # noqa: F401  (the `etcd` fixture)
from tests.watchdog.fleet import STACK, Fleet, held_at_once, wait_until
from tests.watchdog.seams import cli_command
from tests.watchdog.state_fixture import exported
from watchdog.leader import EXIT_LEADERSHIP_LOST

TTL = 3
ROUND_S = 0.25 + 0.2  # a follower's look at the key + one loop round


@pytest.fixture
def fleet(project: Path, standin: StandIn, servers: Servers, etcd: EtcdCluster,
          tmp_path: Path) -> Iterator[Fleet]:
    standin.set_state(exported())
    f = Fleet(project, tmp_path, standin.root, servers.port, etcd.urls, ttl_s=TTL)
    servers.serve(load_topology(stack_path(project, STACK)))
    yield f
    f.close()


def fail_kvm1(servers: Servers, topology: Topology) -> None:
    """kvm1 dies with both its nodes (no FIN, no RST: the servers just go)."""
    servers.down(topology.hosts["kvm1"].address)
    for node in topology.nodes_on("kvm1"):
        servers.down(node.ip)


def nodes_back_on_spare(servers: Servers, topology: Topology) -> None:
    """The moved nodes keep their IPs: once they run on the spare, they answer again."""
    for node in topology.nodes_on("kvm1"):
        servers.up(node.ip)


def check_one_fence_one_up(fleet: Fleet) -> None:
    starts = [f for f in fleet.fences() if f[1] == "start"]
    ends = [f for f in fleet.fences() if f[1] == "end"]
    assert len(ends) == 1, fleet.fences()
    assert len(starts) == len(ends) or starts[-1][0] == ends[-1][0]
    assert len(fleet.ups()) == 1, fleet.ups()


def test_standin_three_watchdogs_host_failure_one_fence_one_up(
        fleet: Fleet, servers: Servers, project: Path, topology: Topology) -> None:
    for name in ("wd1", "wd2", "wd3"):
        fleet.start(name)
    leader = fleet.wait_leader()
    fleet.wait_views(3)
    fail_kvm1(servers, topology)
    wait_until("the fence", fleet.fences, 60)
    nodes_back_on_spare(servers, topology)
    record = fleet.wait_remediated()
    time.sleep(2 * ROUND_S + 1)  # room for a second actor, if there were one

    assert [f[1] for f in fleet.fences()] == ["start", "end"]
    assert len(fleet.ups()) == 1
    assert record["holder"] == leader and record["done"] == [
        "fence", "prune_state", "write_config", "up", "verify"]
    steps = fleet.step_records()
    assert [(s["step"], s["holder"], s["status"]) for s in steps] == [
        (s, leader, "done") for s in record["done"]]
    assert held_at_once(steps, {}) == []
    assert load_topology(stack_path(project, STACK)).failed_hosts == ("kvm1",)
    # The followers planned nothing and journaled nothing; every watchdog saw kvm1 fail.
    for name in {"wd1", "wd2", "wd3"} - {leader}:
        assert fleet.journal(name) == []
        assert "host:kvm1 is failed" in fleet.log(name)
    # `status` names the leader and shows each watchdog's view.
    status = subprocess.run([*cli_command(servers.port), "status", "--stack", STACK, "--project-dir",
                             str(project), "--etcd", fleet.etcd_urls, "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    shown = json.loads(status.stdout)["leadership"]
    assert shown["leader"]["name"] == leader and shown["leader"]["since"] > 0
    assert {v["name"] for v in shown["watchdogs"]} == {"wd1", "wd2", "wd3"}
    assert {v["leader"] for v in shown["watchdogs"]} == {leader}


def test_standin_leader_sigkilled_after_fencing_another_resumes_without_fencing_again(
        fleet: Fleet, servers: Servers, topology: Topology) -> None:
    fleet.start("wd1", kill=("fence", "done"))
    fleet.wait_leader("wd1")
    fleet.start("wd2")
    fleet.start("wd3")
    fleet.wait_views(3)
    fail_kvm1(servers, topology)
    assert fleet.wait_exit("wd1", 60) == -9  # SIGKILLed right after recording the fence
    nodes_back_on_spare(servers, topology)
    record = fleet.wait_remediated()
    time.sleep(2 * ROUND_S + 1)

    assert [f[:2] for f in fleet.fences()] == [("wd1", "start"), ("wd1", "end")]  # not again
    assert len(fleet.ups()) == 1
    steps = {s["step"]: s for s in fleet.step_records()}
    assert list(steps) == ["fence", "prune_state", "write_config", "up", "verify"]
    assert steps["fence"]["holder"] == "wd1"
    successor = record["holder"]
    assert successor in ("wd2", "wd3")
    assert all(s["holder"] == successor for name, s in steps.items() if name != "fence")
    assert steps["prune_state"]["token"] > steps["fence"]["token"]
    # Acting within the TTL and one round of the kill (the fence's end is the kill: the
    # SIGKILL comes with the journal line that follows the fence's record).
    took = steps["prune_state"]["started_at"] - steps["fence"]["ended_at"]
    print(f"takeover {took:.2f} s")
    assert took <= TTL + ROUND_S + 1.5, took
    adopted = [e for e in fleet.journal(successor) if e.get("trigger") == "adopted"]
    assert [e["id"] for e in adopted] == [record["id"]]
    assert held_at_once(list(steps.values()), {}) == []


def test_standin_leader_partitioned_from_etcd_stops_acting_mid_step(
        fleet: Fleet, servers: Servers, topology: Topology, etcd: EtcdCluster) -> None:
    proxy = CutProxy(etcd.members[0].client_port)
    try:
        fleet.start("wd1", etcd=proxy.url)  # wd1 reaches etcd only through the proxy
        fleet.wait_leader("wd1")
        fleet.start("wd2")
        fleet.start("wd3")
        fleet.wait_views(3)
        fleet.hold.touch()  # wd1's fence hangs (a slow BMC)...
        fail_kvm1(servers, topology)
        wait_until("wd1 fencing", fleet.fences, 60)
        proxy.cut()  # ...and wd1 loses etcd, but still sees the whole cluster
        code = fleet.wait_exit("wd1", TTL + 5)
        stopped_after = fleet.exited["wd1"] - (proxy.cut_at or 0)
        print(f"stopped {stopped_after:.2f} s after the cut")
        fleet.hold.unlink()
    finally:
        proxy.close()
    assert code == EXIT_LEADERSHIP_LOST, fleet.log("wd1")
    assert stopped_after <= TTL + 0.5, stopped_after
    assert "killed" in fleet.log("wd1")
    lost = [e for e in fleet.journal("wd1") if e.get("leadership_lost")]
    assert len(lost) == 1 and lost[0]["step"] == "fence"

    nodes_back_on_spare(servers, topology)
    record = fleet.wait_remediated()
    time.sleep(2 * ROUND_S + 1)
    fences = fleet.fences()
    # wd1's fence was killed mid-way (no end); the successor fenced again, after wd1 stopped.
    assert [f[:2] for f in fences] == [("wd1", "start"), (record["holder"], "start"),
                                       (record["holder"], "end")]
    assert fences[1][2] > lost[0]["ts"]
    assert len(fleet.ups()) == 1
    steps = fleet.step_records()
    assert held_at_once(steps, {("wd1", "fence"): lost[0]["ts"]}) == []
    assert {s["holder"] for s in steps if s["step"] != "fence"} == {record["holder"]}


def test_standin_etcd_without_quorum_nobody_acts_then_work_resumes(
        fleet: Fleet, servers: Servers, topology: Topology, etcd: EtcdCluster) -> None:
    for name in ("wd1", "wd2", "wd3"):
        fleet.start(name)
    fleet.wait_leader()
    fleet.wait_views(3)
    etcd.stop(1)
    etcd.stop(2)  # one member of three left: no quorum
    time.sleep(TTL + 1)  # every lease lapsed in the watchdogs' eyes
    fail_kvm1(servers, topology)
    time.sleep(2 * TTL)
    assert fleet.fences() == [] and fleet.ups() == []
    for name in ("wd1", "wd2", "wd3"):
        log = fleet.log(name)
        assert "ALERT etcd_unavailable (etcd_unavailable)" in log, log
        assert "ALERT refused (etcd_unavailable): kvm1 failed, but no watchdog may act" in log, log

    etcd.start(1)
    etcd.start(2)
    etcd.wait_healthy()
    wait_until("the fence", fleet.fences, 60)
    nodes_back_on_spare(servers, topology)
    fleet.wait_remediated()
    time.sleep(2 * ROUND_S + 1)
    assert [f[1] for f in fleet.fences()] == ["start", "end"]
    assert len(fleet.ups()) == 1
    assert held_at_once(fleet.step_records(), {}) == []
