"""Issue 11, the `run` loop: real probes against loopback servers, the remediation through the
STAND-IN pulumi (no real deploy). The loop survives a half-edited stack file and an unwritable
state directory, alerts each condition once, and keeps probing the hosts it fenced."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from components.stack_file import file_hash, load_topology, stack_path, write_topology
from components.topology import Topology
from tests.watchdog.conftest import Servers, StandIn
from tests.watchdog.seams import Recorder
from tests.watchdog.state_fixture import exported
from tests.watchdog.test_watch import context
from watchdog.context import Context
from watchdog.coordinate import Solo, Turn
from watchdog.detect import Failures
from watchdog.events import Event, EventKind
from watchdog.plan import Action
from watchdog.watch import Watchdog

KVM1 = ("127.0.1.1", "127.0.2.11", "127.0.2.21")  # kvm1 and its nodes db1, web1


def alerts(ctx: Context) -> list[dict[str, object]]:
    assert isinstance(ctx.events, Recorder)
    return ctx.events.alerts()


def test_standin_a_half_edited_stack_file_does_not_end_the_loop(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Saved half-edited (a YAML error) while a host dies: alert, keep watching on the last good
    topology, and act once the file is fixed."""
    servers.serve(topology)
    standin.set_state(exported())
    path = stack_path(project, "test")
    good = path.read_text()
    fixed_at_round = 20

    class Fixer(Recorder):
        def __call__(self, event: Event) -> None:
            super().__call__(event)
            if event.kind is EventKind.ALERT and event.data["reason"] == "stack_file_invalid":
                path.write_text(good)  # the person saves the file properly
            if event.kind is EventKind.JOURNALED and event.data.get("event") == "planned":
                for address in KVM1[1:]:
                    servers.up(address)  # what `up` would do: the nodes boot on the spare

    ctx = context(project, standin, servers, tmp_path, events=Fixer())
    watchdog = Watchdog(ctx)
    path.write_text(good.replace("mac:nodes:", "mac:nodes: [\n"))  # half-edited
    for address in KVM1:
        servers.down(address)
    code = asyncio.run(watchdog.run(max_rounds=fixed_at_round * 4))
    assert code in (0, 1)  # returned: no traceback, no exit 2
    reasons = [a["reason"] for a in alerts(ctx)]
    assert reasons.count("stack_file_invalid") == 1
    [outcome] = watchdog.outcomes
    assert outcome.plan.action is Action.FAILOVER
    assert load_topology(path).failed_hosts == ("kvm1",)


def test_standin_an_unwritable_state_dir_is_alerted_and_the_loop_goes_on(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """/proc refuses new directories even to root: the journal cannot be written."""
    servers.serve(topology)
    standin.set_state(exported())
    ctx = context(project, standin, servers, tmp_path)
    ctx.state_dir = Path("/proc/self/mac-watchdog-state")
    ctx.journal.state_dir = ctx.state_dir
    ctx.journal.path = ctx.state_dir / "journal.jsonl"
    for address in KVM1:
        servers.down(address)
    watchdog = Watchdog(ctx)
    asyncio.run(watchdog.run(max_rounds=60))
    io = [a for a in alerts(ctx) if a["reason"] == "watchdog_io_failed"]
    assert len(io) == 1 and "cannot write the journal" in str(io[0]["message"])
    assert [c for c in standin.commands() if c[:1] == ["up"]] == []  # nothing acted blindly


def test_a_flapping_node_is_alerted_once_per_condition(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """After one replace a node keeps flapping: the cooldown refusal is alerted once, not at
    every flap."""
    servers.serve(topology)
    standin.set_state(exported())
    ctx = context(project, standin, servers, tmp_path)
    path = stack_path(project, "test")
    path.write_text(path.read_text().replace("verifyTimeout: 3", "verifyTimeout: 0.2"))
    watchdog = Watchdog(ctx)

    async def flap() -> None:
        task = asyncio.create_task(watchdog.run(max_rounds=200))
        for _ in range(12):
            servers.down("127.0.2.22")  # web2
            await asyncio.sleep(0.4)
            servers.up("127.0.2.22")
            await asyncio.sleep(0.4)
        await task

    asyncio.run(flap())
    refused = [a for a in alerts(ctx) if a["event"] == "refused"]
    assert len(refused) == 1, [a["message"] for a in refused]


def test_a_fenced_host_that_answers_again_is_alerted_once(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """`fence: none` (or a fence that lied): the host comes back with its old VMs."""
    failed = topology.move_nodes(["db1", "web1"], "spare1").with_(spares=(), failed_hosts=("kvm1",))
    write_topology(stack_path(project, "test"), failed)
    servers.serve(failed)
    ctx = context(project, standin, servers, tmp_path)
    watchdog = Watchdog(ctx)

    async def comes_back() -> None:
        task = asyncio.create_task(watchdog.run(max_rounds=40))
        await asyncio.sleep(0.5)
        servers.up("127.0.1.1")  # kvm1's sshd answers again
        await task

    asyncio.run(comes_back())
    back = [a for a in alerts(ctx) if a["reason"] == "fenced_host_answers"]
    assert len(back) == 1 and "split brain" in str(back[0]["message"])
    assert "mac-watchdog reclaim kvm1" in str(back[0]["message"])
    assert watchdog.outcomes == []  # nothing else happens: it is not ours any more


def test_standin_a_topology_taken_from_the_shared_record_is_what_the_next_write_compares_to(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Beside other watchdogs (watchdog.leader) the stack file follows the shared record: the loop
    watches that topology and plans from that file, so its next compare-and-swap write is not
    refused as a person's edit."""
    path = stack_path(project, "test")
    shared = replace(topology, watchdog=replace(topology.watchdog, cooldown_s=61.0))

    class Follows(Solo):
        def turn(self, current: Topology, failures: Failures) -> Turn:
            write_topology(path, shared)  # what Leadership._follow_topology does
            return Turn(True, shared)

    ctx = context(project, standin, servers, tmp_path)
    ctx.coordinator = Follows()
    watchdog = Watchdog(ctx)
    before = file_hash(path)
    assert asyncio.run(watchdog._my_turn()) is True
    assert watchdog.topology == shared
    assert file_hash(path) != before and watchdog._source_hash == file_hash(path)
