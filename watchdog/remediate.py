"""The remediation pipeline: fence -> prune state -> write stack file -> up -> verify.

The only code that changes anything. One remediation at a time (lock file); every step is
journaled before and after it runs, so a restart resumes at the next step and never repeats a
finished one. A failing `up` keeps the written change and is retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from components.record import (
    StackRecord,
    fenced,
    reclaimed,
    record_in_state,
    with_record_in_state,
)
from components.stack_file import StackFileChanged, file_hash, load_topology, write_topology
from components.topology import Host, Topology, TopologyError
from watchdog.alert import Alerter
from watchdog.children import Children
from watchdog.errors import (
    DeployFailed,
    DeployTimedOut,
    JournalError,
    NotLeader,
    RemediationRefused,
    StackFileMoved,
    StackFileUnwritable,
    StackLocked,
    StateError,
    VerifyFailed,
    WatchdogError,
)
from watchdog.fence import DEFAULT_FENCE_TIMEOUT_S, FenceResult, fence
from watchdog.journal import DONE, FAILED, STARTED, Journal
from watchdog.lock import RemediationLock
from watchdog.plan import Action, Plan, Step, topology_json
from watchdog.reasons import Reason
from watchdog.state import domain_urns, prune_hosts

log = logging.getLogger(__name__)

DEFAULT_UP_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 15.0
MAX_BACKOFF_S = 600.0

# (topology, node names, timeout) -> the nodes still unhealthy when the timeout ran out
Verifier = Callable[[Topology, Sequence[str], float], list[str]]
Fencer = Callable[[Host, float], FenceResult]


class StateBackend(Protocol):
    """What the pipeline needs from Pulumi (watchdog.deploy.Deployer, or a fake in tests)."""

    def check(self) -> None:
        """Raise (PulumiNotFound, DeployFailed, ...) unless the backend can be used right now."""

    def export_state(self) -> dict[str, Any]: ...

    def import_state(self, state: Mapping[str, Any]) -> None: ...

    def up(self, replace: Sequence[str] = (), message: str | None = None,
           timeout_s: float | None = None) -> str: ...


class StepGuard(Protocol):
    """Asked before each step and told after it: where several watchdogs share a stack, only the
    one that proves it leads may run a step (watchdog.leader). `before_step` raises NotLeader
    (nothing journaled, nothing run); `after_step(DONE)` and `finished("ok")` raise NotLeader when
    the fact could not be recorded under leadership; for failures they are best effort."""

    def before_step(self, rid: str, p: Plan, step: Step) -> None: ...

    def after_step(self, rid: str, p: Plan, step: Step, status: str,
                   detail: Mapping[str, Any]) -> None: ...

    def finished(self, rid: str, p: Plan, outcome: str) -> None: ...


class NoGuard:
    """A watchdog alone: every step may run."""

    def before_step(self, rid: str, p: Plan, step: Step) -> None:
        pass

    def after_step(self, rid: str, p: Plan, step: Step, status: str,
                   detail: Mapping[str, Any]) -> None:
        pass

    def finished(self, rid: str, p: Plan, outcome: str) -> None:
        pass


NO_GUARD = NoGuard()


def backoff_delay(failures: int, base_s: float = DEFAULT_BACKOFF_S, cap_s: float = MAX_BACKOFF_S) -> float:
    """Wait before retry number `failures` (1, 2, ...): base, 2x base, 4x base ... up to cap."""
    return 0.0 if failures <= 0 else min(cap_s, base_s * 2 ** (failures - 1))


@dataclass(frozen=True)
class Outcome:
    id: str
    plan: Plan
    resumed: bool
    ran: tuple[Step, ...]  # steps run this time (skipped: already done before a restart)


class Remediator:
    def __init__(self, *, stack_file: str | Path, state_dir: str | Path, backend: StateBackend,
                 journal: Journal, alerter: Alerter, verifier: Verifier, fencer: Fencer = fence,
                 fence_timeout_s: float = DEFAULT_FENCE_TIMEOUT_S,
                 up_attempts: int = DEFAULT_UP_ATTEMPTS, backoff_s: float = DEFAULT_BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep, children: Children | None = None,
                 after_write: Callable[[Plan], None] | None = None,
                 guard: StepGuard = NO_GUARD) -> None:
        self.stack_file = Path(stack_file)
        # Orphans of an earlier (killed) watchdog: the fence and CLI children it recorded.
        self.children = children or Children(state_dir)
        # Called once the stack file holds a plan's change (`run --git-commit` commits it there).
        self.after_write = after_write
        self.state_dir = Path(state_dir)
        self.backend = backend
        self.journal = journal
        self.alerter = alerter
        self.verifier = verifier
        self.fencer = fencer
        self.fence_timeout_s = fence_timeout_s
        self.up_attempts = max(1, up_attempts)
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.guard = guard

    def execute(self, p: Plan, trigger: str, precheck: Callable[[], None] | None = None) -> Outcome:
        """Run a new plan from its first step. `precheck` runs under the lock before anything is
        journaled: it raises (RemediationRefused, ...) when the world no longer allows the plan."""
        if not p.steps:
            raise RemediationRefused(f"nothing to run: {p.reason}")
        with RemediationLock.for_stack(self.stack_file):
            pending = self.journal.pending()
            if pending is not None:
                raise RemediationRefused(
                    f"remediation {pending.id} ({pending.plan.reason}) is unfinished at step "
                    f"{pending.next_step}; it is resumed first (run the watchdog, or `failover` again)")
            if {Step.PRUNE_STATE, Step.UP} & set(p.steps):
                # Before anything happens: fencing a host and then finding no Pulumi CLI would
                # leave the cluster worse off than doing nothing.
                self.backend.check()
            if p.source_hash and file_hash(self.stack_file) != p.source_hash:
                # Another failover finished (or a person saved the file) since this plan was
                # made, e.g. while `failover` waited at its prompt: fence nothing, write nothing.
                raise StackFileMoved(f"{self.stack_file} changed since the plan was made; nothing "
                                     "was done: plan again from the file as it is")
            if precheck is not None:
                precheck()
            rid = self.journal.begin(p, trigger)
            log.info("remediation %s: %s", rid, p.reason)
            return self._run(rid, p, frozenset(), resumed=False)

    def resume(self) -> Outcome | None:
        """Carry on with the unfinished remediation, if there is one."""
        with RemediationLock.for_stack(self.stack_file):
            pending = self.journal.pending()
            if pending is None:
                return None
            self._end_orphan(pending.id)
            log.info("remediation %s: resuming at step %s (%s)", pending.id, pending.next_step,
                     pending.plan.reason)
            return self._run(pending.id, pending.plan, pending.done, resumed=True)

    def _end_orphan(self, rid: str) -> None:
        """Before a step is repeated: end the child (fence, `pulumi up`) a killed watchdog left
        running, so two never run side by side."""
        orphan = self.children.end_orphan()
        if orphan is not None:
            self.alerter.alert("orphan_ended", f"`{orphan.what}` (pid {orphan.pid}) was still running "
                               "from a watchdog that died; it was stopped before its step runs again",
                               reason=Reason.ORPHAN_ENDED, remediation=rid)

    def _run(self, rid: str, p: Plan, done: frozenset[Step], resumed: bool) -> Outcome:
        ran: list[Step] = []
        for step in p.steps:
            if step in done:
                continue
            self.guard.before_step(rid, p, step)
            self.journal.step(rid, step, STARTED)
            try:
                detail = self._do(rid, step, p)
            except NotLeader:
                raise  # not a failure of the step: another watchdog carries on from the record
            except StackFileMoved as err:
                # Never write over the file, never deploy a reverted one: close this remediation;
                # the loop plans again from the file as it is now.
                code = (Reason.STACK_FILE_CHANGED if step is Step.WRITE_CONFIG
                        else Reason.STACK_FILE_REVERTED)
                self.journal.step(rid, step, FAILED, error=str(err))
                self.journal.finish(rid, "superseded", error=str(err))
                self.guard.finished(rid, p, "superseded")  # no successor resumes it either
                self.alerter.alert("superseded", f"{err}; planning again from the stack file as it "
                                   "is", reason=code, remediation=rid)
                raise
            except VerifyFailed as err:
                self.journal.step(rid, step, FAILED, error=str(err))
                self.journal.finish(rid, "verify_failed", error=str(err))
                self.guard.finished(rid, p, "verify_failed")
                self.alerter.alert("verify_failed", str(err), reason=Reason.VERIFY_FAILED, remediation=rid)
                raise
            except WatchdogError as err:
                with contextlib.suppress(JournalError):  # a read-only state dir: alert anyway
                    self.journal.step(rid, step, FAILED, error=str(err))
                self.guard.after_step(rid, p, step, FAILED, {"error": str(err)})
                self.alerter.alert("remediation_failed",
                                   f"step {step.value} failed: {err}; the remediation stays open "
                                   "and is resumed at this step", reason=Reason.REMEDIATION_FAILED,
                                   remediation=rid)
                raise
            try:
                self.guard.after_step(rid, p, step, DONE, detail)
            finally:
                self.journal.step(rid, step, DONE, **detail)
            ran.append(step)
        self.journal.finish(rid, "ok")
        self.guard.finished(rid, p, "ok")
        self.alerter.alert("remediated", p.reason, reason=p.code, remediation=rid,
                           action=p.action.value)
        return Outcome(rid, p, resumed, tuple(ran))

    def _do(self, rid: str, step: Step, p: Plan) -> dict[str, Any]:
        if step is Step.FENCE:
            results = [self.fencer(p.topology.hosts[h], self.fence_timeout_s) for h in p.fence]
            return {"fenced": [r.host for r in results if not r.skipped],
                    "skipped": [r.host for r in results if r.skipped]}
        if step is Step.PRUNE_STATE:
            state = self.backend.export_state()
            result = prune_hosts(state.get("deployment") or {}, [p.topology.hosts[h] for h in p.prune])
            before = record_in_state(result.deployment)
            after = _record_after(before, p)
            if result.removed or after != before:
                # The fence is recorded in the stack's state before anything is deployed: the
                # program then refuses an older stack file that still uses the host.
                deployment = with_record_in_state(result.deployment, after)
                self.backend.import_state({"version": state.get("version"), "deployment": deployment})
            log.info("state: removed %d resources bound to %s", len(result.removed), ", ".join(p.prune))
            return {"removed": list(result.removed), "fenced_hosts": list(after.fenced_hosts)}
        if step is Step.WRITE_CONFIG:
            try:
                changed = write_topology(self.stack_file, p.topology, p.source_hash or None)
            except StackFileChanged as err:
                raise StackFileMoved(str(err)) from None
            except OSError as err:
                raise StackFileUnwritable(f"cannot write the stack file {self.stack_file}: "
                                          f"{err.strerror}") from None
            if changed and self.after_write is not None:
                self.after_write(p)
            return {"changed": changed}
        if step is Step.UP:
            if Step.WRITE_CONFIG in p.steps:
                self._check_holds(p)
            return self._up(rid, p)
        if step is Step.VERIFY:
            unhealthy = self.verifier(p.topology, p.verify, p.topology.watchdog.verify_timeout_s)
            if unhealthy:
                raise VerifyFailed(f"{', '.join(unhealthy)} not healthy within "
                                   f"{p.topology.watchdog.verify_timeout_s:g} s after the deploy")
            return {"healthy": list(p.verify)}
        raise ValueError(f"unknown step {step}")  # pragma: no cover

    def _check_holds(self, p: Plan) -> None:
        """Before `up`: the stack file still holds what this plan wrote (a `git checkout` of the
        old file after a crash would otherwise deploy nodes back onto the fenced host)."""
        try:
            current = load_topology(self.stack_file)
        except TopologyError as err:
            raise StackFileMoved(f"the stack file cannot be read before `up` ({err})") from None
        if topology_json(current) != topology_json(p.topology):
            raise StackFileMoved("the stack file no longer holds this remediation's change (reverted "
                                 "or edited after it was written); `up` was not run")

    def _up(self, rid: str, p: Plan) -> dict[str, Any]:
        urns: list[str] = []
        if p.replace:
            deployment = self.backend.export_state().get("deployment") or {}
            for node in p.replace:
                found = domain_urns(deployment, node)
                if not found:
                    raise StateError(f"no libvirt Domain for node {node} in the stack's state; "
                                     "cannot replace it in place (was it ever deployed?)")
                urns += found
        for attempt in range(1, self.up_attempts + 1):
            if attempt > 1:
                self.guard.before_step(rid, p, Step.UP)  # still the leader after the backoff?
            try:
                result = self.backend.up(replace=urns, message=f"mac-watchdog: {p.reason}"[:200],
                                         timeout_s=p.topology.watchdog.up_timeout_s)
                return {"result": result, "replaced": urns, "attempt": attempt}
            except (DeployFailed, StackLocked) as err:
                if attempt == self.up_attempts:
                    raise
                delay = backoff_delay(attempt, self.backoff_s)
                self.journal.step(rid, Step.UP, FAILED, error=str(err), attempt=attempt)
                # The attempt's hold ends here: a leader deposed during the backoff is refused at
                # the retry (before_step) instead of being stopped in the middle of a sleep.
                self.guard.after_step(rid, p, Step.UP, FAILED, {"error": str(err), "attempt": attempt})
                code = Reason.UP_TIMED_OUT if isinstance(err, DeployTimedOut) else Reason.UP_FAILED
                self.alerter.alert("up_failed", f"{err}; the written change is kept, retrying in "
                                   f"{delay:g} s", reason=code, remediation=rid)
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _record_after(record: StackRecord, p: Plan) -> StackRecord:
    """What the stack's record says once `p` ran: hosts it fences or retires are recorded; a
    reclaim drops the host it puts back (the only way out of the record)."""
    if p.action is Action.RECLAIM:
        for host in p.topology.spares:
            record = reclaimed(record, host)
        return record
    return fenced(record, [*p.fence, *p.topology.failed_hosts])

