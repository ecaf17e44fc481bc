"""The `mac-watchdog` commands in-process: exit codes, one-line errors, JSON shapes.

Commands that deploy use the STAND-IN pulumi (tests/watchdog/standin_pulumi.py), never a real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.stack_file import load_topology, stack_path
from components.topology import Host
from tests.watchdog.conftest import Servers, StandIn
from tests.watchdog.state_fixture import exported
from watchdog.cli import app, main
from watchdog.context import Seams
from watchdog.journal import Journal

runner = CliRunner()


def invoke(project: Path, *args: str, stack: str = "test", input: str | None = None,
           seams: Seams | None = None):
    common = ["--project-dir", str(project), "--state-dir", str(project / "state")]
    if stack:
        common += ["--stack", stack]
    result = runner.invoke(app, [*args, *common], input=input, obj=seams or Seams())
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(("fail", "code", "action", "reason"), [
    (["kvm1"], 0, "failover", "host_failed"),
    (["web2"], 0, "replace", "node_failed"),
    (["spare1"], 0, "none", "idle_host_failed"),
    (["kvm1", "kvm2"], 1, "refuse", "no_spare"),
])
def test_plan_exit_codes_and_json(project: Path, fail: list[str], code: int, action: str,
                                  reason: str) -> None:
    args = ["plan", "--json"] + [x for f in fail for x in ("--fail", f)]
    result = invoke(project, *args)
    assert result.exit_code == code
    out = json.loads(result.stdout)
    assert (out["action"], out["code"]) == (action, reason)
    assert set(out) >= {"action", "code", "reason", "moves", "topology"}
    assert set(out["topology"]) >= {"hosts", "spares", "nodes"}


def test_plan_human_output(project: Path) -> None:
    result = invoke(project, "plan", "--fail", "kvm1")
    assert result.exit_code == 0
    assert "move:   db1: kvm1 -> spare1" in result.stdout


@pytest.mark.parametrize(("args", "stack", "words"), [
    (["plan", "--fail", "kvm9"], "test", "--fail = 'kvm9': neither a host nor a node"),
    (["plan", "--fail", "kvm1"], "nope", "--stack = 'nope': no file"),
    (["plan", "--fail", "kvm1"], "", "--stack is missing"),
    (["failover", "kvm9", "--dry-run"], "test", "HOST = 'kvm9': not a host"),
    (["reclaim", "kvm1"], "test", "HOST = 'kvm1': not in mac:failedHosts"),
])
def test_bad_input_is_one_line_and_exit_2(project: Path, args: list[str], stack: str, words: str) -> None:
    result = invoke(project, *args, stack=stack)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]


def test_broken_stack_file_names_the_key(project: Path) -> None:
    path = stack_path(project, "test")
    path.write_text(path.read_text().replace("failThreshold: 3", "failThreshold: three"))
    result = invoke(project, "plan", "--fail", "kvm1")
    assert result.exit_code == 2
    assert "mac:watchdog.failThreshold = 'three': must be an integer" in result.stderr


def test_validate_still_works(project: Path) -> None:
    result = runner.invoke(app, ["validate", "--project-dir", str(project)])
    assert result.exit_code == 0, result.output
    assert "test: ok" in result.stdout and "dev: ok" in result.stdout


def test_status_table_json_and_exit_codes(project: Path, servers: Servers) -> None:
    topology = load_topology(stack_path(project, "test"))
    servers.serve(topology)
    seams = Seams(transport=servers.transport())
    result = invoke(project, "status", "--json", seams=seams)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["healthy"] and len(out["targets"]) == 9
    servers.down("127.0.2.21")  # web1
    result = invoke(project, "status", seams=seams)
    assert result.exit_code == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith("│ web1 "))
    assert "down" in row and "connection refused" in row


def _serve_but_kvm1(project: Path, servers: Servers) -> Seams:
    """Every node answers except those on kvm1 (db2, the other copy of the data, is healthy)."""
    servers.serve(load_topology(stack_path(project, "test")))
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):
        servers.down(address)
    return Seams(transport=servers.transport())


def test_failover_dry_run_changes_nothing(project: Path, standin: StandIn, servers: Servers) -> None:
    before = stack_path(project, "test").read_text()
    result = invoke(project, "failover", "kvm1", "--dry-run", "--pulumi-root", str(standin.root),
                    seams=_serve_but_kvm1(project, servers))
    assert result.exit_code == 0
    assert "fence kvm1: true" in result.stdout
    assert stack_path(project, "test").read_text() == before
    assert standin.argv() == []


def test_failover_asks_and_can_be_declined(project: Path, standin: StandIn, servers: Servers) -> None:
    result = invoke(project, "failover", "kvm1", "--pulumi-root", str(standin.root), input="n\n",
                    seams=_serve_but_kvm1(project, servers))
    assert result.exit_code == 1
    assert "not confirmed" in result.stderr
    assert standin.argv() == []


def test_failover_without_cli_is_one_clear_error(project: Path, tmp_path: Path,
                                                 servers: Servers) -> None:
    result = invoke(project, "failover", "kvm1", "--yes", "--pulumi-root", str(tmp_path / "none"),
                    seams=_serve_but_kvm1(project, servers))
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "the Pulumi CLI was not found" in errors[0] and "install it" in errors[0]
    assert "FileNotFoundError" not in result.output
    assert not (project / "state" / "journal.jsonl").exists()  # checked before fencing anything


def test_standin_cli_failover_yes(project: Path, standin: StandIn, servers: Servers) -> None:
    """Stand-in, not a real deploy: the whole manual failover through the CLI."""
    standin.set_state(exported())
    path = stack_path(project, "test")
    path.write_text(path.read_text().replace("verifyTimeout: 3", "verifyTimeout: 0.01"))
    seams = _serve_but_kvm1(project, servers)
    result = invoke(project, "failover", "kvm1", "--yes", "--pulumi-root", str(standin.root),
                    seams=seams)
    # db1 and web1 do not answer on the spare here: the pipeline ran, verification failed
    assert result.exit_code == 1
    assert "db1, web1 not healthy within 0.01 s" in result.stderr
    assert [c[0] for c in standin.commands()].count("up") == 1
    assert load_topology(path).failed_hosts == ("kvm1",)


def test_run_once_dry_run_logs_and_changes_nothing(project: Path, servers: Servers, standin: StandIn,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    topology = load_topology(stack_path(project, "test"))
    servers.serve(topology)
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):  # kvm1, db1, web1
        servers.down(address)
    before = stack_path(project, "test").read_text()
    result = invoke(project, "run", "--once", "--dry-run", "--pulumi-root", str(standin.root),
                    seams=Seams(transport=servers.transport()))
    assert result.exit_code == 1  # something is unhealthy
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "dry-run: host kvm1 failed: move db1, web1 to spare1; would: fence kvm1" in logged
    assert stack_path(project, "test").read_text() == before
    assert standin.argv() == []


def test_standin_reclaim(project: Path, servers: Servers, standin: StandIn,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in pulumi, not a real deploy: the record of fenced hosts in the stack's state
    drops the host (the program would refuse it otherwise), then the stack file lists it."""
    from components.record import StackRecord, record_in_state, with_record_in_state

    path = stack_path(project, "test")
    topology = load_topology(path)
    failed = topology.move_nodes(["db1", "web1"], "spare1").with_(spares=(), failed_hosts=("kvm1",))
    from components.stack_file import write_topology
    write_topology(path, failed)
    state = exported()
    state["deployment"] = with_record_in_state(state["deployment"], StackRecord(True, ("kvm1",)))
    standin.set_state(state)
    monkeypatch.setattr("watchdog.reclaim.shutil.which", lambda name: None)
    seams = Seams(transport=servers.transport())
    root = ["--pulumi-root", str(standin.root)]
    result = invoke(project, "reclaim", "kvm1", *root, seams=seams)
    assert result.exit_code == 1 and "not reachable" in result.stderr
    servers.up("127.0.1.1")
    result = invoke(project, "reclaim", "kvm1", *root, seams=seams)
    assert result.exit_code == 1 and "virsh is not installed" in result.stderr and "--force" in result.stderr
    result = invoke(project, "reclaim", "kvm1", "--force", *root, seams=seams)
    assert result.exit_code == 0, result.output
    t = load_topology(path)
    assert (t.spares, t.failed_hosts) == (("kvm1",), ())
    assert record_in_state(standin.state()["deployment"]) == StackRecord(True, ())
    # Journaled like any remediation: planned, its steps, finished; history ignores it.
    journal = Journal(project / "state")
    events = [(e["event"], e.get("step"), e.get("status") or e.get("outcome")) for e in journal.entries()]
    assert events == [("planned", None, None), ("step", "prune_state", "started"),
                      ("step", "prune_state", "done"), ("step", "write_config", "started"),
                      ("step", "write_config", "done"), ("finished", None, "ok")]
    assert journal.entries()[0]["plan"]["code"] == "host_reclaimed" and journal.pending() is None


def test_standin_reclaim_destroys_the_stale_domains_of_a_returned_host(
        project: Path, servers: Servers, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that came back with its old VMs (`fence: none`): they and the stack's pool there
    are removed before it becomes a spare; a domain that will not go away keeps it out."""
    path = stack_path(project, "test")
    from components.stack_file import write_topology
    write_topology(path, load_topology(path).move_nodes(["db1", "web1"], "spare1").with_(
        spares=(), failed_hosts=("kvm1",)))
    standin.set_state(exported())
    defined = ["web1", "db1", "other-vm"]
    destroyed: list[str] = []

    def destroy(host: object, name: str) -> None:
        destroyed.append(name)
        defined.remove(name)

    pools: list[str] = []

    def remove_pool(host: Host) -> bool:
        pools.append(host.name)
        return True

    monkeypatch.setattr("watchdog.reclaim.list_domains", lambda host: list(defined))
    monkeypatch.setattr("watchdog.reclaim.destroy_domain", destroy)
    monkeypatch.setattr("watchdog.reclaim.remove_pool", remove_pool)
    servers.up("127.0.1.1")
    seams = Seams(transport=servers.transport())
    result = invoke(project, "reclaim", "kvm1", "--pulumi-root", str(standin.root), seams=seams)
    assert result.exit_code == 0, result.output
    assert sorted(destroyed) == ["db1", "web1"] and defined == ["other-vm"]
    # Its stale pool too (the program refuses to create one that exists: the vm drill found it).
    assert pools == ["kvm1"]
    assert load_topology(path).spares == ("kvm1",)

    write_topology(path, load_topology(path).with_(spares=(), failed_hosts=("kvm1",)))
    defined[:] = ["web1"]
    monkeypatch.setattr("watchdog.reclaim.destroy_domain", lambda host, name: None)  # stays
    result = invoke(project, "reclaim", "kvm1", "--pulumi-root", str(standin.root), seams=seams)
    assert result.exit_code == 1 and "still has our domains web1" in result.stderr


@pytest.mark.parametrize(("argv", "line"), [
    (["plan", "--stack", "dev"], "error: Missing option '--fail'. (see `mac-watchdog plan --help`)"),
    (["status", "--bogus"], "error: No such option: --bogus (see `mac-watchdog status --help`)"),
])
def test_usage_errors_are_one_line_too(argv: list[str], line: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_failover_refuses_a_fresh_db_node_while_its_peer_is_down(
        project: Path, standin: StandIn, servers: Servers) -> None:
    """Issue 11: db1's host dies while db2 is unhealthy: never rebuild db1 on a fresh disk."""
    seams = _serve_but_kvm1(project, servers)
    servers.mode("127.0.2.12", "503")  # db2 answers, not Synced
    before = stack_path(project, "test").read_text()
    result = invoke(project, "failover", "kvm1", "--yes", "--pulumi-root", str(standin.root),
                    seams=seams)
    assert result.exit_code == 1
    # A refused failover prints its plan (the `reason:` line says why) and exits 1.
    assert "DB data needs a person: db1 would be rebuilt on a fresh disk" in result.stdout
    assert stack_path(project, "test").read_text() == before and standin.argv() == []


def test_status_shows_a_fenced_host_that_answers_again(project: Path, servers: Servers) -> None:
    """Issue 11: after a failover with `fence: none` the old host comes back; `status` must not
    call the moved nodes simply "up" (the answer may come from its old VMs)."""
    path = stack_path(project, "test")
    from components.stack_file import write_topology
    failed = load_topology(path).move_nodes(["db1", "web1"], "spare1").with_(
        spares=(), failed_hosts=("kvm1",))
    write_topology(path, failed)
    servers.serve(failed)
    seams = Seams(transport=servers.transport())
    result = invoke(project, "status", "--json", seams=seams)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["failedHostsAnswering"] == []
    servers.up("127.0.1.1")  # kvm1 answers again
    result = invoke(project, "status", seams=seams)
    assert result.exit_code == 1
    assert "WARNING: kvm1 is in mac:failedHosts but answers again" in result.stdout
