"""`mac-lab` against the real lab (root only; skipped otherwise): each command run as a separate
process, as a person runs it beside `make lab`, and its effect seen by real probes from the root
namespace (HTTP health, TCP to sshd, SQL through each DB node's socket, link flags, PIDs).

Every test puts the lab back (heal, revive) even when it fails, so the next one starts healthy.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from components.topology import Role
from lab.cluster import Lab, http_status, mgmt_ns, ns_of, tcp_open, wait_for
from lab.faults import LabFaults, link_up
from lab.netns import namespace_pids
from lab.state import REPO
from lab.status import frames, render

pytestmark = pytest.mark.lab


def mac_lab(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, check=False)


def ok(*args: str) -> str:
    out = mac_lab(*args)
    assert out.returncode == 0, f"mac-lab {' '.join(args)} exited {out.returncode}: {out.stderr}"
    return out.stdout


def health(lab: Lab, node: str) -> int | None:
    return http_status(lab.topology.health_url(lab.node(node)), 1.0)


def galera(lab: Lab, node: str) -> dict[str, str]:
    return lab.wsrep(node)


def put_back(lab: Lab) -> None:
    faults = LabFaults(lab)
    for host in faults.host_names():
        faults.heal_host(host)
        if not tcp_open(lab.topology.hosts[host].address, 22, 0.5):
            faults.revive_host(host)
    broken = [s.node for s in lab.status() if s.status != 200]
    if broken:
        faults.revive_nodes(broken)
    lab.wait_healthy(90)


@pytest.fixture
def play(lab: Lab) -> Iterator[Lab]:
    lab.wait_healthy(90)
    try:
        yield lab
    finally:
        put_back(lab)


def test_a_second_lab_is_refused_and_the_running_one_is_untouched(play: Lab) -> None:
    out = mac_lab("up", "--no-watch", timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith(f"a lab is already running (pid {os.getpid()}, started ")
    assert out.stderr.strip().endswith("`make lab-down` first")
    assert "Traceback" not in out.stderr
    assert all(s.status == 200 for s in play.status())


def test_kill_cuts_the_node_off_and_kills_every_process_then_revive_brings_it_back(play: Lab) -> None:
    assert "killed web1" in ok("kill", "web1")
    assert not link_up("web1")
    assert namespace_pids(ns_of("web1")) == []
    assert health(play, "web1") is None
    out = ok("revive", "web1")
    assert "revived web1" in out
    assert link_up("web1") and health(play, "web1") == 200


def test_stop_service_kills_mariadbd_but_the_node_stays_up_and_says_503(play: Lab) -> None:
    assert "stopped mariadbd on db2" in ok("stop-service", "db2")
    wait_for("db2's clustercheck to say 503", lambda: health(play, "db2") == 503, 10)
    assert link_up("db2")  # the machine is alive: its link and clustercheck answer
    wait_for("db1 to see the cluster shrink", lambda: galera(play, "db1").get("wsrep_cluster_size") == "2",
             15)
    ok("revive", "db2")
    assert galera(play, "db2").get("wsrep_local_state_comment") == "Synced"
    assert galera(play, "db1").get("wsrep_cluster_size") == "3"


def test_stop_service_on_the_lb_stops_haproxy_while_garbd_keeps_its_vote(play: Lab) -> None:
    assert "stopped haproxy on lb1" in ok("stop-service", "lb1")
    assert health(play, "lb1") is None and http_status(f"{play.url}/health.php", 1.0) is None
    assert link_up("lb1")
    time.sleep(3)  # longer than Galera's suspect timeout: garbd (same node) would be gone by now
    assert galera(play, "db1").get("wsrep_cluster_size") == "3"
    ok("revive", "lb1")
    assert http_status(f"{play.url}/health.php", 2.0) == 200


def test_kill_host_silences_its_nodes_and_sshd_and_revive_powers_it_on(play: Lab) -> None:
    out = ok("kill-host", "lab2")
    assert "db2, web2" in out
    address = play.topology.hosts["lab2"].address
    assert not tcp_open(address, 22, 0.5)
    assert health(play, "db2") is None and health(play, "web2") is None
    assert namespace_pids(mgmt_ns("lab2")) == [] and namespace_pids(ns_of("db2")) == []
    wait_for("the LB to serve on from lab1", lambda: http_status(f"{play.url}/health.php", 2.0) == 200,
             15)
    ok("revive", "lab2")
    assert tcp_open(address, 22, 0.5)
    assert health(play, "db2") == 200 and health(play, "web2") == 200


def test_partition_cuts_a_live_host_off_everyone_and_heal_lets_it_rejoin(play: Lab) -> None:
    running = namespace_pids(ns_of("db2"))
    assert "partitioned lab2" in ok("partition", "lab2")
    assert not tcp_open(play.topology.hosts["lab2"].address, 22, 0.5)
    assert health(play, "db2") is None and health(play, "web2") is None
    assert set(running) <= set(namespace_pids(ns_of("db2")))  # nothing was killed
    # A split brain: each side sees a smaller cluster; db2 alone (no quorum) is not Primary.
    wait_for("db1 to lose db2", lambda: galera(play, "db1").get("wsrep_cluster_size") == "2", 15)
    wait_for("db2 to lose quorum",
             lambda: galera(play, "db2").get("wsrep_cluster_status") == "non-Primary", 15)
    ok("heal", "lab2")
    wait_for("db2 to rejoin", lambda: galera(play, "db1").get("wsrep_cluster_size") == "3", 30)
    play.wait_healthy(60)


def test_partition_from_the_watchdog_only_leaves_the_cluster_whole(play: Lab) -> None:
    ok("partition", "lab2", "--watchdog-only")
    assert not tcp_open(play.topology.hosts["lab2"].address, 22, 0.5)
    assert health(play, "db2") is None and health(play, "web2") is None
    time.sleep(3)  # longer than Galera's suspect timeout (2 s): it would have evicted db2 by now
    assert galera(play, "db1").get("wsrep_cluster_size") == "3"
    assert http_status(f"{play.url}/health.php", 2.0) == 200
    ok("heal", "lab2")
    assert health(play, "db2") == 200


def test_slow_adds_latency_or_says_in_one_line_that_the_kernel_has_no_netem(play: Lab) -> None:
    out = mac_lab("slow", "web2", "--delay", "200ms")
    if out.returncode == 2:
        # This kernel has no netem (as on the machines here): one clear line is the behaviour.
        assert out.stderr.count("\n") == 1 and "no sch_netem" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    start = time.monotonic()
    assert health(play, "web2") == 200
    assert time.monotonic() - start >= 0.2
    ok("slow", "web2", "--off")


def test_unknown_names_are_one_line_naming_the_known_ones(play: Lab) -> None:
    out = mac_lab("kill", "web9")
    assert (out.returncode, out.stderr) == (2, "unknown node 'web9'; known nodes: db1, db2, lb1, web1, "
                                               "web2\n")
    out = mac_lab("kill-host", "lab9")
    assert out.returncode == 2 and out.stderr.startswith("unknown host 'lab9'; known hosts: lab1, lab2")


def test_load_prints_a_live_line_per_second_and_a_summary(play: Lab) -> None:
    out = ok("load", "--rate", "40", "--duration", "3", "--path", "/health.php")
    lines = out.splitlines()
    assert len([ln for ln in lines if "req/s" in ln and "p99" in ln]) >= 2
    assert '"failed": 0' in lines[-1] and '"requests": 120' in lines[-1]


def test_status_watch_shows_a_killed_node_within_one_refresh(play: Lab) -> None:
    view = frames(play, interval_s=1.0)
    before = next(view)
    assert {n.name: n.health for n in before.nodes}["web1"] == 200
    LabFaults(play).kill_node("web1")
    killed_at = time.monotonic()
    after = next(view)
    assert time.monotonic() - killed_at < 2.5  # one refresh: the interval plus a probe timeout
    web1 = next(n for n in after.nodes if n.name == "web1")
    assert (web1.link, web1.health) == (False, None)
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render(after))
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("│ web1 "))
    assert "│ cut  │ down   │" in line
    db = next(n for n in after.nodes if n.role == Role.MYSQL.value)
    assert db.galera.get("local_state_comment") == "Synced"


def test_status_json_reports_galera_and_haproxy_backends(play: Lab) -> None:
    snap = json.loads(ok("status", "--json"))
    nodes = {n["name"]: n for n in snap["nodes"]}
    assert nodes["db1"]["galera"]["cluster_size"] == "3"
    assert nodes["web1"]["health"] == 200
    assert {(b["proxy"], b["server"]) for b in snap["backends"]} >= {("web", "web1"), ("web", "web2")}


def test_status_shows_the_real_watchdogs_decision_after_a_kill(play: Lab, tmp_path: Path) -> None:
    """The README's recipe: a real `mac-watchdog run --dry-run --json-log` saving its log in its
    state dir, `mac-lab kill web1`, and the live view showing the watchdog's decision."""
    state = tmp_path / "mac-wd"
    state.mkdir()
    with open(state / "log.jsonl", "w") as log:
        watchdog = subprocess.Popen(
            [sys.executable, "-c", "from watchdog.cli import main; main()", "run", "--stack", "lab",
             "--dry-run", "--json-log", "--state-dir", str(state)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        view = frames(play, interval_s=1.0, watchdog=state)
        assert next(view).watchdog == f"no decision yet in {state}"
        time.sleep(3)  # the watchdog sees everything healthy first
        ok("kill", "web1")
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            seen = next(view).watchdog
            if seen and "decision replace (dry run)" in seen:
                break
        assert seen and "decision replace (dry run)" in seen and "web1" in seen, (
            seen, (state / "log.jsonl").read_text()[-2000:])
    finally:
        watchdog.terminate()
        watchdog.wait(10)
