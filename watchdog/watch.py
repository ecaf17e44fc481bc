"""The watchdog loop: probe every interval, detect, plan, and hand remediations to a worker thread.

Probing never stops while a remediation runs (it runs in a thread; the loop only awaits), so the
detector keeps an up-to-date view, and the verify step probes on its own. Suspect targets are
re-probed out of turn every suspect interval (watchdog.schedule); decisions are made at the end of
each round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.stack_file import load_topology, stack_path
from components.topology import SSH_PORT, Node, Topology
from watchdog.alert import Alerter
from watchdog.deploy import Deployer
from watchdog.detect import Detector, Failures, Health, classify
from watchdog.errors import WatchdogError
from watchdog.fence import DEFAULT_FENCE_TIMEOUT_S, fence
from watchdog.journal import Journal
from watchdog.jsonlog import fields
from watchdog.plan import Action, Plan, plan
from watchdog.probe import Prober
from watchdog.reasons import Reason
from watchdog.remediate import Fencer, Outcome, Remediator, StateBackend, backoff_delay, describe
from watchdog.schedule import Sweeper
from watchdog.target import ProbeResult, TargetKey, targets

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Where a stack lives and how to reach things; shared by every command."""

    project_dir: Path
    stack: str
    state_dir: Path
    pulumi_root: Path | None = None
    url_for: Callable[[Node], str] | None = None  # tests point probes at local servers
    ssh_port: int = SSH_PORT
    fencer: Fencer = fence
    fence_timeout_s: float = DEFAULT_FENCE_TIMEOUT_S
    backend: StateBackend | None = None
    up_attempts: int = 3
    backoff_s: float = 15.0
    max_failures: int = 8  # failed attempts before an open remediation is abandoned
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    alerter: Alerter | None = None
    journal: Journal = field(init=False)

    def __post_init__(self) -> None:
        self.journal = Journal(self.state_dir, self.clock)

    @property
    def stack_file(self) -> Path:
        return stack_path(self.project_dir, self.stack)

    def topology(self) -> Topology:
        return load_topology(self.stack_file)

    def alerts(self, topology: Topology) -> Alerter:
        if self.alerter is None:
            self.alerter = Alerter(topology.watchdog.webhook_url, self.stack)
        return self.alerter

    def deployer(self) -> StateBackend:
        """One backend per context: the CLI is found and the stack selected once, not per step."""
        if self.backend is None:
            self.backend = Deployer(self.project_dir, self.stack, pulumi_root=self.pulumi_root)
        return self.backend

    def remediator(self, topology: Topology) -> Remediator:
        return Remediator(stack_file=self.stack_file, state_dir=self.state_dir, backend=self.deployer(),
                          journal=self.journal, alerter=self.alerts(topology), verifier=self.verify,
                          fencer=self.fencer, fence_timeout_s=self.fence_timeout_s,
                          up_attempts=self.up_attempts, backoff_s=self.backoff_s, sleep=self.sleep)

    def verify(self, topology: Topology, nodes: Sequence[str], timeout_s: float) -> list[str]:
        """Probe `nodes` until each answered healthy once; the ones that never did."""
        return asyncio.run(self._verify(topology, nodes, timeout_s))

    async def _verify(self, topology: Topology, nodes: Sequence[str], timeout_s: float) -> list[str]:
        wanted = {TargetKey.node(n) for n in nodes}
        items = [t for t in targets(topology, self.url_for, self.ssh_port) if t.key in wanted]
        settings = topology.watchdog
        deadline = time.monotonic() + timeout_s
        async with Prober(settings.probe_timeout_s) as prober:
            while items:
                results = await prober.probe_all(items)
                healthy = {r.key for r in results if r.ok}
                items = [t for t in items if t.key not in healthy]
                if not items or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(settings.interval_s, max(0.0, deadline - time.monotonic())))
        return sorted(t.name for t in items)

    async def probe_all(self, topology: Topology) -> list[ProbeResult]:
        async with Prober(topology.watchdog.probe_timeout_s) as prober:
            return await prober.probe_all(targets(topology, self.url_for, self.ssh_port))


VerdictKey = tuple[Reason, tuple[str, ...], tuple[str, ...]]


def _verdict_key(p: Plan, failures: Failures) -> VerdictKey:
    """What makes two verdicts the same one: the code and the failed set, never the wording."""
    return (p.code, failures.hosts, failures.nodes)


class Watchdog:
    """The `run` loop for one stack."""

    def __init__(self, ctx: Context, dry_run: bool = False) -> None:
        self.ctx = ctx
        self.dry_run = dry_run
        self.topology = ctx.topology()
        self.detector = Detector(self.topology.watchdog)
        self._task: asyncio.Task[Outcome | None] | None = None
        self._last_refusal: VerdictKey | None = None
        self._said: set[Hashable] = set()
        self.outcomes: list[Outcome] = []
        self.errors: list[WatchdogError] = []
        self._background: set[asyncio.Task[bool]] = set()
        # For the bench: called when a plan that changes something is handed to the worker.
        self.on_remediation: Callable[[Plan], None] = lambda p: None

    def rounds_for_once(self) -> int:
        s = self.topology.watchdog
        return s.fail_threshold + math.ceil(s.fail_after_s / s.interval_s) + 1

    async def run(self, once: bool = False, max_rounds: int | None = None) -> int:
        """Loop until cancelled (or, with `once`, for one detection window); the exit code."""
        s = self.topology.watchdog
        rounds = self.rounds_for_once() if once else max_rounds
        done = 0
        async with Prober(s.probe_timeout_s) as prober:
            sweeper = Sweeper(prober, self.detector, s, on_change=self._log_change)
            try:
                if not self.dry_run:
                    await self._warm_up()
                self._maybe_resume()
                while rounds is None or done < rounds:
                    started = prober.clock()
                    await self.tick(sweeper)
                    done += 1
                    if once and self.outcomes:
                        break
                    await sweeper.pause(started)
            finally:
                await sweeper.close()
            if self._task is not None:
                await self._finish_task()
            if self._background:
                await asyncio.gather(*self._background)
        unhealthy = [k for k, h in self.detector.health.items() if h.last_ok is False]
        return 1 if unhealthy or self.errors else 0

    async def _warm_up(self) -> None:
        """Find the CLI and select the stack now, so a remediation starts `up` without that delay
        and a missing CLI is reported at start, not in the middle of a failover."""
        try:
            await asyncio.to_thread(self.ctx.deployer().check)
        except WatchdogError as err:
            log.error("%s (remediations will fail until this is fixed)", err)

    @staticmethod
    def _log_change(key: TargetKey, h: Health) -> None:
        log.info("%s is %s%s", key, h.state.value, f" ({h.last_error})" if h.last_error else "",
                 extra=fields("health", target=str(key), state=h.state.value, error=h.last_error))

    async def tick(self, sweeper: Sweeper) -> None:
        """One round of probes (suspects in fast lanes are left to them), then decide."""
        await sweeper.round(targets(self.topology, self.ctx.url_for, self.ctx.ssh_port))
        if self._task is not None:
            if not self._task.done():
                return
            await self._finish_task()
        if self._maybe_resume():
            return
        failures = classify(self.topology, self.detector.health)
        for note in failures.notes:
            self._say(note.key, note.message,
                      fields("note", note=note.message, code=note.code.value, about=list(note.about)))
        if failures.empty:
            self._last_refusal = None
            return
        p = plan(self.topology, failures, self.ctx.journal.history(), self.ctx.clock())
        await self._handle(p, failures)

    def _say(self, key: Hashable, message: str, extra: dict[str, object] | None = None) -> bool:
        """Log `message` once per `key` (a reason code and what it is about); True if logged."""
        if key in self._said:
            return False
        self._said.add(key)
        log.warning("%s", message, extra=extra)
        return True

    def _decision(self, p: Plan, failures: Failures) -> None:
        """One line per decision the loop acts on (or, dry, would act on), with the whole plan."""
        log.info("decision: %s: %s", p.action.value, p.reason, extra=fields(
            "decision", action=p.action.value, code=p.code.value, reason=p.reason, dry_run=self.dry_run,
            failed_hosts=list(failures.hosts), failed_nodes=list(failures.nodes),
            isolated=failures.isolated, plan=p.to_json()))

    def _alert(self, event: str, message: str, reason: Reason, **details: object) -> None:
        """Alert from a worker thread: a slow webhook must not stall the probes."""
        alerter = self.ctx.alerts(self.topology)
        task = asyncio.create_task(asyncio.to_thread(alerter.alert, event, message, reason=reason,
                                                     **details))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _handle(self, p: Plan, failures: Failures) -> None:
        if p.action is Action.REFUSE:
            # One alert per refusal code and failed set: "cooldown ... 4 s ago" and "5 s ago" are one.
            key = _verdict_key(p, failures)
            if key != self._last_refusal:
                self._last_refusal = key
                self._decision(p, failures)
                self._alert("refused", p.reason, reason=p.code)
            return
        if not p.steps:
            return
        if self.dry_run:
            key = _verdict_key(p, failures)
            if key not in self._said:
                self._decision(p, failures)
            self._say(key, f"dry-run: {p.reason}; would: " + "; ".join(describe(p)))
            return
        current = await asyncio.to_thread(self.ctx.topology)
        if current != self.topology:
            # Someone changed the stack file (a manual failover, say): the plan was made for a
            # cluster that no longer exists. Watch the new one and decide again.
            log.warning("the stack file changed under the watchdog; re-planning on the new topology")
            self._adopt(current)
            return
        self._decision(p, failures)
        self.on_remediation(p)
        remediator = self.ctx.remediator(self.topology)
        self._task = asyncio.create_task(asyncio.to_thread(remediator.execute, p, "detected"))

    def _maybe_resume(self) -> bool:
        """Start resuming an unfinished remediation when its backoff has passed; True if one is open."""
        if self.dry_run or self._task is not None:
            return self._task is not None
        pending = self.ctx.journal.pending()
        if pending is None:
            return False
        if pending.failures >= self.ctx.max_failures:
            # A remediation that keeps failing must not block every other one forever.
            message = (f"remediation {pending.id} ({pending.plan.reason}) abandoned after "
                       f"{pending.failures} failed attempts at step {pending.next_step}; "
                       "planning afresh from the stack file")
            self.ctx.journal.finish(pending.id, "abandoned", failures=pending.failures)
            self._alert("abandoned", message, Reason.ABANDONED, remediation=pending.id)
            self._adopt(self.ctx.topology())
            return False
        if pending.last_failure_at is not None:
            due = pending.last_failure_at + backoff_delay(pending.failures, self.ctx.backoff_s)
            if self.ctx.clock() < due:
                return True
        remediator = self.ctx.remediator(self.topology)
        self._task = asyncio.create_task(asyncio.to_thread(remediator.resume))
        return True

    def _adopt(self, topology: Topology) -> None:
        """Watch `topology` from now on; a node that moved is a new VM, judged afresh."""
        old, self.topology = self.topology, topology
        self.detector.forget_except(t.key for t in targets(topology, self.ctx.url_for, self.ctx.ssh_port))
        self.detector.forget(TargetKey.node(name) for name, node in topology.nodes.items()
                             if name not in old.nodes or old.nodes[name].host != node.host)

    async def _finish_task(self) -> None:
        task, self._task = self._task, None
        assert task is not None
        try:
            outcome = await task
        except WatchdogError as err:
            log.error("remediation stopped: %s", err)
            self.errors.append(err)
            outcome = None
        # Whatever happened, the stack file is the truth now.
        self._adopt(await asyncio.to_thread(self.ctx.topology))
        if outcome is not None:
            self.outcomes.append(outcome)
            for node in (*outcome.plan.verify, *outcome.plan.replace):
                self.detector.reset(TargetKey.node(node))
