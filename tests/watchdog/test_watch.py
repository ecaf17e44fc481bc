"""The `run` loop end to end: real probes against loopback servers, real detector timing, the
remediation through the STAND-IN pulumi (no real deploy)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from components.stack_file import load_topology, stack_path
from components.topology import Host, Topology
from tests.watchdog.conftest import Servers, StandIn
from tests.watchdog.seams import Recorder
from tests.watchdog.state_fixture import exported
from watchdog.context import Context
from watchdog.deploy import Deployer
from watchdog.events import Event, EventKind, EventSink
from watchdog.fence import FenceResult
from watchdog.journal import Journal
from watchdog.plan import Action, Step
from watchdog.target import TargetKey
from watchdog.watch import Watchdog


def context(project: Path, standin: StandIn, servers: Servers, tmp_path: Path,
            on_fence: list[str] | None = None, events: EventSink | None = None) -> Context:
    fenced = on_fence if on_fence is not None else []

    def fencer(host: Host, timeout_s: float) -> FenceResult:
        fenced.append(host.name)
        return FenceResult(host.name, skipped=False, returncode=0)

    return Context(project_dir=project, stack="test", state_dir=tmp_path / "state",
                   transport=servers.transport(), fencer=fencer,
                   backend=Deployer(project, "test", pulumi_root=standin.root),
                   backoff_s=0.0, sleep=lambda s: None, events=events or Recorder())


def test_standin_cli_run_loop_detects_a_dead_host_and_fails_over(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy."""
    servers.serve(topology)
    standin.set_state(exported())
    fenced: list[str] = []

    def moved(event: Event) -> None:
        # What `up` would do for real: the nodes boot on the spare with their own IPs.
        if event.kind is EventKind.JOURNALED and event.data.get("event") == "planned":
            servers.up("127.0.2.11")
            servers.up("127.0.2.21")

    ctx = context(project, standin, servers, tmp_path, fenced, events=moved)
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):  # kvm1 and its nodes die
        servers.down(address)
    watchdog = Watchdog(ctx)
    code = asyncio.run(watchdog.run(once=True))
    assert code == 0
    [outcome] = watchdog.outcomes
    assert outcome.plan.action is Action.FAILOVER and fenced == ["kvm1"]
    assert outcome.ran == (Step.FENCE, Step.PRUNE_STATE, Step.WRITE_CONFIG, Step.UP, Step.VERIFY)
    t = load_topology(stack_path(project, "test"))
    assert t.failed_hosts == ("kvm1",) and t.nodes["db1"].host == "spare1"
    assert watchdog.topology == t  # the loop watches the new cluster
    assert TargetKey.host("kvm1") not in watchdog.detector.health


def test_isolation_acts_on_nothing_and_alerts(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    servers.serve(topology)
    ctx = context(project, standin, servers, tmp_path)
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21", "127.0.1.2", "127.0.2.12"):
        servers.down(address)
    before = stack_path(project, "test").read_text()
    watchdog = Watchdog(ctx)
    assert asyncio.run(watchdog.run(once=True)) == 1
    assert watchdog.outcomes == []
    # only the warm-up at start (find the CLI, select the stack): no export, import or up
    assert standin.commands() == [["version"], ["stack", "select", "--stack", "test"]]
    assert stack_path(project, "test").read_text() == before
    assert isinstance(ctx.events, Recorder)
    refusals = ctx.events.alerts("refused")
    assert len(refusals) == 1 and "suspecting the watchdog's own network" in refusals[0]["message"]
    assert refusals[0]["reason"] == "isolation_suspected"  # alerted at once, with its code
    assert Journal(tmp_path / "state").entries() == []


def test_a_stack_file_changed_under_the_loop_is_adopted_not_overwritten(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """A manual failover wrote the stack file while the loop watched the old cluster: the loop's
    stale plan is dropped, nothing is deployed, and the new cluster is watched."""
    from components.stack_file import write_topology

    servers.serve(topology)
    ctx = context(project, standin, servers, tmp_path)
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):
        servers.down(address)
    manual = topology.move_nodes(["db1", "web1"], "spare1").with_(spares=(), failed_hosts=("kvm1",))
    watchdog = Watchdog(ctx)
    write_topology(stack_path(project, "test"), manual)
    watchdog.rounds_for_once = lambda: 8  # type: ignore[method-assign]
    asyncio.run(watchdog.run(once=True))
    assert watchdog.outcomes == [] and watchdog.topology == manual
    assert [c for c in standin.commands() if c[0] == "up"] == []
    # the stale failover was never planned; what followed was judged on the new cluster
    planned = [e["plan"]["action"] for e in Journal(tmp_path / "state").entries()
               if e.get("event") == "planned"]
    assert "failover" not in planned


def test_a_remediation_that_keeps_failing_is_abandoned_not_blocking_forever(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy: `up` always fails; after max_failures the loop gives up on
    that remediation (journal `abandoned`, alert) and plans afresh."""
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(up_fail=1000)
    ctx = context(project, standin, servers, tmp_path)
    ctx.max_failures = 4
    ctx.up_attempts = 2
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):
        servers.down(address)
    watchdog = Watchdog(ctx)
    asyncio.run(watchdog.run(max_rounds=80))  # 4 s of 0.05 s rounds, enough for 2 attempts
    entries = Journal(tmp_path / "state").entries()
    outcomes = [e["outcome"] for e in entries if e.get("event") == "finished"]
    assert "abandoned" in outcomes
    assert isinstance(ctx.events, Recorder) and ctx.events.alerts("abandoned")
    assert load_topology(stack_path(project, "test")).failed_hosts == ("kvm1",)  # change kept
