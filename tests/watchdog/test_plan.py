"""The planner: table-driven cases on the loopback test stack, and hypothesis properties."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.topology import (
    Host,
    Image,
    Network,
    Node,
    Role,
    Topology,
    WatchdogSettings,
    validate,
)
from watchdog.detect import Failures
from watchdog.plan import Action, History, Remediation, Step, plan
from watchdog.reasons import Note, Reason

NOW = 100_000.0


def moves(p):
    return sorted((m.node, m.from_host, m.to_host) for m in p.moves)


def test_host_failure_moves_all_its_nodes_to_one_spare(topology: Topology) -> None:
    p = plan(topology, Failures(hosts=("kvm1",)), now=NOW)
    assert p.action is Action.FAILOVER
    assert moves(p) == [("db1", "kvm1", "spare1"), ("web1", "kvm1", "spare1")]
    assert p.topology.spares == () and p.topology.failed_hosts == ("kvm1",)
    assert p.fence == ("kvm1",) and p.prune == ("kvm1",)
    assert p.steps == (Step.FENCE, Step.PRUNE_STATE, Step.WRITE_CONFIG, Step.UP, Step.VERIFY)
    assert set(p.verify) == {"db1", "web1"}
    assert validate(p.topology) == []


def test_node_failure_is_replaced_in_place_then_escalated(topology: Topology) -> None:
    p = plan(topology, Failures(nodes=("web2",)), now=NOW)
    assert (p.action, p.replace, p.moves, p.steps) == (Action.REPLACE, ("web2",), (), (Step.UP, Step.VERIFY))
    assert p.topology == topology
    history = History(tuple(Remediation(NOW - 2000 + i * 400, Action.REPLACE, nodes=("web2",))
                            for i in range(2)))
    p = plan(topology, Failures(nodes=("web2",)), history, now=NOW)
    assert p.action is Action.FAILOVER
    assert moves(p) == [("web2", "kvm2", "spare1")]
    assert Step.FENCE not in p.steps  # its host answers: nothing to fence
    # Replacements older than the attempt window do not count.
    old = History(tuple(Remediation(NOW - 4000 - i, Action.REPLACE, nodes=("web2",)) for i in range(2)))
    assert plan(topology, Failures(nodes=("web2",)), old, now=NOW).action is Action.REPLACE


def test_failed_spare_is_dropped_without_deploy(topology: Topology) -> None:
    p = plan(topology, Failures(hosts=("spare1",)), now=NOW)
    assert p.action is Action.NONE
    assert p.steps == (Step.PRUNE_STATE, Step.WRITE_CONFIG)
    assert p.topology.spares == () and p.topology.failed_hosts == ("spare1",)


def test_fence_none_is_allowed_but_a_missing_fence_refuses(topology: Topology) -> None:
    p = plan(topology, Failures(hosts=("kvm3",)), now=NOW)
    assert p.action is Action.FAILOVER and moves(p) == [("lb1", "kvm3", "spare1")]
    hosts = dict(topology.hosts)
    hosts["kvm1"] = replace(hosts["kvm1"], fence=None)
    p = plan(topology.with_(hosts=hosts), Failures(hosts=("kvm1",)), now=NOW)
    assert p.action is Action.REFUSE
    assert "mac:hosts.kvm1.fence" in p.reason and "'none'" in p.reason


def test_refuses_without_a_spare(topology: Topology) -> None:
    p = plan(topology.with_(spares=()), Failures(hosts=("kvm1",)), now=NOW)
    assert p.action is Action.REFUSE and "no spare left" in p.reason
    assert p.topology == topology.with_(spares=())


def test_two_hosts_need_two_spares(topology: Topology) -> None:
    p = plan(topology, Failures(hosts=("kvm1", "kvm2")), now=NOW)
    assert p.action is Action.REFUSE  # one spare; db1 and db2 cannot share it


@pytest.mark.parametrize(("history", "manual", "action", "words"), [
    (History((Remediation(NOW - 10, Action.FAILOVER),)), False, Action.REFUSE, "in cooldown"),
    (History((Remediation(NOW - 10, Action.FAILOVER),)), True, Action.FAILOVER, ""),
    (History(tuple(Remediation(NOW - 3000 + i * 400, Action.REPLACE) for i in range(3))), False,
     Action.REFUSE, "over budget"),
    (History(tuple(Remediation(NOW - 5000 + i * 400, Action.REPLACE) for i in range(3))), False,
     Action.FAILOVER, ""),
    (History((Remediation(NOW - 10, Action.NONE),)), False, Action.FAILOVER, ""),  # spare drops are free
])
def test_cooldown_and_budget(topology: Topology, history: History, manual: bool, action: Action,
                             words: str) -> None:
    p = plan(topology, Failures(hosts=("kvm1",)), history, now=NOW, manual=manual)
    assert p.action is action
    assert words in p.reason


def test_nothing_failed_and_isolation(topology: Topology) -> None:
    assert plan(topology, Failures(), now=NOW).action is Action.NONE
    isolated = Note(Reason.ISOLATION_SUSPECTED, "6 of 9 failing")
    p = plan(topology, Failures(isolated=True, notes=(isolated,)), now=NOW)
    assert (p.action, p.moves, p.steps, p.topology) == (Action.REFUSE, (), (), topology)
    assert (p.code, p.reason, p.notes) == (Reason.ISOLATION_SUSPECTED, "6 of 9 failing", (isolated,))


def test_plan_json_shape(topology: Topology) -> None:
    j = plan(topology, Failures(hosts=("kvm1",)), now=NOW).to_json()
    assert j["action"] == "failover"
    assert {"node": "db1", "from": "kvm1", "to": "spare1"} in j["moves"]
    assert j["topology"]["spares"] == [] and j["topology"]["failedHosts"] == ["kvm1"]
    assert j["topology"]["nodes"]["db1"]["host"] == "spare1"


# --------------------------------------------------------------------------------------------
# Properties over random clusters.
# --------------------------------------------------------------------------------------------

@st.composite
def clusters(draw: st.DrawFn) -> Topology:
    n_active = draw(st.integers(2, 6))
    n_spares = draw(st.integers(0, 3))
    n_failed = draw(st.integers(0, 2))
    active = [f"kvm{i}" for i in range(1, n_active + 1)]
    spares = [f"spare{i}" for i in range(1, n_spares + 1)]
    failed = [f"dead{i}" for i in range(1, n_failed + 1)]
    fence = st.sampled_from([None, "none", "ipmitool -E chassis power off"])
    hosts = {h: Host(h, f"qemu+ssh://root@{h}/system", f"10.0.0.{i + 1}", draw(fence))
             for i, h in enumerate(active + spares + failed)}
    nodes: dict[str, Node] = {}
    ip = 10
    counts = {Role.MYSQL: 2, Role.WEB: draw(st.integers(2, min(4, n_active))),
              Role.LB: draw(st.integers(1, min(2, n_active)))}
    for role, count in counts.items():
        placed = draw(st.permutations(active))[:count]
        for i, host in enumerate(placed):
            name = f"{role.value}{i + 1}"
            nodes[name] = Node(name, role, host, f"192.168.50.{ip}")
            ip += 1
    t = Topology(network=Network("br0", "192.168.50.0/24", "192.168.50.1"), image=Image("/img"),
                 hosts=hosts, nodes=nodes, spares=tuple(spares), failed_hosts=tuple(failed),
                 watchdog=WatchdogSettings(replace_attempts=draw(st.integers(0, 3))))
    assert validate(t) == []
    return t


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Topology, Failures, History]:
    t = draw(clusters())
    live = [h for h in t.hosts if h not in t.failed_hosts]
    hosts = tuple(sorted(draw(st.sets(st.sampled_from(live), max_size=3))))
    nodes = tuple(sorted(n for n in draw(st.sets(st.sampled_from(sorted(t.nodes)), max_size=3))
                         if t.nodes[n].host not in hosts))
    history = History(tuple(
        Remediation(NOW - draw(st.floats(0, 7200)), draw(st.sampled_from(list(Action))),
                    nodes=tuple(draw(st.sets(st.sampled_from(sorted(t.nodes)), max_size=2))))
        for _ in range(draw(st.integers(0, 4)))))
    isolated = draw(st.booleans()) and draw(st.booleans())
    return t, Failures(hosts=hosts, nodes=nodes, isolated=isolated), history


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.booleans())
def test_property_plans_keep_the_rules(scenario: tuple[Topology, Failures, History], manual: bool) -> None:
    t, failures, history = scenario
    p = plan(t, failures, history, NOW, manual=manual)
    # never breaks anti-affinity (or any other rule of the model)
    assert validate(p.topology) == []
    for m in p.moves:
        # targets only a spare that is not failed and was not active
        assert m.to_host in t.spares
        assert m.to_host not in failures.hosts and m.to_host not in t.failed_hosts
        assert m.to_host not in t.active_hosts
        # never moves a healthy node of a healthy host
        assert m.from_host in failures.hosts or m.node in failures.nodes
    moved = {m.node for m in p.moves}
    for name, node in p.topology.nodes.items():
        if name not in moved:
            assert node.host == t.nodes[name].host
    if p.action is Action.REFUSE or not p.steps:
        assert not p.moves and not p.replace
    if p.action is Action.REFUSE:
        assert p.topology == t
    if failures.isolated:
        assert p.action is Action.REFUSE and not p.steps
    if p.action is Action.FAILOVER and failures.hosts:
        # one spare per failed host; every node of a failed host moves
        for h in failures.hosts:
            targets = {m.to_host for m in p.moves if m.from_host == h}
            assert len(targets) <= 1
            assert {m.node for m in p.moves if m.from_host == h} == {n.name for n in t.nodes_on(h)}
        assert set(failures.hosts) <= set(p.topology.failed_hosts)


@settings(max_examples=40, deadline=None)
@given(clusters(), st.lists(st.floats(1, 120), min_size=5, max_size=60))
def test_property_flapping_node_gets_at_most_one_remediation_per_cooldown(
        t: Topology, gaps: list[float]) -> None:
    """A node that fails again and again: each failure is planned; remediations keep the cooldown."""
    node = sorted(t.nodes)[0]
    history = History()
    now = NOW
    starts = []
    for gap in gaps:
        now += gap
        p = plan(t, Failures(nodes=(node,)), history, now)
        if p.action in (Action.FAILOVER, Action.REPLACE):
            starts.append(now)
            history = History((*history.remediations, Remediation(
                now, p.action, nodes=(node,), moved=tuple(m.node for m in p.moves))))
    cooldown = t.watchdog.cooldown_s
    assert all(b - a >= cooldown for a, b in itertools.pairwise(starts))
    per_hour = t.watchdog.remediations_per_hour
    assert all(sum(1 for s in starts if x - 3600 < s <= x) <= per_hour for x in starts)


# --- the DB data rule (issue 11): never a DB node on a fresh disk without a healthy peer -------


@pytest.mark.parametrize(("failures", "healthy"), [
    (Failures(hosts=("kvm1",), nodes=("db2",)), None),  # db1's host dies while db2 failed
    (Failures(hosts=("kvm1", "kvm2")), None),  # both DB hosts die at once
    (Failures(hosts=("kvm1",)), {"web2", "lb1"}),  # db2 is up but not healthy (not Synced)
])
def test_a_db_node_is_never_rebuilt_on_a_fresh_disk_without_a_healthy_peer(
        topology: Topology, failures: Failures, healthy: set[str] | None) -> None:
    t = topology.with_(spares=("spare1", "spare2"), hosts={
        **topology.hosts, "spare2": Host("spare2", "qemu+ssh://root@127.0.1.22/system", "127.0.1.22",
                                         "true")})
    p = plan(t, failures, now=NOW, healthy=healthy)
    assert (p.action, p.code) == (Action.REFUSE, Reason.DB_DATA_NEEDS_PERSON), p.reason
    assert p.reason.startswith("DB data needs a person: db1 would be rebuilt on a fresh disk")
    assert p.topology == t and not p.steps


def test_a_db_node_moves_while_its_peer_is_healthy(topology: Topology) -> None:
    p = plan(topology, Failures(hosts=("kvm1",)), now=NOW, healthy={"db2", "web2", "lb1"})
    assert p.action is Action.FAILOVER and ("db1", "kvm1", "spare1") in moves(p)
    # a DB node replaced in place keeps its disk: no peer needed
    p = plan(topology, Failures(nodes=("db1", "db2")), now=NOW, healthy=set())
    assert p.action is Action.REPLACE and set(p.replace) == {"db1", "db2"}


def test_a_plan_records_the_stack_file_it_was_made_from(topology: Topology) -> None:
    p = replace(plan(topology, Failures(hosts=("kvm1",)), now=NOW), source_hash="ab" * 32)
    assert type(p).from_record(p.to_record()).source_hash == "ab" * 32
