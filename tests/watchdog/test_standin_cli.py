"""The remediation pipeline against a STAND-IN `pulumi` executable (tests/watchdog/standin_pulumi.py).

Nothing is deployed: the stand-in records the argv the Automation API sends and answers like the
CLI would. These tests pin the exact command sequence, the pruned state, the stack file written,
and the behaviour on a failing `up`, a locked stack and a missing CLI.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from components.stack_file import load_topology, stack_path
from components.topology import Host, Topology
from tests.watchdog.conftest import Servers, StandIn
from tests.watchdog.seams import Recorder
from tests.watchdog.state_fixture import exported
from watchdog.context import Context
from watchdog.deploy import Deployer
from watchdog.detect import Failures
from watchdog.errors import DeployFailed, PulumiNotFound, StackLocked
from watchdog.fence import FenceResult
from watchdog.journal import Journal
from watchdog.plan import Step, plan
from watchdog.state import urn_name

S = "test"


def up_argv(*extra: str) -> list[str]:
    return ["up", "--yes", "--skip-preview", *extra, "--color", "never", "--exec-kind", "auto.local",
            "--stack", S]


AFTER_UP = [
    ["stack", "output", "--json", "--stack", S],
    ["stack", "output", "--json", "--show-secrets", "--stack", S],
    ["stack", "history", "--json", "--show-secrets", "--page-size", "1", "--page", "1", "--stack", S],
]
SELECT = [["version"], ["stack", "select", "--stack", S]]
EXPORT = ["stack", "export", "--show-secrets", "--stack", S]
IMPORT = ["stack", "import", "--file", "FILE", "--stack", S]


class Fences:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: Host, timeout_s: float) -> FenceResult:
        self.calls.append(host.name)
        return FenceResult(host.name, skipped=False, returncode=0)


def make_ctx(project: Path, standin: StandIn, servers: Servers, tmp_path: Path,
             **deployer: object) -> tuple[Context, Fences]:
    fences = Fences()
    backend = Deployer(project, S, pulumi_root=standin.root, lock_wait_s=0.0,
                       sleep=lambda s: None, **deployer)  # type: ignore[arg-type]
    ctx = Context(project_dir=project, stack=S, state_dir=tmp_path / "state",
                  transport=servers.transport(), fencer=fences, backend=backend,
                  up_attempts=2, backoff_s=0.0, sleep=lambda s: None, events=Recorder())
    return ctx, fences


def message(p_reason: str) -> list[str]:
    return ["--message", f"mac-watchdog: {p_reason}"[:200]]


def test_standin_cli_failover_exact_argv_pruned_state_and_stack_file(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Stand-in, not a real deploy: a host failover sends exactly this to the CLI."""
    servers.serve(topology)
    standin.set_state(exported())
    ctx, fences = make_ctx(project, standin, servers, tmp_path)
    p = plan(topology, Failures(hosts=("kvm1",)))
    caplog.set_level(logging.INFO)
    outcome = ctx.remediator(topology).execute(p, "test")

    assert outcome.ran == (Step.FENCE, Step.PRUNE_STATE, Step.WRITE_CONFIG, Step.UP, Step.VERIFY)
    assert fences.calls == ["kvm1"]
    assert standin.commands() == [*SELECT, EXPORT, IMPORT, up_argv(*message(p.reason)), *AFTER_UP]
    # the pruned state went back through `stack import`
    resources = standin.state()["deployment"]["resources"]
    left = {urn_name(r["urn"]) for r in resources}
    providers = {urn_name(r["urn"]) for r in resources if r["type"] == "pulumi:providers:libvirt"}
    assert providers == {"kvm2", "kvm3", "spare1"}
    assert not {"kvm1-pool", "db1-domain", "web1-domain", "db1-bootstrap"} & left
    assert {"db2-domain", "lb1-garbd"} <= left
    # the stack file: nodes moved, spare used, host recorded; secrets and comments kept
    written = load_topology(stack_path(project, S))
    assert written.nodes["db1"].host == written.nodes["web1"].host == "spare1"
    assert (written.spares, written.failed_hosts) == ((), ("kvm1",))
    text = stack_path(project, S).read_text()
    assert "secure: v1:c2VjcmV0LW5vdC1yZWFsbHk=" in text and "# test stack" in text
    # the up output was streamed to the log
    assert any("pulumi: Updating (standin):" in r.getMessage() for r in caplog.records)
    # journal: before and after each step, then finished
    events = [(e.get("step"), e.get("status") or e.get("outcome") or e["event"])
              for e in Journal(tmp_path / "state").entries()]
    assert events == [(None, "planned"), *[(s.value, st) for s in outcome.ran for st in ("started", "done")],
                      (None, "ok")]


def test_standin_cli_failing_up_keeps_the_change_and_resumes_at_up(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy: `up` fails twice; the written stack file stays, a resume runs
    only `up` (no second fence, export or import)."""
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(up_fail=2)
    ctx, fences = make_ctx(project, standin, servers, tmp_path)
    p = plan(topology, Failures(hosts=("kvm1",)))
    with pytest.raises(DeployFailed, match="no route to host"):
        ctx.remediator(topology).execute(p, "test")
    assert load_topology(stack_path(project, S)).failed_hosts == ("kvm1",)  # change kept
    pending = Journal(tmp_path / "state").pending()
    assert pending is not None and pending.next_step is Step.UP and pending.failures == 2
    assert [a[0] for a in standin.commands()].count("up") == 2
    assert isinstance(ctx.events, Recorder)
    assert [a["event"] for a in ctx.events.alerts()] == ["up_failed", "remediation_failed"]

    before = len(standin.commands())
    outcome = ctx.remediator(topology).resume()
    assert outcome is not None and outcome.resumed and outcome.ran == (Step.UP, Step.VERIFY)
    assert standin.commands()[before:] == [up_argv(*message(p.reason)), *AFTER_UP]
    assert fences.calls == ["kvm1"]
    assert Journal(tmp_path / "state").pending() is None


def test_standin_cli_locked_stack_waits_and_retries(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy: "the stack is currently locked by" -> ConcurrentUpdateError ->
    wait and retry the same `up`."""
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(locked=2)
    ctx, _ = make_ctx(project, standin, servers, tmp_path, lock_retries=3)
    p = plan(topology, Failures(nodes=("web2",)))
    outcome = ctx.remediator(topology).execute(p, "test")
    assert outcome.ran == (Step.UP, Step.VERIFY)
    domain = next(r["urn"] for r in exported()["deployment"]["resources"]
                  if urn_name(r["urn"]) == "web2-domain")
    up = up_argv(*message(p.reason), "--replace", domain)
    assert standin.commands() == [*SELECT, EXPORT, up, up, up, *AFTER_UP]


def test_standin_cli_lock_that_never_clears_is_one_clear_error(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy."""
    standin.set_state(exported())
    standin.behave(locked=10)
    deployer = Deployer(project, S, pulumi_root=standin.root, lock_retries=2, lock_wait_s=0.0,
                        sleep=lambda s: None)
    with pytest.raises(StackLocked, match="stayed locked by another update through 3 tries"):
        deployer.up()


def test_standin_cli_on_path_and_missing_stack(project: Path, standin: StandIn,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in first on PATH (no --pulumi-root); a missing stack names the fix."""
    monkeypatch.setenv("PATH", f"{standin.root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    standin.behave(missing_stack=True)
    with pytest.raises(DeployFailed, match="pulumi stack init test"):
        Deployer(project, S).export_state()
    assert standin.commands() == SELECT


def test_standin_cli_never_gets_the_bmc_password(project: Path, standin: StandIn,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """IPMI_PASSWORD is in the watchdog's environment for fence_ipmilan only: no pulumi child
    (nor the program it runs) inherits it."""
    monkeypatch.setenv("IPMI_PASSWORD", "not-for-pulumi")
    Deployer(project, S, pulumi_root=standin.root).export_state()
    calls = [json.loads(line) for line in (standin.root / "env.jsonl").read_text().splitlines()]
    assert calls and all("IPMI_PASSWORD" not in names for names in calls)
    assert len(calls) >= 3  # version, stack select, stack export


def test_missing_cli_is_one_clear_error(project: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PulumiNotFound, match=r"not found .*/nowhere/bin/pulumi.*install it"):
        Deployer(project, S, pulumi_root=tmp_path / "nowhere").up()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PulumiNotFound, match="`pulumi` on PATH"):
        Deployer(project, S).up()


def test_standin_cli_failed_spare_prunes_and_writes_without_up(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Stand-in, not a real deploy: a dead spare leaves the state and the spares, no `up`."""
    standin.set_state(exported())
    ctx, fences = make_ctx(project, standin, servers, tmp_path)
    p = plan(topology, Failures(hosts=("spare1",)))
    ctx.remediator(topology).execute(p, "test")
    assert standin.commands() == [*SELECT, EXPORT, IMPORT]
    assert fences.calls == []
    assert load_topology(stack_path(project, S)).failed_hosts == ("spare1",)


def test_standin_cli_failed_import_leaves_no_plaintext_state_behind(
        project: Path, standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in, not a real deploy: the exported state holds secrets in plaintext; its temp file
    is private and gone even when `stack import` fails."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    standin.behave(import_fail=1)
    deployer = Deployer(project, S, pulumi_root=standin.root)
    with pytest.raises(DeployFailed, match="could not deserialize"):
        deployer.import_state(exported())
    assert list(scratch.iterdir()) == []
    deployer.import_state(exported())
    assert standin.state() == exported()
    assert list(scratch.iterdir()) == []
