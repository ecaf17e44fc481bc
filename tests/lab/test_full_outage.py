"""Full outage: every DB node killed at once (a site power cut), then all powered on together.

Its own module, so its own lab (the `lab` fixture is per module): the other drills never see a
cluster that went through a full outage. mac-galera-start must bring the cluster back by itself
(recover positions, bootstrap the most advanced node, the other joins) with every acknowledged
write on every DB node, and the LB serving writes again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.topology import GALERA_PORT, HEALTH_ENDPOINTS, Role
from lab import daemons
from lab.cluster import Lab, http_status, ns_of, tcp_open, wait_for
from lab.drills import run_full_outage
from lab.netns import LabError

pytestmark = pytest.mark.lab

RATE = 200  # req/s, as the other drills
DURATION_S = 8  # the staggered case kills db2 at 6 s, with writes still coming
KILL_AT_S = 3


@pytest.mark.parametrize("stagger_s", [0.0, 3.0], ids=["together", "db1-first"])
def test_full_outage_recovers_by_itself_without_losing_a_write(healthy_lab: Lab, record_property,
                                                               stagger_s: float) -> None:
    """Killed together: the positions tie or nearly, either may bootstrap. db1 first: db2 took
    writes db1 never saw, so only db2 may bootstrap (db1 bootstrapping would lose them)."""
    dbs = [n.name for n in healthy_lab.topology.nodes_of(Role.MYSQL)]
    # every data node plus garbd; garbd joins a moment after the lab reports healthy
    size = str(len(dbs) + len(healthy_lab.topology.nodes_of(Role.LB)))

    def full_size() -> bool:
        return all(healthy_lab.wsrep(name).get("wsrep_cluster_size") == size for name in dbs)

    wait_for(f"a cluster of {size} members", full_size, 30, 0.2)
    result = run_full_outage(healthy_lab, RATE, DURATION_S, KILL_AT_S, stagger_s)
    summary = {**result.report.summary(), "to_primary_s": round(result.to_primary_s, 2),
               "to_lb_s": round(result.to_lb_s, 2), "rows_checked": result.rows_checked}
    record_property(f"full_outage_stagger_{stagger_s}", summary)
    print("full outage:", summary, result.starts)
    assert result.report.acknowledged_tokens, "no write was acknowledged before the power cut"
    assert sorted(line.split(": ")[1] for line in result.starts.values()) == ["bootstrap", "join"]
    if stagger_s:
        assert result.starts[dbs[-1]].split(": ")[1] == "bootstrap", result.starts
    for name in dbs:
        status = healthy_lab.wsrep(name)
        assert status["wsrep_cluster_status"] == "Primary"
        assert status["wsrep_local_state_comment"] == "Synced"
    wait_for(f"a cluster of {size} members again (garbd rejoins)", full_size, 20, 0.2)
    assert result.missing == {name: set() for name in dbs}


def test_a_db_node_that_cannot_see_its_peer_never_bootstraps(healthy_lab: Lab) -> None:
    """After a full outage only db1 powers on (garbd still answers): it recovers and publishes
    its position but never bootstraps without db2's, and gives up with exit 4 when --wait ends.
    Then db2 powers on too and the cluster comes back."""
    dbs = [n.name for n in healthy_lab.topology.nodes_of(Role.MYSQL)]
    for name in dbs:
        healthy_lab.kill_node(name)
    lone, node, dirs = dbs[0], healthy_lab.node(dbs[0]), healthy_lab.dirs(dbs[0])
    daemons.prepare_mysql(node, healthy_lab.topology, dirs)
    daemons.start_clustercheck(healthy_lab.state, ns_of(lone), node, dirs)
    log_file = dirs.log / "galera-start.log"
    before = log_file.stat().st_size if log_file.exists() else 0
    proc = daemons.spawn_galera(healthy_lab.state, ns_of(lone), node, healthy_lab.topology, dirs,
                                dirs.root / "my.cnf", timeout_s=6)
    position_url = f"http://{node.ip}:{HEALTH_ENDPOINTS[Role.MYSQL].port}/position"
    wait_for("db1 to publish its recovered position",
             lambda: http_status(position_url, 1.0) == 200, 6, 0.1)
    with pytest.raises(LabError, match="exited 4"):
        daemons.wait_galera(proc, node, dirs, 6)
    log = log_file.read_bytes()[before:].decode()
    assert "mac-galera-start: bootstrap:" not in log and "gave up" in log, log
    assert not tcp_open(node.ip, GALERA_PORT)  # no server started
    assert "safe_to_bootstrap: 0" in (Path(daemons.mysql_paths(dirs).datadir) / "grastate.dat").read_text()
    assert http_status(position_url) == 404  # withdrawn when it gave up
    healthy_lab.kill_node(lone)
    healthy_lab.power_on_db_nodes(dbs)
    for name in dbs:
        assert healthy_lab.wsrep(name)["wsrep_cluster_status"] == "Primary"
