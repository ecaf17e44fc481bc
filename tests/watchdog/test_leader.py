"""Leadership on a real 3-member etcd cluster (loopback, started by PID): the JSON-gateway client,
and the step guard in-process: a fencing token that went stale refuses every step, a new leader
takes in the record and resumes at the next step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.stack_file import load_topology, stack_path
from components.topology import Topology, TopologyError, parse_topology, to_config
from tests.watchdog.etcd_cluster import EtcdCluster, etcd_fixture  # noqa: F401  (the `etcd` fixture)
from watchdog.alert import Alerter
from watchdog.cli import app
from watchdog.coordinate import Turn
from watchdog.detect import Failures
from watchdog.errors import NotLeader
from watchdog.etcd import Etcd, EtcdUnavailable, compare_create, put_op, range_op
from watchdog.journal import DONE, Journal
from watchdog.leader import Keys, Leadership, leadership_lines, leadership_report, stack_prefix
from watchdog.plan import Step, plan


def test_gateway_client_kv_txn_and_leases(etcd: EtcdCluster) -> None:
    client = Etcd(["http://127.0.0.1:1", *etcd.endpoints])  # a dead endpoint first: skipped
    assert client.get("/k") is None
    rev = client.put("/k", {"a": 1})
    kv = client.get("/k")
    assert kv is not None and kv.json() == {"a": 1} and kv.create_revision == rev
    won = client.txn([compare_create("/k", 0)], [put_op("/k", 2)], [range_op("/k")])
    assert not won.succeeded and won.kvs()[0].json() == {"a": 1}
    lease = client.grant(2)
    assert client.keepalive(lease) == 2
    client.put("/p/x", 1, lease)
    client.put("/p/y", 2)
    assert [kv.key for kv in client.prefix("/p/")] == ["/p/x", "/p/y"]
    client.revoke(lease)
    assert client.keepalive(lease) == 0
    assert [kv.key for kv in client.prefix("/p/")] == ["/p/y"]
    client.close()
    with pytest.raises(EtcdUnavailable, match="unreachable or without quorum"):
        Etcd(["http://127.0.0.1:1"]).get("/k")


def lost(*args: object) -> None:
    raise AssertionError(f"no step should be running when leadership goes: {args}")


def leadership(etcd: EtcdCluster, tmp_path: Path, topology: Topology, name: str,
               stack_file: Path | None = None) -> Leadership:
    return Leadership(etcd.endpoints, "test", stack_file or tmp_path / "stack.yaml",
                      Journal(tmp_path / name), lambda: Alerter(None, "test"), name=name, ttl_s=2,
                      renew_s=0.5, on_lost=lost)


@contextlib.contextmanager
def leader_and_elsewhere(etcd: EtcdCluster, tmp_path: Path, project: Path,
                         topology: Topology) -> Iterator[tuple[Leadership, Leadership, Path]]:
    """Watchdog a, leading, and b, in session on another machine: b's own stack file (returned
    third) starts as a copy of the project's."""
    theirs = tmp_path / "elsewhere" / "Pulumi.test.yaml"
    theirs.parent.mkdir()
    theirs.write_text(stack_path(project, "test").read_text())
    a = leadership(etcd, tmp_path, topology, "a")
    assert a.session.wait_for(lambda: a.session.leading() is not None, 10)
    b = leadership(etcd, tmp_path, topology, "b", stack_file=theirs)
    try:
        assert b.session.wait_for(lambda: b.session.valid(), 10)
        yield a, b, theirs
    finally:
        a.close()
        b.close()


def test_stale_token_refuses_every_step_and_the_new_leader_resumes(
        etcd: EtcdCluster, tmp_path: Path, topology: Topology) -> None:
    a = leadership(etcd, tmp_path, topology, "a")
    assert a.session.wait_for(lambda: a.session.leading() is not None, 10)
    b = leadership(etcd, tmp_path, topology, "b")
    try:
        assert b.turn(topology, Failures()).act is False
        assert a.turn(topology, Failures()).act is True
        p = plan(topology, Failures(hosts=("kvm1",)))
        rid = a.journal.begin(p, "test")
        a.before_step(rid, p, Step.FENCE)
        a.journal.step(rid, Step.FENCE, "started")
        a.after_step(rid, p, Step.FENCE, DONE, {"fenced": ["kvm1"]})
        a.journal.step(rid, Step.FENCE, DONE)
        stale = a.session.token
        assert stale is not None

        # a is cut off (its lease thread stops) and the key goes, as when etcd expires the lease;
        # b takes it. a still believes its lease valid for a moment: the transaction says no.
        a.session._stop.set()
        a.session._thread.join()
        client = Etcd(etcd.endpoints)
        client.delete(Keys(stack_prefix("test")).leader)
        assert b.session.wait_for(lambda: b.session.leading() is not None, 10)
        with pytest.raises(NotLeader, match="stale"):
            a._commit(stale, [put_op("/x", 1)], "a step")
        with pytest.raises(NotLeader):
            a.before_step(rid, p, Step.PRUNE_STATE)
        assert client.get("/x") is None

        # A record a leader once abandoned (older, still open) is closed, not resumed.
        client.put(Keys(stack_prefix("test")).remediation("old"),
                   {"id": "old", "plan": p.to_record(), "planned_at": 1.0, "done": [], "outcome": None})
        # b takes in the record: the remediation is open in its journal with the fence done.
        assert b.turn(topology, Failures()).act is True
        old = client.get(Keys(stack_prefix("test")).remediation("old"))
        assert old is not None and old.json()["outcome"] == "superseded"
        pending = b.journal.pending()
        assert pending is not None and pending.id == rid and pending.next_step is Step.PRUNE_STATE
        b.before_step(rid, p, Step.PRUNE_STATE)
        steps = {kv.key.split("/")[-2]: kv.json() for kv in client.prefix(f"/mac/test/steps/{rid}/")}
        assert steps["fence"]["holder"] == "a" and steps["fence"]["status"] == DONE
        assert steps["prune_state"]["holder"] == "b" and steps["prune_state"]["token"] > stale
        report = leadership_report(client, "test")
        assert report["leader"]["name"] == "b"
        assert report["openRemediation"]["done"] == ["fence"]
        assert {v["name"] for v in report["watchdogs"]} == {"a", "b"}
        assert leadership_lines(report)[0].startswith("leader: b since ")
        b.after_step(rid, p, Step.PRUNE_STATE, DONE, {})
        client.close()
    finally:
        a.close()
        b.close()


def test_leaving_hands_over_at_once(etcd: EtcdCluster, tmp_path: Path, topology: Topology) -> None:
    a = leadership(etcd, tmp_path, topology, "a")
    assert a.session.wait_for(lambda: a.session.leading() is not None, 10)
    b = leadership(etcd, tmp_path, topology, "b")
    try:
        started = time.monotonic()
        a.close()  # revokes the lease: no waiting for the TTL
        assert b.session.wait_for(lambda: b.session.leading() is not None, 10)
        assert time.monotonic() - started < 1.5
    finally:
        b.close()


def test_lease_settings_are_checked(topology: Topology) -> None:
    raw = to_config(topology)
    ok = parse_topology({**raw, "watchdog": {"etcd": "http://127.0.0.1:2379", "leaseTtl": 4,
                                             "leaseRenew": 1}}).watchdog
    assert (ok.etcd, ok.lease_ttl_s, ok.lease_renew_s) == ("http://127.0.0.1:2379", 4, 1.0)
    assert (topology.watchdog.lease_ttl_s, topology.watchdog.lease_renew_s) == (5, 1.0)
    with pytest.raises(TopologyError) as err:
        parse_topology({**raw, "watchdog": {"leaseTtl": 1, "leaseRenew": 2}})
    assert any("leaseTtl" in str(p) and "2..60" in str(p) for p in err.value.problems)
    assert any("leaseRenew" in str(p) and "a third" in str(p) for p in err.value.problems)
    two = "http://10.0.0.31:2379, https://10.0.0.32:2379"
    assert parse_topology({**raw, "watchdog": {"etcd": two}}).watchdog.etcd == two
    with pytest.raises(TopologyError) as err:
        parse_topology({**raw, "watchdog": {"etcd": "http://10.0.0.31:2379,10.0.0.32:2379"}})
    assert [p.path for p in err.value.problems] == ["mac:watchdog.etcd"]
    assert "'10.0.0.32:2379' must be an http:// or https:// URL" in str(err.value.problems[0])


def test_bad_etcd_url_is_a_usage_error(project: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--stack", "test", "--project-dir", str(project),
                                      "--etcd", "127.0.0.1:2379"])
    assert result.exit_code == 2
    assert "--etcd = '127.0.0.1:2379': not an http:// or https:// URL" in result.output


def test_every_watchdog_stack_file_follows_the_written_topology(
        etcd: EtcdCluster, tmp_path: Path, project: Path, topology: Topology) -> None:
    """Watchdogs on other machines have their own stack files: the topology a remediation writes
    goes through etcd (recorded before the leader writes its file) into each of them."""
    with leader_and_elsewhere(etcd, tmp_path, project, topology) as (a, b, theirs):
        assert b.turn(topology, Failures()) == Turn(False)  # nothing written yet
        p = plan(topology, Failures(hosts=("kvm1",)))
        a.before_step("r1", p, Step.WRITE_CONFIG)
        # Pending until the leader's own write succeeded: nothing reaches the others yet.
        assert b.turn(topology, Failures(hosts=("kvm1",))) == Turn(False)
        assert load_topology(theirs).failed_hosts == ()
        a.after_step("r1", p, Step.WRITE_CONFIG, DONE, {})
        turn = b.turn(topology, Failures(hosts=("kvm1",)))
        assert turn.act is False and turn.topology == p.topology
        assert load_topology(theirs).failed_hosts == ("kvm1",)
        assert "secure: v1:c2VjcmV0LW5vdC1yZWFsbHk=" in theirs.read_text()  # secrets kept
        assert b.turn(p.topology, Failures()) == Turn(False)  # applied once


def test_a_refused_write_never_reaches_another_watchdogs_stack_file(
        etcd: EtcdCluster, tmp_path: Path, project: Path, topology: Topology) -> None:
    """The leader's compare-and-swap write refused (a person edited the file): the topology it
    meant to write stays out of every other stack file, so nobody's edit is overwritten."""
    before = stack_path(project, "test").read_text()
    with leader_and_elsewhere(etcd, tmp_path, project, topology) as (a, b, theirs):
        p = plan(topology, Failures(hosts=("kvm1",)))
        a.before_step("r1", p, Step.WRITE_CONFIG)
        a.after_step("r1", p, Step.WRITE_CONFIG, "failed", {"error": "the stack file changed"})
        assert b.turn(topology, Failures(hosts=("kvm1",))) == Turn(False)
        assert theirs.read_text() == before


def test_manual_failover_refuses_while_a_watchdog_leads(
        etcd: EtcdCluster, tmp_path: Path, project: Path, topology: Topology) -> None:
    a = leadership(etcd, tmp_path, topology, "a")
    try:
        assert a.session.wait_for(lambda: a.session.leading() is not None, 10)
        result = CliRunner().invoke(app, ["failover", "kvm1", "--yes", "--stack", "test",
                                          "--project-dir", str(project), "--etcd", etcd.urls])
        assert result.exit_code == 1
        assert "refused: watchdog a leads stack test on etcd; let it act, or stop it first" \
            in result.output
        assert load_topology(stack_path(project, "test")) == topology  # nothing changed
    finally:
        a.close()
