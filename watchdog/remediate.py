"""The remediation pipeline: fence -> prune state -> write stack file -> up -> verify.

The only code that changes anything. One remediation at a time (lock file); every step is
journaled before and after it runs, so a restart resumes at the next step and never repeats a
finished one. A failing `up` keeps the written change and is retried with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from components.stack_file import write_topology
from components.topology import Host, Topology
from watchdog.alert import Alerter
from watchdog.errors import (
    DeployFailed,
    RemediationRefused,
    StackLocked,
    StateError,
    VerifyFailed,
    WatchdogError,
)
from watchdog.fence import DEFAULT_FENCE_TIMEOUT_S, FenceResult, fence
from watchdog.journal import DONE, FAILED, STARTED, Journal
from watchdog.lock import RemediationLock
from watchdog.plan import Plan, Step
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

    def up(self, replace: Sequence[str] = (), message: str | None = None) -> str: ...


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
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.stack_file = Path(stack_file)
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

    def execute(self, p: Plan, trigger: str, precheck: Callable[[], None] | None = None) -> Outcome:
        """Run a new plan from its first step. `precheck` runs under the lock before anything is
        journaled: it raises (RemediationRefused, ...) when the world no longer allows the plan."""
        if not p.steps:
            raise RemediationRefused(f"nothing to run: {p.reason}")
        with RemediationLock(self.state_dir):
            pending = self.journal.pending()
            if pending is not None:
                raise RemediationRefused(
                    f"remediation {pending.id} ({pending.plan.reason}) is unfinished at step "
                    f"{pending.next_step}; it is resumed first (run the watchdog, or `failover` again)")
            if {Step.PRUNE_STATE, Step.UP} & set(p.steps):
                # Before anything happens: fencing a host and then finding no Pulumi CLI would
                # leave the cluster worse off than doing nothing.
                self.backend.check()
            if precheck is not None:
                precheck()
            rid = self.journal.begin(p, trigger)
            log.info("remediation %s: %s", rid, p.reason)
            return self._run(rid, p, frozenset(), resumed=False)

    def resume(self) -> Outcome | None:
        """Carry on with the unfinished remediation, if there is one."""
        with RemediationLock(self.state_dir):
            pending = self.journal.pending()
            if pending is None:
                return None
            log.info("remediation %s: resuming at step %s (%s)", pending.id, pending.next_step,
                     pending.plan.reason)
            return self._run(pending.id, pending.plan, pending.done, resumed=True)

    def _run(self, rid: str, p: Plan, done: frozenset[Step], resumed: bool) -> Outcome:
        ran: list[Step] = []
        for step in p.steps:
            if step in done:
                continue
            self.journal.step(rid, step, STARTED)
            try:
                detail = self._do(rid, step, p)
            except VerifyFailed as err:
                self.journal.step(rid, step, FAILED, error=str(err))
                self.journal.finish(rid, "verify_failed", error=str(err))
                self.alerter.alert("verify_failed", str(err), reason=Reason.VERIFY_FAILED, remediation=rid)
                raise
            except WatchdogError as err:
                self.journal.step(rid, step, FAILED, error=str(err))
                self.alerter.alert("remediation_failed",
                                   f"step {step.value} failed: {err}; the remediation stays open "
                                   "and is resumed at this step", reason=Reason.REMEDIATION_FAILED,
                                   remediation=rid)
                raise
            self.journal.step(rid, step, DONE, **detail)
            ran.append(step)
        self.journal.finish(rid, "ok")
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
            if result.removed:
                self.backend.import_state({"version": state.get("version"),
                                           "deployment": result.deployment})
            log.info("state: removed %d resources bound to %s", len(result.removed), ", ".join(p.prune))
            return {"removed": list(result.removed)}
        if step is Step.WRITE_CONFIG:
            changed = write_topology(self.stack_file, p.topology)
            return {"changed": changed}
        if step is Step.UP:
            return self._up(rid, p)
        if step is Step.VERIFY:
            unhealthy = self.verifier(p.topology, p.verify, p.topology.watchdog.verify_timeout_s)
            if unhealthy:
                raise VerifyFailed(f"{', '.join(unhealthy)} not healthy within "
                                   f"{p.topology.watchdog.verify_timeout_s:g} s after the deploy")
            return {"healthy": list(p.verify)}
        raise ValueError(f"unknown step {step}")  # pragma: no cover

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
            try:
                result = self.backend.up(replace=urns, message=f"mac-watchdog: {p.reason}"[:200])
                return {"result": result, "replaced": urns, "attempt": attempt}
            except (DeployFailed, StackLocked) as err:
                if attempt == self.up_attempts:
                    raise
                delay = backoff_delay(attempt, self.backoff_s)
                self.journal.step(rid, Step.UP, FAILED, error=str(err), attempt=attempt)
                self.alerter.alert("up_failed", f"{err}; the written change is kept, retrying in "
                                   f"{delay:g} s", reason=Reason.UP_FAILED, remediation=rid)
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
