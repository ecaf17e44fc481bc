"""Issue 11 against the STAND-IN `pulumi` (records argv, deploys nothing): the stack file is
written by compare-and-swap, a reverted file is never deployed, the fence is recorded in the
stack's state, one lock per stack, a hung `up` is cancelled, an orphan is ended, git commits."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from components.record import StackRecord, record_in_state
from components.stack_file import file_hash, load_topology, stack_path
from components.topology import Host, Topology
from tests.watchdog.conftest import Servers, StandIn
from tests.watchdog.seams import Recorder
from tests.watchdog.state_fixture import exported
from tests.watchdog.test_standin_cli import S, make_ctx
from watchdog.children import Children
from watchdog.context import Context
from watchdog.coordinate import Solo
from watchdog.detect import Failures
from watchdog.errors import DeployTimedOut, LockHeld, LockUnavailable, StackFileMoved
from watchdog.fence import FenceResult
from watchdog.git import GitRecorder
from watchdog.journal import Journal
from watchdog.lock import RemediationLock, stack_lock_path
from watchdog.plan import Plan, Step, plan


class Guard(Solo):
    """A step guard that records what it is asked and told (watchdog.leader's seam)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def before_step(self, rid: str, p: Plan, step: Step) -> None:
        self.calls.append(("before", step.value))

    def after_step(self, rid: str, p: Plan, step: Step, status: str, detail: object) -> None:
        self.calls.append((status, step.value))

    def finished(self, rid: str, p: Plan, outcome: str) -> None:
        self.calls.append(("finished", outcome))


def failover(topology: Topology, project: Path) -> Plan:
    return replace(plan(topology, Failures(hosts=("kvm1",))),
                   source_hash=file_hash(stack_path(project, S)))


def alerts(ctx: Context) -> list[tuple[str, str]]:
    assert isinstance(ctx.events, Recorder)
    return [(a["event"], a["reason"]) for a in ctx.events.alerts()]


def test_standin_a_persons_edit_during_the_fence_is_never_overwritten(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """The plan was made from the file before the edit: the write refuses, nothing is deployed,
    the remediation closes (superseded) and the loop plans again from the edited file."""
    servers.serve(topology)
    standin.set_state(exported())
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    path = stack_path(project, S)
    p = failover(topology, project)
    edited = path.read_text().replace("verifyTimeout: 3", "verifyTimeout: 4  # a person's edit")

    def person_edits(host: Host, timeout_s: float) -> FenceResult:
        path.write_text(edited)  # saved while the fence runs
        return ctx_fences(host, timeout_s)

    ctx_fences = ctx.fencer
    ctx.fencer = person_edits
    ctx.coordinator = guard = Guard()
    with pytest.raises(StackFileMoved, match="changed since the plan was made"):
        ctx.remediator(topology).execute(p, "test")
    # Beside other watchdogs the shared record is closed too: no successor resumes the plan.
    assert guard.calls[-2:] == [("before", "write_config"), ("finished", "superseded")]
    assert path.read_text() == edited
    assert not [c for c in standin.commands() if c[:1] == ["up"]]
    assert Journal(ctx.state_dir).pending() is None  # closed: the loop plans afresh
    assert ("superseded", "stack_file_changed") in alerts(ctx)


def test_standin_the_fence_is_recorded_and_a_reverted_stack_file_is_never_deployed(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """`up` fails after the file was written (or the watchdog is killed there), then a `git
    checkout` of the old file, then resume. The fence was recorded in the stack's state before
    any `up`: the program refuses the old file too (components.record)."""
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(up_fail=5)
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    path = stack_path(project, S)
    before = path.read_text()
    with pytest.raises(Exception, match="no route to host"):
        ctx.remediator(topology).execute(failover(topology, project), "test")
    assert load_topology(path).failed_hosts == ("kvm1",)
    assert record_in_state(standin.state()["deployment"]) == StackRecord(False, ("kvm1",))
    path.write_text(before)  # git checkout of the old file
    ups = len([c for c in standin.commands() if c[:1] == ["up"]])
    with pytest.raises(StackFileMoved, match="no longer holds this remediation's change"):
        ctx.remediator(topology).resume()
    assert len([c for c in standin.commands() if c[:1] == ["up"]]) == ups  # no `up` ran
    assert Journal(ctx.state_dir).pending() is None
    assert ("superseded", "stack_file_reverted") in alerts(ctx)


def test_one_lock_per_stack_whatever_the_state_dir(project: Path, tmp_path: Path) -> None:
    path = stack_path(project, S)
    assert stack_lock_path(path) == path.parent / ".Pulumi.test.yaml.lock"
    with RemediationLock.for_stack(path), pytest.raises(LockHeld, match="of this stack"), \
            RemediationLock.for_stack(path):
        pass
    # two watchdogs with different state dirs: the second cannot start a remediation
    ctx_a = Context(project_dir=project, stack=S, state_dir=tmp_path / "a")
    ctx_b = Context(project_dir=project, stack=S, state_dir=tmp_path / "b")
    topology = ctx_a.topology()
    p = plan(topology, Failures(hosts=("spare1",)))
    with RemediationLock.for_stack(ctx_a.stack_file), pytest.raises(LockHeld):
        ctx_b.remediator(topology).execute(p, "test")


def test_a_stacks_directory_without_room_for_the_lock_is_one_clear_refusal() -> None:
    """/proc refuses new files even to root: a read-only stacks directory, as far as we can tell."""
    with pytest.raises(LockUnavailable, match="stacks directory must be writable"), \
            RemediationLock.for_stack(Path("/proc/self/stacks/Pulumi.test.yaml")):
        pass


def test_standin_a_hung_up_is_cancelled_alerted_and_retried(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(up_sleep=30)
    path = stack_path(project, S)
    path.write_text(path.read_text().replace("verifyTimeout: 3", "verifyTimeout: 3\n    upTimeout: 0.5"))
    topology = load_topology(path)
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    ctx.coordinator = guard = Guard()
    started = time.monotonic()
    with pytest.raises(DeployTimedOut, match=r"longer than 0\.5 s \(mac:watchdog.upTimeout\)"):
        ctx.remediator(topology).execute(plan(topology, Failures(nodes=("web2",))), "test")
    # Each attempt is a hold of its own: a leader deposed during the backoff is refused at the retry.
    assert [c for c in guard.calls if c[1] == "up"] == [("before", "up"), ("failed", "up"),
                                                         ("before", "up"), ("failed", "up")]
    assert time.monotonic() - started < 20
    ups = [c for c in standin.commands() if c[:1] == ["up"]]
    assert len(ups) == 2  # up_attempts=2: cancelled, retried after the backoff, cancelled
    assert ("up_failed", "up_timed_out") in alerts(ctx)
    assert Children(ctx.state_dir).recorded() is None  # no child left running


def test_standin_resume_ends_the_orphan_a_killed_watchdog_left(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """A watchdog SIGKILLed during `up` leaves the CLI running: the resumed one ends it first."""
    servers.serve(topology)
    standin.set_state(exported())
    standin.behave(up_fail=2)
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    with pytest.raises(Exception, match="no route to host"):
        ctx.remediator(topology).execute(plan(topology, Failures(nodes=("web2",))), "test")
    orphan = Children(ctx.state_dir).popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], "pulumi up")  # the dead one's child
    outcome = ctx.remediator(topology).resume()
    assert outcome is not None and outcome.ran == (Step.UP, Step.VERIFY)
    orphan.wait(5)  # ended before `up` ran again (it would sleep a minute)
    assert ("orphan_ended", "orphan_ended") in alerts(ctx)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout


def _repo(project: Path, remote: Path) -> None:
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    _git(project, "init", "-q")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    _git(project, "remote", "add", "origin", str(remote))
    _git(project, "push", "-q", "-u", "origin", "HEAD")


def test_standin_git_commit_makes_the_failover_durable(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    servers.serve(topology)
    standin.set_state(exported())
    remote = tmp_path / "remote.git"
    _repo(project, remote)
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    ctx.git = GitRecorder(stack_path(project, S), push=True)
    ctx.remediator(topology).execute(failover(topology, project), "test")
    message = _git(project, "log", "-1", "--format=%B")
    assert message.startswith("mac-watchdog: host kvm1 failed: move db1, web1 to spare1")
    assert "move db1: kvm1 -> spare1" in message and "mac:failedHosts: ['kvm1']" in message
    assert _git(project, "status", "--porcelain", "stacks/Pulumi.test.yaml") == ""
    assert _git(remote, "log", "-1", "--format=%s").startswith("mac-watchdog: host kvm1 failed")
    assert not [a for a in alerts(ctx) if a[0] == "git_failed"]


def test_standin_git_failing_never_stops_a_remediation(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    servers.serve(topology)
    standin.set_state(exported())
    _repo(project, tmp_path / "remote.git")
    _git(project, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    ctx, _ = make_ctx(project, standin, servers, tmp_path)
    ctx.git = GitRecorder(stack_path(project, S), push=True)
    outcome = ctx.remediator(topology).execute(failover(topology, project), "test")
    assert outcome.ran[-1] is Step.VERIFY
    assert ("git_failed", "git_failed") in alerts(ctx)
    assert _git(project, "log", "-1", "--format=%s").startswith("mac-watchdog: host kvm1 failed")


def test_standin_a_failover_that_waited_at_its_prompt_undoes_nothing(
        project: Path, topology: Topology, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    """Another failover finished while this one waited: it fences, prunes and writes nothing."""
    from components.stack_file import write_topology

    servers.serve(topology)
    standin.set_state(exported())
    ctx, fences = make_ctx(project, standin, servers, tmp_path)
    waiting = failover(topology, project)  # planned, then the prompt waits
    other = topology.move_nodes(["db2", "web2"], "spare1").with_(spares=(), failed_hosts=("kvm2",))
    write_topology(stack_path(project, S), other)  # the other failover's result
    with pytest.raises(StackFileMoved, match="nothing was done"):
        ctx.remediator(topology).execute(waiting, "manual")
    assert fences.calls == [] and standin.commands() == [["version"], ["stack", "select", "--stack", S]]
    assert load_topology(stack_path(project, S)) == other
    assert Journal(ctx.state_dir).entries() == []
