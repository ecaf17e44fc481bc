"""The stack's record (components/record.py) and what the program does with it, under mocks:
a fresh DB node founds the cluster only on the stack's first deploy, and an old stack file never
puts nodes back on a host that was fenced."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ruamel.yaml import YAML

from components import roles
from components.record import (
    RECORD_OUTPUT,
    StackRecord,
    fenced,
    next_record,
    parse_record,
    placement_problems,
    reclaimed,
    record_in_state,
    record_output,
    with_record_in_state,
)
from components.roles import mysql
from components.stack_file import load_topology, stack_path
from components.topology import Role
from tests.unit.harness import PROJECT_DIR, evaluate, stack_config

COMMAND = "command:remote:Command"
CLOUD_INIT = "libvirt:index/cloudInitDisk:CloudInitDisk"
PROVIDER = "pulumi:providers:libvirt"


def _founded(fenced: list[str] | None = None) -> dict[str, Any]:
    return {RECORD_OUTPUT: {"founded": True, "fencedHosts": fenced or []}}


def _after_failover(host: str = "kvm1", spare: str = "spare1") -> dict[str, Any]:
    """The dev stack file as the watchdog writes it after `host` died: its nodes on `spare`."""
    config = copy.deepcopy(stack_config("dev"))
    for node in config["nodes"].values():
        if node["host"] == host:
            node["host"] = spare
    config["spares"] = []
    config["failedHosts"] = [host]
    return config


# --- the record itself (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "record"), [
    (None, StackRecord()),
    ({}, StackRecord()),
    ("garbage", StackRecord()),
    ({"founded": True}, StackRecord(founded=True)),
    ({"founded": "yes", "fencedHosts": ["b", "a", "a"]}, StackRecord(False, ("a", "b"))),
    ({"fencedHosts": "kvm1"}, StackRecord()),
])
def test_parse_record(value: Any, record: StackRecord) -> None:
    assert parse_record(value) == record
    assert parse_record(record_output(record)) == record


def test_next_record_forgets_nothing_and_records_failed_hosts() -> None:
    t = load_topology(stack_path(PROJECT_DIR, "dev")).with_(failed_hosts=("kvm3",))
    previous = StackRecord(founded=True, fenced_hosts=("kvm1",))
    assert next_record(previous, t, founded_now=False) == StackRecord(True, ("kvm1", "kvm3"))
    assert next_record(StackRecord(), t, founded_now=True).founded is True
    assert next_record(StackRecord(), t, founded_now=False).founded is False


def test_placement_problems_name_the_host_and_the_way_back() -> None:
    t = load_topology(stack_path(PROJECT_DIR, "dev"))
    [problem] = placement_problems(t, StackRecord(True, ("kvm1",)))
    assert problem.value == "kvm1" and "db1, web1" in problem.message
    assert "mac-watchdog reclaim kvm1" in problem.message
    [spare] = placement_problems(t, StackRecord(True, ("spare1",)))
    assert "spare" in spare.message
    assert placement_problems(t, StackRecord(True, ("gone-host",))) == []
    moved = t.with_(failed_hosts=("kvm1",), spares=()).move_nodes(["db1", "web1"], "spare1")
    assert placement_problems(moved, StackRecord(True, ("kvm1",))) == []


# --- the program: founding only on the first deploy --------------------------------------------


def test_only_the_stacks_first_deploy_may_found_the_db_cluster() -> None:
    first = evaluate("dev")
    later = evaluate("dev", previous_outputs=_founded())
    t = load_topology(stack_path(PROJECT_DIR, "dev"))
    db1, db2 = t.nodes_of(Role.MYSQL)
    for e, flagged in ((first, True), (later, False)):
        commands = {r.name: r.inputs["create"] for r in e.of_type(COMMAND)}
        for db in (db1, db2):
            create = commands[f"galera-start-{db.name}"]
            assert create.startswith(mysql.GALERA_START)
            assert (mysql.FIRST_DEPLOY_FLAG in create) is flagged, (create, flagged)
        assert not any(mysql.FIRST_DEPLOY_FLAG in c for n, c in commands.items()
                       if not n.startswith("galera-start-"))
        # the founding step done: this deploy records it, and a later one keeps it
        assert e.outputs[RECORD_OUTPUT] == {"founded": True, "fencedHosts": []}
    # The flag never reaches a VM's own files (a boot never founds), so nothing is rebuilt.
    for node in t.nodes:
        text = first.one(CLOUD_INIT, f"{node}-cloud-init").plain("userData")
        assert text == later.one(CLOUD_INIT, f"{node}-cloud-init").plain("userData")
        files = {f["path"]: f["content"] for f in YAML(typ="safe").load(text)["write_files"]}
        assert mysql.FIRST_DEPLOY_FLAG not in files.get(mysql.GALERA_START, "")


def test_a_stack_without_post_boot_steps_records_no_founding() -> None:
    e = evaluate("ci")
    assert not e.of_type(COMMAND)
    assert e.outputs[RECORD_OUTPUT]["founded"] is False


def test_post_boot_steps_offer_the_first_deploy_command_only_for_galera() -> None:
    t = load_topology(stack_path(PROJECT_DIR, "dev"))
    steps = roles.post_boot_steps(t)
    flagged = {s.name for s in steps if s.first_deploy_command}
    assert flagged == {f"galera-start-{n.name}" for n in t.nodes_of(Role.MYSQL)}
    assert [s.name for s in steps if s.founds_cluster] == [f"galera-start-{t.nodes_of(Role.MYSQL)[0].name}"]


# --- the program: fenced hosts stay fenced -------------------------------------------------------


def test_an_old_stack_file_cannot_put_nodes_back_on_a_fenced_host() -> None:
    """Git drift: the pre-failover stack file deployed after the failover recorded kvm1."""
    with pytest.raises(Exception, match=r"refusing to deploy: .*kvm1.*was fenced.*db1, web1"):
        evaluate("dev", previous_outputs=_founded(fenced=["kvm1"]))


def test_a_fenced_host_listed_as_a_spare_again_is_refused_until_reclaimed() -> None:
    config = _after_failover()
    config["failedHosts"] = []
    config["spares"] = ["kvm1"]
    with pytest.raises(Exception, match=r"kvm1.*lists it as a spare.*reclaim kvm1"):
        evaluate("dev", config=config, previous_outputs=_founded(fenced=["kvm1"]))
    # reclaimed: the record no longer holds it
    e = evaluate("dev", config=config, previous_outputs=_founded(fenced=[]))
    assert e.one(PROVIDER, "kvm1").plain("uri") == config["hosts"]["kvm1"]["uri"]


def test_the_failover_file_deploys_and_keeps_the_host_recorded() -> None:
    e = evaluate("dev", config=_after_failover(), previous_outputs=_founded(fenced=["kvm1"]))
    assert e.outputs[RECORD_OUTPUT] == {"founded": True, "fencedHosts": ["kvm1"]}
    assert {r.name for r in e.of_type(PROVIDER)} == {"kvm2", "kvm3", "spare1"}
    # recorded by the failover deploy itself, before any record existed
    e = evaluate("dev", config=_after_failover(), previous_outputs=_founded())
    assert e.outputs[RECORD_OUTPUT]["fencedHosts"] == ["kvm1"]


# --- the record inside an exported state (what the watchdog edits) -----------------------------


def test_the_record_round_trips_through_an_exported_state() -> None:
    deployment = {"resources": [
        {"urn": "urn:pulumi:dev::mac::pulumi:pulumi:Stack::mac-dev", "type": "pulumi:pulumi:Stack",
         "outputs": {"lb_url": "http://x/"}},
        {"urn": "urn:pulumi:dev::mac::random:index/randomPassword:RandomPassword::p",
         "type": "random:index/randomPassword:RandomPassword", "outputs": {"result": "s"}},
    ]}
    assert record_in_state(deployment) == StackRecord()
    after = with_record_in_state(deployment, fenced(StackRecord(True), ["kvm1"]))
    assert record_in_state(after) == StackRecord(True, ("kvm1",))
    assert after["resources"][0]["outputs"]["lb_url"] == "http://x/"
    assert "macRecord" not in deployment["resources"][0]["outputs"]  # the input is left alone
    back = with_record_in_state(after, reclaimed(record_in_state(after), "kvm1"))
    assert record_in_state(back) == StackRecord(True, ())
    assert record_in_state(with_record_in_state({}, StackRecord(True))) == StackRecord()
