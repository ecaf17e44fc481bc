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
from collections.abc import Hashable

from components.topology import Topology
from watchdog.context import Context
from watchdog.detect import Detector, Failures, Health, classify
from watchdog.errors import WatchdogError
from watchdog.events import Event, EventKind
from watchdog.jsonlog import fields
from watchdog.plan import Action, Plan, plan
from watchdog.present import describe
from watchdog.reasons import Reason
from watchdog.remediate import Outcome, backoff_delay
from watchdog.schedule import Sweeper
from watchdog.target import TargetKey

log = logging.getLogger(__name__)


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

    def rounds_for_once(self) -> int:
        s = self.topology.watchdog
        return s.fail_threshold + math.ceil(s.fail_after_s / s.interval_s) + 1

    async def run(self, once: bool = False, max_rounds: int | None = None) -> int:
        """Loop until cancelled (or, with `once`, for one detection window); the exit code."""
        s = self.topology.watchdog
        rounds = self.rounds_for_once() if once else max_rounds
        done = 0
        async with self.ctx.prober(s.probe_timeout_s) as prober:
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

    def _log_change(self, key: TargetKey, h: Health) -> None:
        """A target changed state, or the dependency it reports degraded changed."""
        data = {"target": str(key), "state": h.state.value, "error": h.last_error,
                "degraded": h.degraded}
        detail = h.last_error or (f"works; degraded: {h.degraded}" if h.degraded else None)
        log.info("%s is %s%s", key, h.state.value, f" ({detail})" if detail else "",
                 extra=fields("health", **data))
        self.ctx.events(Event(EventKind.HEALTH, data))

    async def tick(self, sweeper: Sweeper) -> None:
        """One round of probes (suspects in fast lanes are left to them), then decide."""
        await sweeper.round(self.ctx.targets(self.topology))
        if self._task is not None:
            if not self._task.done():
                return
            await self._finish_task()
        if self._maybe_resume():
            return
        failures = classify(self.topology, self.detector.health, now=sweeper.prober.clock())
        for note in failures.notes:
            said = self._say(note.key, note.message, fields(
                "note", note=note.message, code=note.code.value, about=list(note.about)))
            if said and note.code is Reason.DEPENDENT_FAILURE:
                self._alert("degraded", note.message, reason=note.code, nodes=list(note.about))
        # A degradation that ended may be alerted again when it comes back.
        lasting = {n.key for n in failures.notes if n.code is Reason.DEPENDENT_FAILURE}
        self._said -= {k for k in self._said if isinstance(k, tuple) and k[:1] ==
                       (Reason.DEPENDENT_FAILURE,) and k not in lasting}
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
        self.detector.forget_except(t.key for t in self.ctx.targets(topology))
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
