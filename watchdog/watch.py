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
from dataclasses import replace

from components.stack_file import file_hash
from components.topology import Topology, TopologyError
from watchdog.context import Context
from watchdog.detect import Detector, Failures, Health, State, classify
from watchdog.errors import JournalError, LockUnavailable, WatchdogError
from watchdog.events import Event, EventKind
from watchdog.jsonlog import fields
from watchdog.plan import Action, Plan, plan
from watchdog.present import describe
from watchdog.reasons import Reason
from watchdog.remediate import Outcome, backoff_delay
from watchdog.schedule import Sweeper
from watchdog.target import Kind, ProbeResult, TargetKey, fenced_host_targets

log = logging.getLogger(__name__)

# The same condition (reason code, what it is about) is alerted again only after this long.
REALERT_S = 3600.0


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
        self._source_hash = file_hash(ctx.stack_file)
        self._alerted: dict[Hashable, float] = {}  # condition -> when it was last alerted
        self._io_errors = 0  # consecutive remediations that failed on our own I/O
        self._retry_at = 0.0  # no new remediation before this (after our own I/O failed)
        self._answering: set[str] = set()  # fenced hosts that answered at their last probe
        self._fenced_probe: asyncio.Task[list[ProbeResult]] | None = None
        self._refusing: Reason | None = None  # the code of the refusal in force, if any
        self.rounds = 0

    def rounds_for_once(self) -> int:
        s = self.topology.watchdog
        return s.fail_threshold + math.ceil(s.fail_after_s / s.interval_s) + 1

    async def run(self, once: bool = False, max_rounds: int | None = None) -> int:
        """Loop until cancelled (or, with `once`, for one detection window); the exit code."""
        s = self.topology.watchdog
        rounds = self.rounds_for_once() if once else max_rounds
        done = 0
        async with self.ctx.prober(s.probe_timeout_s) as prober:
            sweeper = Sweeper(prober, self.detector, s, on_change=self._log_change,
                              on_result=self._probed)
            try:
                if not self.dry_run:
                    await self._warm_up()
                if await self._my_turn():
                    self._maybe_resume()
                while rounds is None or done < rounds:
                    started = prober.clock()
                    await self.tick(sweeper)
                    done += 1
                    self._round_done()
                    if once and self.outcomes:
                        break
                    await sweeper.pause(started)
            finally:
                if self._fenced_probe is not None:
                    await asyncio.gather(self._fenced_probe, return_exceptions=True)
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

    def _probed(self, result: ProbeResult) -> None:
        self.ctx.events(Event(EventKind.PROBED, {
            "target": str(result.key), "ok": result.ok, "latency_s": result.latency_s,
            "error": result.error}))

    def _round_done(self) -> None:
        """Tell listeners a round finished: only a loop that is not hung gets here."""
        self.rounds += 1
        self.ctx.events(Event(EventKind.ROUND, {
            "round": self.rounds, "refusing": None if self._refusing is None else self._refusing.value,
            "remediating": self._task is not None, "spares": len(self.topology.spares),
            "failed_hosts": len(self.topology.failed_hosts)}))

    async def tick(self, sweeper: Sweeper) -> None:
        """One round of probes (suspects in fast lanes are left to them), then decide. Nothing
        that goes wrong here ends the loop: it is alerted, and the loop keeps watching the last
        good topology until the problem is fixed."""
        await sweeper.round(self.ctx.targets(self.topology))
        await self._probe_fenced_hosts(sweeper)
        try:
            await self._decide(sweeper.prober.clock())
        except TopologyError as err:
            self._alert_once("stack_file_invalid", f"the stack file cannot be used ({err}); watching "
                             "the last good topology, acting again once it is fixed",
                             Reason.STACK_FILE_INVALID)
        except (JournalError, LockUnavailable, OSError) as err:
            self._alert_once("watchdog_io_failed", f"{err}; watching on, acting again once it is "
                             "fixed", Reason.WATCHDOG_IO_FAILED)

    async def _decide(self, now: float) -> None:
        """`now`: the detector's clock (the prober's), for waiting on a fault still unfolding."""
        if self._task is not None:
            if not self._task.done():
                return
            await self._finish_task()
        if not await self._my_turn():  # asked every round: it follows the shared record too
            return
        if self.ctx.clock() < self._retry_at:
            return
        if self._maybe_resume():
            return
        failures = classify(self.topology, self.detector.health, now=now)
        for note in failures.notes:
            if note.code is Reason.DEPENDENT_FAILURE:  # a lasting one: a person should look
                self._alert_once("degraded", note.message, note.code, note.about,
                                 nodes=list(note.about))
                continue
            self._say(note.key, note.message,
                      fields("note", note=note.message, code=note.code.value, about=list(note.about)))
        if failures.empty:
            self._last_refusal = None
            self._refusing = None
            return
        healthy = {key.name for key, h in self.detector.health.items()
                   if key.kind is Kind.NODE and h.state is State.HEALTHY}
        p = plan(self.topology, failures, self.ctx.journal.history(), self.ctx.clock(),
                 healthy=healthy)
        await self._handle(replace(p, source_hash=self._source_hash), failures)

    async def _probe_fenced_hosts(self, sweeper: Sweeper) -> None:
        """Hosts in mac:failedHosts are probed too, apart from the detector and without holding
        up the round (a dead host answers nothing until the timeout): one that answers again
        (`fence: none`, or a fence that lied) may run its old VMs on the moved nodes' IPs."""
        task = self._fenced_probe
        if task is not None and not task.done():
            return
        self._fenced_probe = None
        items = fenced_host_targets(self.topology)
        if items:
            self._fenced_probe = asyncio.create_task(sweeper.prober.probe_all(items))
        if task is None:
            return
        for result in task.result():
            name = result.key.name
            if result.ok and name not in self._answering:
                self._alert_once(
                    "fenced_host_answers", f"host {name} is in mac:failedHosts but answers again: "
                    "its old VMs may be running with the IPs of the nodes that moved (split brain); "
                    f"power it off, then `mac-watchdog reclaim {name}` destroys them",
                    Reason.FENCED_HOST_ANSWERS, about=(name,), host=name)
            (self._answering.add if result.ok else self._answering.discard)(name)

    async def _my_turn(self) -> bool:
        """May this watchdog plan and act now? Alone: yes; beside others (etcd): while it leads."""
        turn = await asyncio.to_thread(self.ctx.coordinator.turn, self.topology,
                                       classify(self.topology, self.detector.health))
        if turn.topology is not None:
            # The shared record moved on and the stack file now holds it: watch what it
            # describes, and plan from this file (its hash is what the next write compares to).
            if turn.topology != self.topology:
                self._adopt(turn.topology)
            self._source_hash = await asyncio.to_thread(file_hash, self.ctx.stack_file)
        return turn.act

    def _say(self, key: Hashable, message: str, extra: dict[str, object] | None = None) -> bool:
        """Log `message` once per `key` (a reason code and what it is about); True if logged."""
        if key in self._said:
            return False
        self._said.add(key)
        log.warning("%s", message, extra=extra)
        return True

    def _decision(self, p: Plan, failures: Failures) -> None:
        """One line per decision the loop acts on (or, dry, would act on), with the whole plan."""
        self.ctx.events(Event(EventKind.DECIDED, {
            "action": p.action.value, "code": p.code.value, "reason": p.reason, "dry_run": self.dry_run}))
        log.info("decision: %s: %s", p.action.value, p.reason, extra=fields(
            "decision", action=p.action.value, code=p.code.value, reason=p.reason, dry_run=self.dry_run,
            failed_hosts=list(failures.hosts), failed_nodes=list(failures.nodes),
            isolated=failures.isolated, plan=p.to_json()))

    def _alert_once(self, event: str, message: str, reason: Reason, about: tuple[str, ...] = (),
                    **details: object) -> bool:
        """Alert a condition (its reason code and what it is about) once; again only after
        REALERT_S. True when alerted."""
        key = (reason, about)
        now = self.ctx.clock()
        last = self._alerted.get(key)
        if last is not None and now - last < REALERT_S:
            return False
        self._alerted[key] = now
        log.warning("%s", message, extra=fields(event, code=reason.value, about=list(about)))
        self._alert(event, message, reason, **details)
        return True

    def _alert(self, event: str, message: str, reason: Reason, **details: object) -> None:
        """Alert from a worker thread: a slow webhook must not stall the probes."""
        alerter = self.ctx.alerts(self.topology)
        task = asyncio.create_task(asyncio.to_thread(alerter.alert, event, message, reason=reason,
                                                     **details))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _handle(self, p: Plan, failures: Failures) -> None:
        self._refusing = p.code if p.action is Action.REFUSE else None
        if p.action is Action.REFUSE:
            # One alert per refusal code and failed set: "cooldown ... 4 s ago" and "5 s ago" are
            # one, and so is the same refusal after a flap (again only after REALERT_S).
            key = _verdict_key(p, failures)
            if key != self._last_refusal:
                self._last_refusal = key
                self._decision(p, failures)
                self._alert_once("refused", p.reason, p.code, (*failures.hosts, *failures.nodes))
            return
        if not p.steps:
            return
        if self.dry_run:
            key = _verdict_key(p, failures)
            if key not in self._said:
                self._decision(p, failures)
            self._say(key, f"dry-run: {p.reason}; would: " + "; ".join(describe(p)))
            return
        current_hash = await asyncio.to_thread(file_hash, self.ctx.stack_file)
        current = await asyncio.to_thread(self.ctx.topology)
        if current_hash != self._source_hash:
            self._source_hash = current_hash
            if current == self.topology:
                p = replace(p, source_hash=current_hash)  # reworded or commented: same cluster
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
            self._reload()
            return False
        if pending.last_failure_at is not None:
            due = pending.last_failure_at + backoff_delay(pending.failures, self.ctx.backoff_s)
            if self.ctx.clock() < due:
                return True
        remediator = self.ctx.remediator(self.topology)
        self._task = asyncio.create_task(asyncio.to_thread(remediator.resume))
        return True

    def _reload(self) -> None:
        """Adopt the stack file as it is now (TopologyError: keep the last good topology)."""
        source = file_hash(self.ctx.stack_file)
        self._adopt(self.ctx.topology())
        self._source_hash = source

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
            self._io_errors = 0
        except (WatchdogError, OSError) as err:
            log.error("remediation stopped: %s", err)
            self.errors.append(err if isinstance(err, WatchdogError) else WatchdogError(str(err)))
            outcome = None
            if isinstance(err, (JournalError, LockUnavailable, OSError)):
                # Our own state or stacks directory: alert, and do not retry at every round.
                self._io_errors += 1
                self._retry_at = self.ctx.clock() + backoff_delay(self._io_errors, self.ctx.backoff_s)
                self._alert_once("watchdog_io_failed", f"remediation stopped: {err}; watching on, "
                                 "retrying with backoff", Reason.WATCHDOG_IO_FAILED)
        # Whatever happened, the stack file is the truth now.
        await asyncio.to_thread(self._reload)
        if outcome is not None:
            self.outcomes.append(outcome)
            for node in (*outcome.plan.verify, *outcome.plan.replace):
                self.detector.reset(TargetKey.node(node))
