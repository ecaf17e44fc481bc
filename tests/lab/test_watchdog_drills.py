"""The real watchdog against the live lab (root only; skipped otherwise): `mac-watchdog status` and
`mac-watchdog run --dry-run --json-log` as subprocesses, probing the lab's namespaces for real
(hosts: their sshd on the management address, port 22; nodes: their health URLs).

Every run is a dry run on a temporary copy of the project's stack files (`--project-dir`), with a
STAND-IN `pulumi` (records argv, deploys nothing) and a fence command that would only leave a
marker file: the tests check that nothing was fenced, written or deployed. They assert behaviour
(what failed, what was planned, what was refused), not timings; the detection time is reported.
The destructive host drill runs last (pytest keeps file order) and revives the host after.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from components.stack_file import load_topology, stack_path, write_topology
from components.topology import Role
from lab.cluster import Lab
from lab.decisions import DryRun as WatchdogRun
from lab.state import REPO
from tests.watchdog import standin_pulumi

pytestmark = pytest.mark.lab

STACK = "lab"
WATCHDOG = [sys.executable, "-c", "from watchdog.cli import main; main()"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pulumi.yaml and every stack file, copied; the lab hosts get a fence command that only
    leaves a marker (the lab stack sets none, and the planner rightly refuses to move the nodes
    of an unfenceable host: see test_lab_stack_without_fence_refuses_the_move)."""
    root = tmp_path_factory.mktemp("project")
    (root / "stacks").mkdir()
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    for f in (REPO / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, root / "stacks" / f.name)
    path = stack_path(root, STACK)
    topology = load_topology(path)
    fenced = root / "fenced"
    hosts = {name: replace(h, fence=f"touch {fenced}-{name}") for name, h in topology.hosts.items()}
    write_topology(path, topology.with_(hosts=hosts))
    return root


def fence_markers(project: Path) -> list[Path]:
    return sorted(project.glob("fenced-*"))


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """A STAND-IN pulumi CLI (records argv in ROOT/argv.jsonl; never a real deploy)."""
    root = tmp_path / "standin-pulumi"
    standin_pulumi.install(root)
    return root


@contextlib.contextmanager
def watching(project: Path, tmp_path: Path, standin: Path) -> Iterator[WatchdogRun]:
    run = WatchdogRun(project, tmp_path / "state", standin)
    try:
        yield run
    finally:
        run.stop()


def assert_changed_nothing(project: Path, before: str, run: WatchdogRun, standin: Path) -> None:
    """No fence ran, no stack file was written, no deploy started, no remediation journaled."""
    assert stack_path(project, STACK).read_text() == before
    assert fence_markers(project) == []
    assert not (standin / "argv.jsonl").exists()  # the stand-in pulumi was never called
    assert not (run.state_dir / "journal.jsonl").exists()


def test_status_reports_every_host_and_node_healthy(healthy_lab: Lab, project: Path) -> None:
    out = subprocess.run([*WATCHDOG, "status", "--stack", STACK, "--json", "--project-dir",
                          str(project), "--state-dir", str(project / "status-state")],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    assert status["healthy"] is True
    rows = {(t["kind"], t["name"]): t for t in status["targets"]}
    topology = healthy_lab.topology
    assert set(rows) == {("host", h) for h in topology.hosts} | {("node", n) for n in topology.nodes}
    assert all(t["state"] == "up" and t["error"] is None for t in rows.values()), rows
    for name, host in topology.hosts.items():  # hosts answer on their sshd, port 22
        assert rows[("host", name)]["address"] == f"{host.address}:22"


def test_lab_stack_without_fence_refuses_the_move() -> None:
    """The lab's own stack file names no fence command: a failover of its host is refused
    (pure planning, no lab needed)."""
    out = subprocess.run([*WATCHDOG, "plan", "--stack", STACK, "--fail", "lab1", "--json",
                          "--project-dir", str(REPO), "--state-dir", "/nonexistent-mac-lab-state"],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["action"] == "refuse"
    assert json.loads(out.stdout)["code"] == "no_fence_command"
    assert "no fence command" in json.loads(out.stdout)["reason"]


def test_web_node_death_is_a_node_failure_and_plans_a_replace(
        healthy_lab: Lab, project: Path, tmp_path: Path, standin: Path, record_property) -> None:
    web = healthy_lab.topology.nodes_of(Role.WEB)[1]
    before = stack_path(project, STACK).read_text()
    with watching(project, tmp_path, standin) as run:
        run.wait_all_healthy(healthy_lab)
        killed_at = time.time()
        healthy_lab.kill_node(web.name)
        try:
            decision = run.decision()
        finally:
            healthy_lab.start_node(web.name)
    seconds = decision["ts"] - killed_at
    record_property("web_node_death_to_decision_s", round(seconds, 2))
    print(f"web node {web.name} killed -> decision in {seconds:.2f} s: {decision['message']}")
    assert decision["dry_run"] is True
    assert decision["action"] == "replace", decision
    assert decision["failed_nodes"] == [web.name] and decision["failed_hosts"] == []
    assert decision["plan"]["replace"] == [web.name] and decision["plan"]["moves"] == []
    assert all(d["action"] != "failover" for d in run.of("decision"))
    assert_changed_nothing(project, before, run, standin)
    healthy_lab.wait_node_healthy(web.name, 30)


def test_isolation_refuses_to_act(healthy_lab: Lab, project: Path, tmp_path: Path, standin: Path) -> None:
    """Everything unreachable from the watchdog at once (its own network is cut, the cluster
    itself is fine): it suspects itself and plans nothing, even after the failure window."""
    before = stack_path(project, STACK).read_text()
    settings = healthy_lab.topology.watchdog
    with watching(project, tmp_path, standin) as run:
        run.wait_all_healthy(healthy_lab)
        healthy_lab.isolate_root()
        try:
            decision = run.decision()
            # Long enough for every target to be FAILED: still nothing but the refusal.
            time.sleep(settings.fail_after_s + settings.fail_threshold * settings.interval_s + 1)
            failed = {e["target"] for e in run.of("health") if e["state"] == "failed"}
            decisions = run.of("decision")
        finally:
            healthy_lab.end_isolation()
    print(f"isolation: {decision['message']}")
    assert decision["action"] == "refuse" and decision["isolated"] is True, decision
    assert "own network" in decision["reason"] and decision["code"] == "isolation_suspected"
    assert any(e["code"] == "isolation_suspected" and "own network" in e["note"] for e in run.of("note"))
    assert len(failed) == len(healthy_lab.topology.hosts) + len(healthy_lab.topology.nodes)
    assert [d["action"] for d in decisions] == ["refuse"]
    assert_changed_nothing(project, before, run, standin)
    healthy_lab.wait_healthy(30)  # the cluster itself never noticed


def test_host_death_is_a_host_failure_and_plans_a_failover_to_the_spare(
        healthy_lab: Lab, project: Path, tmp_path: Path, standin: Path, record_property) -> None:
    """The host holding db1 and web1 goes silent (links cut, its nodes and its sshd killed)."""
    topology = healthy_lab.topology
    host = topology.nodes_of(Role.MYSQL)[0].host
    on_host = sorted(n.name for n in topology.nodes_on(host))
    [spare] = topology.spares
    before = stack_path(project, STACK).read_text()
    with watching(project, tmp_path, standin) as run:
        run.wait_all_healthy(healthy_lab)
        killed_at = time.time()
        victims = healthy_lab.kill_host(host)
        try:
            decision = run.decision()
            host_failed = run.wait("host failed", lambda: next(
                (e for e in run.of("health") if e["target"] == f"host:{host}"
                 and e["state"] == "failed"), None), 5)
        finally:
            run.stop()
            healthy_lab.revive_host(host)
            for name in sorted(victims, key=lambda n: healthy_lab.node(n).role is not Role.MYSQL):
                healthy_lab.start_node(name)  # the DB node first (it rejoins), then the others
    seconds = decision["ts"] - killed_at
    record_property("host_death_to_decision_s", round(seconds, 2))
    record_property("host_death_to_host_failed_s", round(host_failed["ts"] - killed_at, 2))
    failed_after = {e["target"]: round(e["ts"] - killed_at, 2) for e in run.of("health")
                    if e["state"] == "failed"}
    print(f"host {host} killed -> failed after (s) {failed_after}; "
          f"decision in {seconds:.2f} s: {decision['message']}")
    assert sorted(victims) == on_host
    assert decision["dry_run"] is True
    assert decision["action"] == "failover", decision
    assert decision["failed_hosts"] == [host] and decision["failed_nodes"] == []
    moves = decision["plan"]["moves"]
    assert sorted(m["node"] for m in moves) == on_host
    assert {(m["from"], m["to"]) for m in moves} == {(host, spare)}
    assert decision["plan"]["fence"] == [host]
    assert decision["plan"]["topology"]["failedHosts"] == [host]
    # A host failure, never mistaken for node failures of its nodes (nor anything else).
    assert all(d["failed_nodes"] == [] and d["action"] == "failover" for d in run.of("decision"))
    assert_changed_nothing(project, before, run, standin)
    healthy_lab.wait_healthy(60)
